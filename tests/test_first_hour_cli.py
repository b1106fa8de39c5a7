"""Issue 23, the command line as a newcomer meets it: help that reads well (10), output that
survives a pipe and a narrow terminal (11), commands that stop before they start leaving
nothing behind, Ctrl-C (8), and the empty result and the progress total (13)."""

from __future__ import annotations

import re
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

from hanclip_cli import common
from hanclip_eval.tiny_models import write_photo_folder

COMMANDS = [
    [],
    ["index"],
    ["search"],
    ["train"],
    ["bench"],
    ["info"],
    ["repair"],
    ["forget"],
    ["duplicates"],
    ["export"],
    ["serve"],
    ["models"],
    ["models", "install"],
]
# A folder name long enough that every photo path is wider than 80 columns.
LONG = "a-rather-long-folder-name-for-the-photos-of-our-summer-holiday-by-the-sea"


@pytest.fixture
def narrow(monkeypatch):
    """The consoles as a pipe sees them: 80 columns."""
    for console in (common.console, common.err_console):
        monkeypatch.setattr(console, "width", 80)


@pytest.fixture
def long_photos(tmp_path) -> Path:
    folder = tmp_path / LONG / "사진"
    write_photo_folder(folder, count=8)
    return folder


def _whole(path: str, text: str) -> bool:
    """`path` stands on one line of `text`."""
    return any(path in line for line in text.splitlines())


# -- 10: help that reads well -----------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "hanclip")
def test_help_shows_placeholders_not_python_types(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.stderr
    help_text = result.stdout
    assert not re.search(r"<(bool|str|path|int|float|list\[)", help_text), help_text
    usage = next(line for line in help_text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage


def test_arguments_read_like_gnu_usage(cli):
    index = cli("index", "--help").stdout
    assert re.search(r"Usage: hanclip index \[OPTIONS\] PATHS\.\.\.", index), index
    assert re.search(r"PATHS\.\.\.\s+Folders", index), index
    search = cli("search", "--help").stdout
    assert "[QUERY]..." in search, search
    install = cli("models", "install", "--help").stdout
    assert re.search(r"\[OPTIONS\] DIR\b", install), install


def test_help_paragraphs_wrap_as_paragraphs(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    index = cli("index", "--help").stdout
    assert _whole("renamed or moved ones are found by their content hash, so nothing", index)
    commands = cli("--help").stdout
    assert _whole("whether its database and search index are healthy.", commands), commands


def test_version_and_short_help(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hanclip {version('hanclip')}"
    assert cli("-h").stdout == cli("--help").stdout
    assert cli("index", "-h").stdout == cli("index", "--help").stdout


def test_demo_help_never_breaks_a_path(monkeypatch, capsys):
    from hanclip_eval import demo

    monkeypatch.setenv("COLUMNS", "60")
    with pytest.raises(SystemExit) as done:
        demo.main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "usage: hanclip-demo [-h] DIR" in out
    assert "/tmp/hanclip-demo/photos" in out and "/tmp/hanclip-\n" not in out


def test_shell_completion_is_offered(cli):
    assert "--install-completion" in cli("--help").stdout


# -- 11: piped and narrow output --------------------------------------------------------


def test_search_never_splits_a_path_at_80_columns(cli, tiny, long_photos, library, narrow):
    common_args = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", long_photos, *common_args).exit_code == 0
    result = cli("search", "바다", *common_args, "-n", "8")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    # The table does not fit: its headers, then one record a line, each with its whole path.
    assert lines[0].split() == ["#", "score", "path", "taken"], result.stdout
    assert len(lines) == 1 + 8, result.stdout
    for path in sorted(long_photos.rglob("*.*")):
        assert _whole(str(path), result.stdout), (path, result.stdout)


def test_search_table_when_it_fits(cli, tiny, photos, library, monkeypatch):
    common_args = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common_args).exit_code == 0
    monkeypatch.setattr(common.console, "width", 300)
    result = cli("search", "바다", *common_args, "-n", "3")
    assert result.stdout.split()[:3] == ["#", "score", "path"], result.stdout


def test_index_info_and_duplicates_never_split_a_path(
    cli, tiny, long_photos, library, tmp_path, narrow
):
    shutil.copy(long_photos / "바다_노을.jpg", long_photos / "바다_노을_copy.jpg")
    (long_photos / "broken.jpg").write_bytes(b"not a photo at all")
    deep_library = tmp_path / LONG / "library"
    common_args = ["--library", deep_library, "--model", tiny.plain_bundle]
    index = cli("index", long_photos, *common_args)
    assert index.exit_code == 0, index.stderr
    assert _whole(f"could not read {long_photos / 'broken.jpg'}", index.stderr), index.stderr
    assert _whole(f"{deep_library}: 10 scanned", index.stdout), index.stdout

    info = cli("info", "--library", deep_library, "--errors")
    assert _whole(f"library      {deep_library}", info.stdout), info.stdout
    assert _whole(f"folders      {long_photos}", info.stdout), info.stdout
    assert _whole(f"  {long_photos / 'broken.jpg'}: ", info.stdout), info.stdout

    duplicates = cli("duplicates", *common_args)
    assert duplicates.exit_code == 0, duplicates.stderr
    for name in ("바다_노을.jpg", "바다_노을_copy.jpg"):
        assert _whole(f"  {long_photos / name}  ", duplicates.stdout), duplicates.stdout


def test_models_fits_80_columns(cli, tiny, library, narrow):
    assert cli("models", "install", tiny.heads_bundle, "--library", library).exit_code == 0
    result = cli("models", "--library", library)
    assert result.exit_code == 0, result.stderr
    # Only a line that holds a path may be wider: it is never split.
    lines = [line for line in result.stdout.splitlines() if str(library) not in line]
    assert all(len(line) <= 80 for line in lines), result.stdout
    for name in ("mclip", "tiny-heads", "clip-ViT-B-32-multilingual-v1"):
        assert _whole(name, result.stdout), result.stdout


# -- 8: stopping before starting, Ctrl-C ------------------------------------------------


def test_index_of_a_missing_folder_creates_no_library(cli, tiny, tmp_path):
    new = tmp_path / "NEW"
    result = cli("index", tmp_path / "nonexistent", "--library", new, "--model", tiny.plain_bundle)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no such file or folder"), repr(result.stderr)
    assert not new.exists()


def test_index_of_a_file_that_is_not_a_photo(cli, tiny, photos, tmp_path):
    text = tmp_path / "file.txt"
    text.write_text("hello")
    alone = tmp_path / "alone"
    result = cli("index", text, "--library", alone, "--model", tiny.plain_bundle)
    assert result.exit_code == 2
    assert "is not a photo" in result.stderr and "error:" in result.stderr, result.stderr
    assert not alone.exists()

    both = cli("index", text, photos, "--library", tmp_path / "lib", "--model", tiny.plain_bundle)
    assert both.exit_code == 0, both.stderr
    assert f"{text} is not a photo" in both.stderr
    assert "8 added" in both.stdout


def test_ctrl_c_stops_serve_cleanly(cli, monkeypatch):
    from hanclip_cli.serve import server

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "serve", interrupted)
    result = cli("serve")
    assert result.exit_code == 0
    assert "error" not in result.stderr and "interrupted" not in result.stderr


def test_ctrl_c_during_index_says_the_work_is_kept(cli, tiny, photos, library, monkeypatch):
    from hanclip_library import indexer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(indexer, "index_library", interrupted)
    result = cli("index", photos, "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 130
    assert "kept" in result.stderr and "same command" in result.stderr, result.stderr


def test_ctrl_c_during_train_says_the_work_is_kept(cli, tmp_path, monkeypatch):
    from hanclip_cli.commands import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_train", interrupted)
    result = cli("train", "--out", tmp_path / "bundle")
    assert result.exit_code == 130
    assert "saved" in result.stderr and "same command" in result.stderr, result.stderr


# -- 13: the empty result, the progress total -------------------------------------------


def test_no_match_prints_no_empty_table(cli, tiny, photos, library):
    common_args = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common_args).exit_code == 0
    result = cli("search", "바다", *common_args, "--min-score", "2")
    assert result.exit_code == 0
    assert result.stdout == "", result.stdout
    assert "no photo matched" in result.stderr


def test_progress_ends_on_the_real_count(cli, tiny, photos, library):
    result = cli("index", photos, "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 0, result.stderr
    done = [line for line in result.stderr.splitlines() if line.startswith("done")]
    assert done and "8/8" in done[-1], result.stderr
