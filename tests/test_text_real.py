"""Text in photos end to end with the real engine: photos indexed through the console script
with the default text engine (Tesseract with its first look, real `kor` and `eng` data) are
found by the words in them; text-free photos never are.

The screenshot is drawn by the benchmark's renderer (`ocrbench.testset.screenshot`). The sign
is drawn here: a coloured board with large bold text, turned a few degrees, on a textured
photo-like background (`benchkit.inputs.synthetic_photo`), lightly blurred, saved as a JPEG.

Skipped where tesserocr or Tesseract's `kor` data is missing, unless HANCLIP_REQUIRE_OCR is
set (CI sets it): there a missing engine is a failure.
"""

from __future__ import annotations

import io
import json
import random
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from benchkit.inputs import synthetic_photo
from entrypoint import run_entry
from needs import skip_unless_present
from ocrbench import testset
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from hanclip_cli import entry
from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library import ocr_engines
from hanclip_library.text_engines import EngineUnavailable

NANUM = Path("/usr/share/fonts/truetype/nanum")
CHAT = ("카톡 메시지: 내일 서울역 2번 출구에서 만나요",)
SIGN = "스타벅스"


def _missing() -> str | None:
    try:
        import tesserocr  # noqa: F401

        ocr_engines.tessdata_folder("kor+eng", fetch=None)
    except (ImportError, EngineUnavailable) as exc:
        return str(exc)
    for face in ("NanumGothic.ttf", "NanumGothicBold.ttf"):
        if not (NANUM / face).is_file():
            return f"{NANUM / face} is not installed (apt-get install fonts-nanum)"
    return None


skip_unless_present(_missing(), "HANCLIP_REQUIRE_OCR")


def sign_photo(seed: int = 3) -> Image.Image:
    """A shop sign photographed close up: a green board with white bold text of 72 px, turned
    3 degrees, in the middle of a 640x480 textured scene (a little out of focus), blurred.

    The default engine finds the sign's line and reads it cut out and straightened;
    Tesseract reading the whole photo as a page gets no word of it at most seeds."""
    scene = synthetic_photo((640, 480), seed=seed).filter(ImageFilter.GaussianBlur(3))
    font = ImageFont.truetype(str(NANUM / "NanumGothicBold.ttf"), 72)
    board = Image.new("RGB", (417, 140), (0, 112, 74))
    ImageDraw.Draw(board).text((208, 70), SIGN, font=font, fill=(250, 250, 250), anchor="mm")
    board = board.convert("RGBA").rotate(3, resample=Image.BICUBIC, expand=True)
    scene.paste(board, ((640 - board.width) // 2, (480 - board.height) // 2), board)
    return scene.filter(ImageFilter.GaussianBlur(0.6))


def console(argv: list[str]) -> tuple[int, str, str]:
    """`hanclip ARGV` through the console script's entry point, in this process, for a
    module-scoped fixture (no capsys there): (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["hanclip", *argv])
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
            entry.main()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


def console_env(patch: pytest.MonkeyPatch, cache: Path, home: Path) -> None:
    """The console script on the CPU, in this process, with the shared model cache, its own
    home, and no model named by the environment."""
    patch.setenv("HANCLIP_CACHE", str(cache))
    patch.setenv("HANCLIP_HOME", str(home))
    patch.setenv("HANCLIP_DEVICE", "cpu")
    patch.setenv("HANCLIP_VIA_SERVER", "0")
    patch.setenv("HANCLIP_RESIDENT", "0")
    patch.delenv("HANCLIP_MODEL", raising=False)


@pytest.fixture(scope="module")
def text_library(tmp_path_factory, tiny, _cache_dir) -> tuple[Path, dict[str, Path]]:
    """(library, photos by role): a chat screenshot, a sign and four text-free photos,
    indexed through the console script with the default engine."""
    root = tmp_path_factory.mktemp("text-real")
    folder = root / "사진"
    free = write_photo_folder(folder, count=4, seed=5)
    font = ImageFont.truetype(str(NANUM / "NanumGothic.ttf"), 24)
    photos = {"chat": folder / "chat.png", "sign": folder / "sign.jpg"}
    testset.screenshot(CHAT, font, random.Random(1)).save(photos["chat"])
    sign_photo().save(photos["sign"], quality=85)
    photos.update({f"free-{i}": path for i, path in enumerate(free)})
    library = root / "library"
    with pytest.MonkeyPatch.context() as patch:
        console_env(patch, _cache_dir, root / "home")
        argv = ["index", str(folder), "--library", str(library), "--model", str(tiny.plain_bundle)]
        code, out, err = console([*argv, "--json"])
    assert code == 0, err
    assert json.loads(out)["added"] == len(photos), out
    return library, photos


def search(monkeypatch, capsys, tiny, library: Path, *words: str) -> list[dict]:
    argv = ["search", *words, "--library", str(library), "--model", str(tiny.plain_bundle)]
    code, out, err = run_entry(monkeypatch, capsys, [*argv, "--json"], fast=True)
    assert code == 0, err
    return json.loads(out)


def test_a_screenshot_is_found_first_by_its_words(text_library, tiny, monkeypatch, capsys):
    library, photos = text_library
    hits = search(monkeypatch, capsys, tiny, library, "서울역")
    assert hits[0]["path"] == str(photos["chat"]) and "text_match" in hits[0], hits[0]
    match = hits[0]["text_match"]
    assert [match["snippet"][s:e] for s, e in match["spans"]] == ["서울역"]
    assert len(hits) == len(photos)  # the rest by their look


def test_a_sign_is_found_first_by_its_word(text_library, tiny, monkeypatch, capsys):
    library, photos = text_library
    hits = search(monkeypatch, capsys, tiny, library, SIGN)
    assert hits[0]["path"] == str(photos["sign"]) and "text_match" in hits[0], hits[0]


def test_a_two_syllable_word_is_found(text_library, tiny, monkeypatch, capsys):
    library, photos = text_library
    hits = search(monkeypatch, capsys, tiny, library, "카톡", "--text-only")
    assert [hit["path"] for hit in hits] == [str(photos["chat"])]


@pytest.mark.parametrize("words", [("서울역",), (SIGN,), ("카톡",), ("바다", "노을"), ("2번",)])
def test_a_text_free_photo_is_never_a_text_match(text_library, tiny, monkeypatch, capsys, words):
    library, photos = text_library
    free = {str(path) for role, path in photos.items() if role.startswith("free-")}
    hits = search(monkeypatch, capsys, tiny, library, *words)
    assert not [hit["path"] for hit in hits if "text_match" in hit and hit["path"] in free]
