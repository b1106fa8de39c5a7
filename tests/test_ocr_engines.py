"""Reading Korean text in photos with the real engines and the real language data.

Skipped where tesserocr or Tesseract's `kor` data is missing, unless HANCLIP_REQUIRE_OCR is
set (CI sets it, and installs tesseract-ocr-kor and fonts-nanum): there a missing engine is
a failure. The language data is never downloaded here: the fetch is a fake opener.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchkit.inputs import synthetic_photo
from needs import skip_unless_present
from ocrbench.measure import character_error_rate
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library import ocr_engines
from hanclip_library.text_engines import EngineUnavailable, RecognitionFailed

FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf")
LINES = ("스타벅스 영수증 아메리카노 4,500원", "서울역 2번 출구", "카톡 왔어요 내일 만나요")


def _missing() -> str | None:
    try:
        ocr_engines.tessdata_folder("kor+eng", fetch=None)
        import rapidocr_onnxruntime  # noqa: F401
        import tesserocr  # noqa: F401
    except (ImportError, EngineUnavailable) as exc:
        return str(exc)
    if not FONT.is_file():
        return f"{FONT} is not installed (apt-get install fonts-nanum)"
    return None


skip_unless_present(_missing(), "HANCLIP_REQUIRE_OCR")


def screenshot(lines=LINES, size_px: int = 24) -> Image.Image:
    image = Image.new("RGB", (720, 640), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), size_px)
    for i, line in enumerate(lines):
        draw.text((40, 120 + i * size_px * 2), line, font=font, fill=(20, 20, 20))
    return image


@pytest.fixture(scope="module", params=ocr_engines.ENGINES)
def engine(request):
    return ocr_engines.open_engine(request.param, "kor+eng", fetch=None)


def test_a_korean_screenshot_is_read(engine) -> None:
    found = engine.read(screenshot())
    assert character_error_rate("\n".join(LINES), found.text) < 0.1, found.text
    compact = "".join(found.text.split())
    assert "영수증" in compact and "카톡" in compact  # a two-syllable word
    assert found.words and all(0 <= w.confidence <= 1 for w in found.words)
    receipt = next(w for w in found.words if "영수증" in w.text)
    assert 40 <= receipt.left < 720 and 100 <= receipt.top < 200  # where it was drawn


def test_a_text_free_photo_gives_no_text(engine, tmp_path: Path) -> None:
    for path in write_photo_folder(tmp_path, count=4, seed=1):
        with Image.open(path) as photo:
            assert not engine.read(photo.convert("RGB").resize((800, 600))).has_text


def test_a_huge_image_is_brought_down_before_reading(engine) -> None:
    huge = screenshot().resize((720 * 6, 640 * 6))  # about 16 MP
    page, back = ocr_engines.prepared(huge)
    assert max(page.size) == ocr_engines.MAX_SIDE and back == pytest.approx(6 * 720 / 2600, 0.01)
    found = engine.read(huge)
    assert "영수증" in "".join(found.text.split())
    receipt = next(w for w in found.words if "영수증" in w.text)
    assert receipt.top > 600  # in the huge image's pixels


def test_a_photo_the_engine_cannot_read_raises_recognition_failed(engine, tmp_path) -> None:
    broken = tmp_path / "cut.jpg"
    screenshot().save(broken, quality=90)
    broken.write_bytes(broken.read_bytes()[:2000])  # the decode fails at the first read
    with Image.open(broken) as truncated, pytest.raises(RecognitionFailed) as failed:
        engine.read(truncated)
    assert "decoded" in failed.value.reason
    assert "영수증" in "".join(engine.read(screenshot()).text.split())  # still usable


def sign_scene(word: str = "서울역", angle: float = 6) -> tuple[Image.Image, tuple[int, ...]]:
    """A sign photographed at an angle, in perspective, on a textured scene: (the photo,
    the sign's bounding box in it)."""
    scene = synthetic_photo((1024, 768), seed=7).filter(ImageFilter.GaussianBlur(2))
    font = ImageFont.truetype(str(FONT.with_name("NanumGothicBold.ttf")), 64)
    board = Image.new("RGB", (360, 110), (30, 60, 140))
    ImageDraw.Draw(board).text((180, 55), word, font=font, fill=(250, 250, 250), anchor="mm")
    board = board.transform(
        board.size,
        Image.Transform.QUAD,
        (0, 0, 0, 110, 360, 104, 360, 6),  # the far side a little shorter: perspective
        resample=Image.Resampling.BICUBIC,
    )
    board = board.convert("RGBA").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    left, top = 420, 300
    scene.paste(board, (left, top), board)
    return scene.filter(ImageFilter.GaussianBlur(0.6)), (
        left,
        top,
        left + board.width,
        top + board.height,
    )


def test_the_first_look_tells_a_screen_a_scene_and_a_photo_without_text(tmp_path) -> None:
    engine = ocr_engines.open_engine("tesseract+detect", "kor+eng", fetch=None)
    assert ocr_engines.flatness(screenshot()) >= ocr_engines.SCREEN_FLATNESS
    assert engine.first_look(screenshot()) == ocr_engines.PAGE
    scene, _ = sign_scene()
    assert ocr_engines.flatness(scene) < ocr_engines.SCREEN_FLATNESS
    assert engine.first_look(scene) == ocr_engines.SCENE
    for seed in range(3):  # camera-like pictures: the look alone, and it sees nothing
        assert engine.first_look(synthetic_photo((800, 600), seed=seed)) is None
    # Flat graphics count as screens (read as a page, which finds nothing in these).
    for path in write_photo_folder(tmp_path, count=3, seed=1):
        with Image.open(path) as drawn:
            graphic = drawn.convert("RGB").resize((800, 600))
        assert engine.first_look(graphic) == ocr_engines.PAGE
        assert not engine.read(graphic).has_text


def test_a_sign_at_an_angle_is_read_line_by_line() -> None:
    """Tesseract's page layout reads nothing of a sign on a textured scene; the default
    engine cuts the detected line out along its corners and reads that."""
    engine = ocr_engines.open_engine("tesseract+detect", "kor+eng", fetch=None)
    scene, (left, top, right, bottom) = sign_scene()
    found = engine.read(scene)
    assert "서울역" in "".join(found.text.split()), found.text
    for word in found.words:  # boxed on the sign, in the photo's pixels
        assert left - 10 <= word.left and word.left + word.width <= right + 10, word
        assert top - 10 <= word.top and word.top + word.height <= bottom + 10, word
    page = ocr_engines.open_engine("tesseract", "kor+eng", fetch=None)
    assert "서울역" not in "".join(page.read(scene).text.split())


def test_a_photo_past_the_time_limit_fails_alone() -> None:
    slow = ocr_engines.open_tesseract("kor+eng", fetch=None)
    slow.time_limit_s = 0.001
    with pytest.raises(RecognitionFailed, match="time limit"):
        slow.read(screenshot(LINES * 8, 16))


def test_the_engine_says_what_it_is(engine) -> None:
    assert engine.id.languages == "kor+eng" and engine.id.version.startswith("5.")


def test_a_missing_language_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path))
    with pytest.raises(EngineUnavailable) as missing:
        ocr_engines.open_engine("tesseract", "kor+zzz", fetch=None)
    line = str(missing.value)
    assert "\n" not in line and "'zzz'" in line and "apt-get install tesseract-ocr-zzz" in line
    with pytest.raises(EngineUnavailable, match="not a list of Tesseract languages"):
        ocr_engines.open_engine("tesseract", "../kor", fetch=None)
    with pytest.raises(EngineUnavailable, match="unknown text engine"):
        ocr_engines.open_engine("paddle", "kor", fetch=None)


def test_missing_language_data_is_fetched_once_into_the_cache(tmp_path, monkeypatch) -> None:
    installed = ocr_engines.tessdata_folder("kor+eng", fetch=None)  # the real data, to serve
    monkeypatch.setattr(ocr_engines, "SYSTEM_TESSDATA", ())
    monkeypatch.delenv("TESSDATA_PREFIX", raising=False)
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path))
    asked: list[str] = []

    def opener(url: str) -> bytes:
        asked.append(url)
        return (installed / url.rsplit("/", 1)[1]).read_bytes()

    folder = ocr_engines.tessdata_folder("kor+eng", fetch=opener)
    assert folder == tmp_path / "tessdata"
    assert asked == [ocr_engines.TESSDATA_URL.format(language=c) for c in ("kor", "eng")]
    assert sorted(p.name for p in folder.iterdir()) == ["eng.traineddata", "kor.traineddata"]
    assert ocr_engines.tessdata_folder("kor+eng", fetch=opener) == folder
    assert len(asked) == 2  # fetched once
    engine = ocr_engines.open_engine("tesseract", "kor+eng", fetch=None)  # reads the cache
    assert "영수증" in "".join(engine.read(screenshot()).text.split())


def test_a_failed_fetch_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ocr_engines, "SYSTEM_TESSDATA", ())
    monkeypatch.delenv("TESSDATA_PREFIX", raising=False)
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path))

    def offline(url: str) -> bytes:
        raise OSError("network is unreachable")

    with pytest.raises(EngineUnavailable) as failed:
        ocr_engines.open_engine("tesseract", "kor", fetch=offline)
    assert "network is unreachable" in str(failed.value) and "\n" not in str(failed.value)
    with pytest.raises(EngineUnavailable, match="gave no language data"):
        ocr_engines.open_engine("tesseract", "kor", fetch=lambda url: b"<html>404</html>")
    cache = tmp_path / "tessdata"
    assert not cache.exists() or not any(cache.iterdir())


def test_the_fetch_goes_through_a_file_url(tmp_path, monkeypatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "kor.traineddata").write_bytes(b"language data")
    monkeypatch.setattr(ocr_engines, "TESSDATA_URL", served.as_uri() + "/{language}.traineddata")
    written = ocr_engines.fetch_traineddata("kor", tmp_path / "cache", ocr_engines.download)
    assert written.read_bytes() == b"language data"
    assert [p.name for p in written.parent.iterdir()] == ["kor.traineddata"]  # no temp file left


def test_a_bundle_language_names_tesseract_languages() -> None:
    assert ocr_engines.languages_for("ko") == "kor+eng"
    assert ocr_engines.languages_for("vi") == "vie"
    with pytest.raises(EngineUnavailable, match="--ocr-lang"):
        ocr_engines.languages_for("xx")
    assert set(ocr_engines.available_engines()) == set(ocr_engines.ENGINES)
