"""Faults injected on purpose: bad files, kills mid-run, a second writer, bad input.

What a photo library must survive: every readable photo indexed, every unreadable one
recorded with its reason, no corruption after SIGKILL at any moment, and no change on disk
when the input is wrong.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.library import Library
from hanclip_library.store import NewPhoto
from hanclip_library.vector_index import POINTER_NAME, load_index

REPO = Path(__file__).resolve().parent.parent
DROP_DAC = [
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def _hanclip_command(*args: object, unprivileged: bool = False) -> list[str]:
    command = [sys.executable, "-m", "hanclip_cli", *(str(a) for a in args)]
    if unprivileged and os.geteuid() == 0:
        # Root ignores file permissions; without these capabilities it obeys them.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root needs setpriv (util-linux) to test permissions")
        command = [setpriv, *DROP_DAC, *command]
    return command


def _run(*args: object, unprivileged: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        _hanclip_command(*args, unprivileged=unprivileged),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        errors="surrogateescape",
    )


def _content(path: Path) -> str:
    if path.suffix != ".db":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    # A database's bytes move when its write-ahead log is checkpointed; its rows do not.
    connection = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file below `directory` with its content (SQLite's -wal/-shm come and go)."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): _content(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _one_line_error(result, code: int = 2) -> str:
    seen = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert seen == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- bad files ---------------------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
    path.write_bytes(
        data + struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def _write_zoo(folder: Path) -> tuple[set[str], dict[str, str]]:
    """Good photos in odd shapes, and bad files with the reason each must be reported with."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = {}

    def keep(name: str, image: Image.Image, **save) -> None:
        image.save(folder / name, **save)
        good[name] = folder / name

    keep("cmyk.jpg", Image.new("CMYK", (40, 30), (10, 200, 30, 0)))
    keep("sixteen-bit.png", Image.fromarray(np.full((30, 40), 50000, dtype=np.uint16)))
    palette = Image.new("P", (40, 30), 3)
    palette.info["transparency"] = 3
    keep("palette-alpha.png", palette)
    frames = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    good["animated.gif"] = folder / "animated.gif"
    exif = Image.Exif()
    exif[274] = 6
    keep("rotated.jpg", Image.new("RGB", (60, 30), (90, 90, 200)), exif=exif)
    keep("fifty-megapixel.jpg", Image.new("RGB", (8192, 6144), (120, 60, 30)), quality=30)
    nfc = unicodedata.normalize("NFC", "바다.jpg")
    keep(nfc, Image.new("RGB", (40, 30), (0, 100, 200)))
    keep(unicodedata.normalize("NFD", "노을.jpg"), Image.new("RGB", (40, 30), (250, 120, 0)))
    keep("with space.png", Image.new("RGB", (40, 30), (1, 2, 3)))
    keep("new\nline.png", Image.new("RGB", (40, 30), (3, 2, 1)))
    keep("quote'; DROP TABLE photos; --.png", Image.new("RGB", (40, 30), (7, 7, 7)))

    bad = {}
    (folder / "zero.jpg").write_bytes(b"")
    bad["zero.jpg"] = "empty file"
    whole = folder / "whole.tmp"
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(whole, "JPEG")
    (folder / "truncated.jpg").write_bytes(whole.read_bytes()[:2000])
    whole.unlink()
    bad["truncated.jpg"] = "truncated"
    (folder / "random.png").write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    bad["random.png"] = "not a recognised image format"
    (folder / "notes.jpg").write_text("not a photo at all\n")
    bad["notes.jpg"] = "not a recognised image format"
    _png_header_only(folder / "bomb.png", 20000, 20000)
    bad["bomb.png"] = "too large"
    unreadable = folder / "private.jpg"
    Image.new("RGB", (40, 30)).save(unreadable)
    unreadable.chmod(0)
    bad["private.jpg"] = "Permission denied"
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    bad["dangling.jpg"] = "broken symbolic link"
    (folder / "loop-a.jpg").symlink_to(folder / "loop-b.jpg")
    (folder / "loop-b.jpg").symlink_to(folder / "loop-a.jpg")
    bad["loop-a.jpg"] = bad["loop-b.jpg"] = "symbolic links"
    (folder / "sub").mkdir()
    (folder / "sub" / "back-up").symlink_to(folder)  # a folder loop: never followed
    raw_name = os.fsencode(str(folder)) + b"/\xff\xfe.jpg"
    Image.new("RGB", (40, 30)).save(open(raw_name, "wb"), "JPEG")  # noqa: SIM115
    bad[os.fsdecode(b"\xff\xfe.jpg")] = "not valid UTF-8"
    return set(good), bad


def test_every_readable_photo_is_indexed_and_every_other_file_explained(tiny, tmp_path):
    folder, library = tmp_path / "zoo", tmp_path / "library"
    good, bad = _write_zoo(folder)
    common = ["--library", library, "--model", tiny.plain_bundle]

    result = _run("index", folder, *common, "--json", unprivileged=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == len(good)
    assert report["failed"] == len(bad)
    assert report["scanned"] == len(good) + len(bad)
    reasons = {Path(f["path"]).name: f["error"] for f in report["failures"]}
    assert set(reasons) == set(bad)
    for name, expected in bad.items():
        assert expected in reasons[name], (name, reasons[name])
    assert f"{len(bad)} file(s) could not be indexed" in result.stderr

    info = _run("info", "--library", library, "--errors", "--json")
    recorded = {Path(e["path"]).name: e["error"] for e in json.loads(info.stdout)["errors"]}
    # Everything but the undecodable name (SQLite stores text) is queryable later.
    assert set(recorded) == set(bad) - {os.fsdecode(b"\xff\xfe.jpg")}

    hits = json.loads(_run("search", "바다", *common, "-n", "100", "--json").stdout)
    assert {Path(h["path"]).name for h in hits} == good
    by_name = {Path(h["path"]).name: h for h in hits}
    assert (by_name["rotated.jpg"]["width"], by_name["rotated.jpg"]["height"]) == (30, 60)
    assert (by_name["fifty-megapixel.jpg"]["width"], by_name["fifty-megapixel.jpg"]["height"]) == (
        8192,
        6144,
    )

    again = json.loads(_run("index", folder, *common, "--json", unprivileged=True).stdout)
    assert again["unchanged"] == len(good) and again["failed"] == len(bad)


def test_all_files_unreadable_exits_non_zero(cli, tiny, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"junk")
    result = cli("index", folder, "--library", tmp_path / "lib", "--model", tiny.plain_bundle)
    assert result.exit_code == 1
    assert "1 file(s) could not be indexed" in result.stderr


def test_unlistable_folder_keeps_its_photos(tiny, tmp_path):
    folder, library = tmp_path / "photos", tmp_path / "library"
    write_photo_folder(folder, count=6)
    common = ["--library", library, "--model", tiny.plain_bundle, "--json"]
    assert json.loads(_run("index", folder, *common).stdout)["added"] == 6
    (folder / "여행").chmod(0)
    try:
        report = json.loads(_run("index", folder, *common, unprivileged=True).stdout)
    finally:
        (folder / "여행").chmod(0o755)
    assert report["removed"] == 0 and report["unchanged"] == 5
    assert any("cannot list folder" in f["error"] for f in report["failures"])


# -- crashes -----------------------------------------------------------------------------------


def _assert_consistent(library: Path, folder: Path) -> None:
    lib = Library(library, create=False)
    try:
        ids, raw = lib.store.embeddings()
        paths = [lib.store.records_by_ids([i])[int(i)].path for i in ids]
        on_disk = sorted(str(p) for p in folder.rglob("*") if p.is_file())
        assert sorted(paths) == on_disk  # every photo once, nothing else
        vindex = load_index(library)
        assert vindex is not None and vindex.labels == {int(i) for i in ids}
        vectors = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        for photo_id, vector in zip(ids, vectors, strict=True):
            assert vindex.search(vector, 1)[0][0] == photo_id  # every photo findable
    finally:
        lib.close()


@pytest.mark.parametrize("fast_image", ["1", "0"], ids=["onnx", "torch"])
def test_sigkill_at_random_moments_never_corrupts(tiny, tmp_path, monkeypatch, fast_image):
    """Photos through ONNX Runtime (a run lasts under a second) and through torch (seconds)."""
    monkeypatch.setenv("HANCLIP_FAST_IMAGE", fast_image)
    folder, library = tmp_path / "photos", tmp_path / "library"
    write_photo_folder(folder, count=40)
    rng = random.Random(1234)
    common = ["--library", library, "--model", tiny.plain_bundle, "--batch-size", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # A first run, not killed, shows how long a run lasts on this machine and path. Every
    # later run has work to do (a rename and new photos, on top of what a killed run left), so
    # it loads the encoders and embeds; it is killed at a random moment within the time a run
    # is expected to take, shortened whenever a run finishes first. Trials go on until at
    # least four kills have landed (a run that finishes first must leave the library sound too).
    started = time.monotonic()
    assert _run("index", folder, *common).returncode == 0
    expected = time.monotonic() - started
    kills = 0
    for trial in range(24):
        if trial >= 8 and kills >= 4:
            break
        victim = sorted(p for p in folder.glob("photo_*.jpg"))[0]
        victim.rename(victim.with_name(f"renamed-{trial}.jpg"))
        for k in range(3):
            Image.new("RGB", (300, 200), (trial * 10, k * 80, 0)).save(
                folder / f"new-{trial}-{k}.png"
            )
        process = subprocess.Popen(
            _hanclip_command("index", folder, *common),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 0.9) * expected)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        else:
            expected *= 0.7
        process.wait()
    assert kills >= 4, "the kills must land mid-run to test anything"
    final = _run("index", folder, *common, "--json")
    assert final.returncode == 0, final.stderr
    _assert_consistent(library, folder)


def test_corrupt_or_missing_index_is_rebuilt(cli, tiny, photos, library):
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    for data in library.glob("hnsw-*.bin"):
        data.write_bytes(b"\x00" * 100)
    assert len(cli("search", "바다", *common, "--json").json()) == 8
    assert (
        json.loads(_run("info", "--library", library, "--json").stdout)["index"]["status"] == "ok"
    )
    (library / POINTER_NAME).unlink()
    assert len(cli("search", "바다", *common, "--json").json()) == 8
    _assert_consistent(library, photos)


# -- concurrency -------------------------------------------------------------------------------


def test_second_writer_is_refused_and_search_reads_the_last_committed_state(
    cli, tiny, photos, library
):
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    lib = Library(library, create=True)
    with lib.writer_lock():
        busy = cli("index", photos, *common)
        assert busy.exit_code == 2
        assert "another `hanclip index` is running" in _one_line_error(busy)
        # An index run in progress has committed a photo that the HNSW file lacks.
        vector = np.random.default_rng(0).normal(size=32).astype(np.float32)
        lib.store.add_photos([NewPhoto(str(photos / "mid-run.jpg"), 1, 1, "x", 1, 1, None, vector)])
        Image.new("RGB", (1, 1)).save(photos / "mid-run.jpg")  # a hit's file must be there
        before = _snapshot(library)
        hits = cli("search", "--image", photos / "dog.jpeg", *common, "-n", "20", "--json").json()
        assert str(photos / "mid-run.jpg") in {h["path"] for h in hits}
        assert {k: v for k, v in _snapshot(library).items() if k != "library.db"} == {
            k: v for k, v in before.items() if k != "library.db"
        }  # no HNSW write while another process holds the library
    lib.close()


# -- bad input ---------------------------------------------------------------------------------


def _bundle(tmp_path: Path, name: str, manifest: dict) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "hanclip.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def indexed(cli, tiny, photos, library):
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    return _snapshot(library)


def test_bad_models_change_nothing(cli, tiny, photos, library, indexed, tmp_path):
    from trainer.heads import HanclipHeads

    base = {"format": 1, "name": "x", "image_model": tiny.image_spec}
    no_heads = _bundle(
        tmp_path,
        "no-heads",
        {**base, "text_model": str(tiny.text_plain), "heads": "gone.safetensors"},
    )
    no_text = _bundle(
        tmp_path, "no-text", {**base, "text_model": str(tmp_path / "missing-st"), "heads": None}
    )
    wrong = _bundle(
        tmp_path,
        "wrong-dims",
        {**base, "text_model": str(tiny.text_plain), "heads": "heads.safetensors"},
    )
    HanclipHeads(image_dim=64, text_dim=32, out_dim=16).save(wrong / "heads.safetensors")
    cases = {
        "no-such-model": "unknown model",
        str(no_heads): "gone.safetensors is missing",
        str(no_text): "text model directory not found",
        str(wrong): "expect 64-d image embeddings",
    }
    for model, message in cases.items():
        for command in (["index", photos], ["search", "바다"]):
            result = cli(*command, "--library", library, "--model", model)
            assert message in _one_line_error(result), (model, command)
            assert _snapshot(library) == indexed
    result = cli("index", photos, "--library", library, "--model", tiny.plain_bundle, "--json")
    assert result.json()["unchanged"] == 8


def test_bad_queries_and_images(cli, tiny, photos, library, indexed, tmp_path):
    common = ["--library", library, "--model", tiny.plain_bundle]
    for query in ["", "   ", "\u3000\n"]:
        assert "empty" in _one_line_error(cli("search", query, *common))
    long = cli("search", "바다 " * 5000, *common, "--json")
    assert long.exit_code == 0 and "longer than 1000 characters" in long.stderr
    assert len(long.json()) == 8
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("hello")
    message = _one_line_error(cli("search", "--image", text_file, *common))
    assert "not a recognised image format" in message
    assert "cannot read" in _one_line_error(
        cli("search", "--image", tmp_path / "none.jpg", *common)
    )
    assert _snapshot(library) == indexed


def test_unwritable_library_is_refused_before_anything_happens(tiny, photos, tmp_path):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        result = _run(
            "index",
            photos,
            "--library",
            parent / "lib",
            "--model",
            tiny.plain_bundle,
            unprivileged=True,
        )
    finally:
        parent.chmod(0o755)
    assert result.returncode == 2
    assert "cannot create library directory" in _one_line_error(result)
    assert not (parent / "lib").exists()


# -- security ----------------------------------------------------------------------------------


def _package_sources() -> list[Path]:
    return [
        p
        for d in ("hanclip_model", "trainer", "hanclip_library", "hanclip_cli")
        for p in (REPO / d).rglob("*.py")
    ]


def test_no_shell_and_no_unsafe_deserialisation_in_the_package():
    calls = re.compile(r"os\.system\(|shell=True|\bsubprocess\b|(?<![.\w])(eval|exec)\(")
    for source in _package_sources():
        text = source.read_text(encoding="utf-8")
        assert not calls.search(text), (source, calls.search(text))
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (source, line)
            assert "allow_pickle=True" not in line, (source, line)


def test_sql_is_parameterised():
    """Every f-string that builds SQL interpolates only `marks`, a list of "?" placeholders."""
    checked = 0
    for source in _package_sources():
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.JoinedStr):
                continue
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", text):
                continue
            checked += 1
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    assert isinstance(value.value, ast.Name) and value.value.id == "marks", (
                        source,
                        ast.unparse(node),
                    )
    assert checked >= 2  # the id-list queries of store.py are found, so the check is live
