"""The installed `hanclip` console script, run as a newcomer would (README's demo commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _script(name: str = "hanclip") -> str:
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.fail(f"the {name} console script is not installed next to this Python")
    return str(script)


def _hanclip() -> str:
    return _script("hanclip")


def _run(*args: str | os.PathLike, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_readme_demo_commands(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HANCLIP_HOME": str(tmp_path / "home")}
    demo = tmp_path / "demo"
    built = _run(_script("hanclip-demo"), demo, env=env)
    assert built.returncode == 0, built.stderr
    bundle, photos, library = demo / "bundle", demo / "photos", demo / "library"
    common = ["--model", bundle, "--library", library]

    index = _run(_hanclip(), "index", photos, *common, "--json", env=env)
    assert index.returncode == 0, index.stderr
    assert json.loads(index.stdout)["added"] == 12

    search = _run(_hanclip(), "search", "바다 위 노을", *common, "-n", "5", "--json", env=env)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert len(hits) == 5 and all(Path(h["path"]).parent.is_relative_to(photos) for h in hits)

    table = _run(_hanclip(), "search", "고양이", *common, env=env)
    assert table.returncode == 0 and "score" in table.stdout

    empty = _run(_hanclip(), "search", "  ", *common, env=env)
    assert empty.returncode == 2
    assert empty.stderr.strip().count("\n") == 0 and "Traceback" not in empty.stderr


def test_help_has_korean_examples():
    for command in ("index", "search", "train"):
        result = subprocess.run(
            [_hanclip(), command, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0
        assert any("\uac00" <= ch <= "\ud7a3" for ch in result.stdout), command


@pytest.mark.parametrize(
    "args",
    [["search", "--bogus"], ["search", "바다", "-n", "0"], ["index"], ["train", "--epochs", "x"]],
)
def test_usage_errors_are_one_line(args):
    result = subprocess.run([_hanclip(), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_text_search_runs_without_torch(tiny, tmp_path):
    """After `index` (which exports the text encoder), a text search through the console
    entry point imports no torch, and none of what the fast path skips: Typer (and its
    pydantic), PIL, sqlite-utils."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    photos, library = tmp_path / "photos", tmp_path / "library"
    from hanclip_eval.tiny_models import write_photo_folder

    write_photo_folder(photos, count=6)
    common = ["--library", str(library), "--model", str(tiny.heads_bundle)]
    assert _run(_hanclip(), "index", photos, *common, env=env).returncode == 0
    probe = (
        "import sys\n"
        "from hanclip_cli.entry import main\n"
        f"sys.argv = ['hanclip', 'search', '바다 위 노을', '--json', *{common!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'open_clip',"
        " 'typer', 'pydantic', 'PIL', 'sqlite_utils') if m in sys.modules]\n"
        "print('HEAVY', heavy, code, file=sys.stderr)\n"
    )
    result = _run(sys.executable, "-c", probe, env=env)
    assert "HEAVY [] 0" in result.stderr, result.stderr
    assert len(json.loads(result.stdout)) == 6


def _index_probe(photos: Path, common: list[str]) -> str:
    """Python that runs `hanclip index` in-process and reports whether torch and ONNX Runtime
    (what runs the encoders when they are exported) got imported."""
    return (
        "import sys\n"
        "from hanclip_cli.entry import main\n"
        f"sys.argv = ['hanclip', 'index', {str(photos)!r}, '--json', *{common!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('TORCH', 'torch' in sys.modules, code, file=sys.stderr)\n"
        "print('ENCODERS', 'onnxruntime' in sys.modules or 'torch' in sys.modules, code,"
        " file=sys.stderr)\n"
    )


def test_reindex_with_nothing_new_loads_no_model(tiny, tmp_path):
    """A re-index with the bundle the library was last indexed with skips loading the
    encoders until a photo needs them; a new photo is still embedded."""
    from hanclip_eval.tiny_models import write_photo_folder

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    photos, library = tmp_path / "photos", tmp_path / "library"
    write_photo_folder(photos, count=4)
    common = ["--library", str(library), "--model", str(tiny.heads_bundle)]
    first = _run(sys.executable, "-c", _index_probe(photos, common), env=env)
    assert "ENCODERS True 0" in first.stderr, first.stderr  # first time: both encoders checked
    again = _run(sys.executable, "-c", _index_probe(photos, common), env=env)
    assert "TORCH False 0" in again.stderr and "ENCODERS False 0" in again.stderr, again.stderr
    assert json.loads(again.stdout)["unchanged"] == 4
    (new,) = write_photo_folder(tmp_path / "more", count=1, seed=7)  # content not seen yet
    new.rename(photos / f"new{new.suffix}")
    added = _run(sys.executable, "-c", _index_probe(photos, common), env=env)
    # Embedded through the image tower's ONNX export (made by the first run): no torch.
    assert "ENCODERS True 0" in added.stderr and "TORCH False 0" in added.stderr, added.stderr
    assert json.loads(added.stdout)["added"] == 1
    # Another bundle (other heads bytes) is checked in full again before anything is written:
    # its exports found (made, where the cache has none yet) and their widths read from their
    # configs, no session opened (tests/test_bundle_footprint.py: a broken one stops the run).
    other = ["--library", str(library), "--model", str(tiny.plain_bundle)]
    switched = _run(sys.executable, "-c", _index_probe(photos, other), env=env)
    assert switched.returncode == 0 and " 0\n" in switched.stderr, switched.stderr
    assert json.loads(switched.stdout)["unchanged"] == 5  # the same image model: kept


@pytest.mark.parametrize(
    ("command", "given", "expected"),
    [("serve", None, "1"), ("index", "3", "3"), ("train", None, None), ("bench", None, None)],
)
def test_blas_runs_on_one_thread_unless_the_command_trains_or_the_user_says(
    command, given, expected
):
    """The console script sets numpy's OpenBLAS to one thread before numpy loads (small
    products spin its other threads for nothing); a user's own setting is kept, and the
    commands whose large products may share that OpenBLAS (torch's) keep its threads."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    probe = (
        "import os, sys; from hanclip_cli import entry; "
        f"entry.one_blas_thread([{command!r}, '--help']); "
        "print('numpy' in sys.modules, os.environ.get('OPENBLAS_NUM_THREADS'))"
    )
    done = _run(sys.executable, "-c", probe, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", str(expected)]
