"""The recognition pass with the real default engine and Tesseract's real Korean data, through
the console script: a moved photo is not read again, a kill during the pass loses nothing and
the rerun goes on, a photo that stalls the engine is recorded with its reason and skipped.

(tests/test_text_pass.py checks the same rules, and more, with a fake engine; here the
engine is the one users get.) Skipped as tests/test_text_real.py is.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from ocrbench import testset
from PIL import ImageFont
from test_text_real import CHAT, NANUM, console, console_env, sign_photo  # also its skip

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library import ocr_engines, text_pass


@pytest.fixture
def run(tmp_path, tiny, _cache_dir, monkeypatch):
    """`hanclip ARGV --library L [--model TINY] --json` -> (exit code, the JSON or None, stderr)."""
    console_env(monkeypatch, _cache_dir, tmp_path / "home")
    library = tmp_path / "library"

    def run(*argv: str):
        model = ["--model", str(tiny.plain_bundle)] if argv[0] != "info" else []
        code, out, err = console([*argv, "--library", str(library), *model, "--json"])
        return code, (json.loads(out) if code == 0 else None), err

    return run


def photos(folder: Path) -> dict[str, Path]:
    """A chat screenshot, a sign, and three text-free photos."""
    free = write_photo_folder(folder, count=3, seed=9)
    font = ImageFont.truetype(str(NANUM / "NanumGothic.ttf"), 24)
    found = {"chat": folder / "chat.png", "sign": folder / "sign.jpg"}
    testset.screenshot(CHAT, font, random.Random(1)).save(found["chat"])
    sign_photo().save(found["sign"], quality=85)
    return {**found, **{f"free-{i}": p for i, p in enumerate(free)}}


def first_hit(run, word: str) -> dict:
    code, hits, err = run("search", word, "--text-only")
    assert code == 0 and hits, err
    return hits[0]


class Wrapped:
    """The real default engine, with a hook before each photo it reads."""

    def __init__(self, before) -> None:
        self.engine = ocr_engines.open_engine(ocr_engines.DEFAULT_ENGINE, "kor+eng", fetch=None)
        self.before, self.looked = before, 0

    @property
    def id(self):
        return self.engine.id

    @property
    def look_side(self) -> int:
        return self.engine.look_side

    def first_look(self, image):
        self.looked += 1
        self.before(self)
        return self.engine.first_look(image)

    def read_as(self, image, layout):
        return self.engine.read_as(image, layout)

    def read(self, image):
        return self.engine.read(image)


def use(patch: pytest.MonkeyPatch, before) -> None:
    """`hanclip index` reads with the real default engine, `before` called before each photo."""
    patch.setattr(text_pass, "open_text_engine", lambda name, languages: Wrapped(before))


def test_a_moved_photo_is_not_read_again(run, tmp_path) -> None:
    folder = tmp_path / "사진"
    shown = photos(folder)
    code, report, err = run("index", str(folder))
    assert code == 0 and report["text"]["read"] == len(shown), err
    moved = folder / "2024" / "chat.png"
    moved.parent.mkdir()
    shutil.move(shown["chat"], moved)
    code, report, err = run("index", str(folder))
    assert code == 0, err
    assert report["text"]["read"] == 0  # the same content: its reading is kept
    assert first_hit(run, "서울역")["path"] == str(moved)


def test_a_kill_during_the_pass_keeps_what_was_read_and_the_rerun_goes_on(
    run, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "사진"
    shown = photos(folder)

    def killed_on_the_third(engine: Wrapped) -> None:
        if engine.looked == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        use(patch, killed_on_the_third)
        code, _, _ = run("index", str(folder))
    assert code != 0
    code, info, err = run("info")
    assert code == 0 and info["text"]["read"] == 2 and info["text"]["pending"] == 3, info
    code, report, err = run("index", str(folder))
    assert code == 0 and report["text"]["read"] == len(shown) - 2, err
    assert first_hit(run, "서울역")["path"] == str(shown["chat"])
    assert first_hit(run, "스타벅스")["path"] == str(shown["sign"])


def test_a_photo_that_stalls_the_engine_is_recorded_with_its_reason(
    run, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "사진"
    shown = photos(folder)

    def stall_the_chat(engine: Wrapped) -> None:
        engine.engine.reader.time_limit_s = 0.001  # its page reading runs past this at once

    use(monkeypatch, stall_the_chat)
    code, report, err = run("index", str(folder))
    assert code == 0, err  # the run goes on
    assert report["text"]["failed"] == 1 and report["text"]["read"] == len(shown)
    code, info, _ = run("info", "--errors")
    assert code == 0 and info["text"]["failed"] == 1, info
    (failure,) = info["text_errors"]
    assert failure["path"] == str(shown["chat"]) and "time limit" in failure["error"], failure
    assert first_hit(run, "스타벅스")["path"] == str(shown["sign"])  # read line by line
