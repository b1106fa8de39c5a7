"""The recognition engines behind `text_engines.TextEngine`, opened by name.

- `tesseract`: Tesseract 5 through tesserocr (its wheels bundle libtesseract), one
  `PyTessBaseAPI` kept open per engine. Its language data (`kor.traineddata`, ...) comes from
  the system's tessdata folder (Debian/Ubuntu `tesseract-ocr-kor`, Homebrew `tesseract-lang`)
  or from hanclip's cache, where it is fetched once from the tessdata repository when no
  folder holds it.
- `tesseract+detect`: a first look before Tesseract: RapidOCR's shipped text detector, run at
  a reduced size, says whether the photo holds text at all; a photo without any costs only
  that look. `benchmarks/ocr_quality.py` measures what the look saves and what it misses.

Every heavy import (tesserocr, rapidocr, onnxruntime) happens in `open_engine`, never when
this module is imported. A photo that breaks an engine or runs past its time limit raises
`RecognitionFailed` with the reason; the engine stays usable for the next photo.
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanclip_library.text_engines import (
    EngineId,
    EngineUnavailable,
    Recognition,
    RecognitionFailed,
    TextEngine,
    Word,
)
from hanclip_model.cache import cache_root
from hanclip_model.files import atomic_write_bytes

if TYPE_CHECKING:
    from PIL import Image

ENGINES = ("tesseract", "tesseract+detect")
DEFAULT_ENGINE = "tesseract+detect"  # the measured choice: benchmarks/ocr_quality.py
INSTALL_EXTRA = "pip install 'hanclip[ocr]'"

# A photo's longest side is brought down to this before recognition: a phone screenshot
# (about 2,500 px tall) keeps every pixel, a 50-MP photo stops costing its pixel count.
MAX_SIDE = 2600
# Tesseract's page segmentation mode (its --psm): 6 reads the page as one block of text.
PAGE_MODE = 6
TIME_LIMIT_S = 20.0  # per photo; a photo past it is recorded as failed, the run goes on
# Tesseract reads texture as letters; its low-confidence words are mostly that noise
# (benchmarks/ocr_quality.py: false matches in text-free photos).
MIN_WORD_CONFIDENCE = 0.6
# The first look's input side: small enough to cost less than the photo's embedding, large
# enough to see small text (benchmarks/ocr_quality.py: first look, its cost and its misses).
LOOK_SIDE = 480

# The language data's home when the system has none; tessdata_fast is what Debian and
# Homebrew ship (the same models, so a reading does not depend on where they came from).
TESSDATA_URL = "https://github.com/tesseract-ocr/tessdata_fast/raw/main/{language}.traineddata"
# Where packaged Tesseracts keep their language data (Debian/Ubuntu, Fedora, Homebrew on
# Apple silicon and Intel, the Windows installer); TESSDATA_PREFIX, Tesseract's own
# variable, comes first.
SYSTEM_TESSDATA = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/opt/homebrew/share/tessdata",
    "/usr/local/share/tessdata",
    "C:/Program Files/Tesseract-OCR/tessdata",
)
LANGUAGE_CODE = re.compile(r"^[a-z]{3}(_[a-z]+)?$")

# A bundle's language (ISO 639-1) -> Tesseract's languages: Korean photos carry English
# words and numbers too (brands, prices, URLs).
BUNDLE_LANGUAGES = {"ko": "kor+eng", "vi": "vie", "ja": "jpn+eng", "en": "eng"}

Opener = Callable[[str], bytes]  # a URL -> its bytes


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (a fixed https URL)
        return response.read()


def languages_for(bundle_language: str) -> str:
    """Tesseract's languages for a bundle's language (`--ocr-lang` overrides)."""
    try:
        return BUNDLE_LANGUAGES[bundle_language]
    except KeyError:
        raise EngineUnavailable(
            f"no text recognition languages known for '{bundle_language}': "
            "name them with --ocr-lang (Tesseract's codes, e.g. kor+eng)"
        ) from None


def available_engines() -> tuple[str, ...]:
    """The engines whose packages import here (language data is checked when one opens)."""
    import importlib.util

    if importlib.util.find_spec("tesserocr") is None:
        return ()
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        return ("tesseract",)
    return ENGINES


def open_engine(name: str, languages: str, *, fetch: Opener | None = download) -> TextEngine:
    """The engine `name` reading `languages` ("kor+eng"); `fetch` gets missing language data
    (None: never fetch). Raises `EngineUnavailable` with one line when it cannot run here."""
    if name not in ENGINES:
        raise EngineUnavailable(f"unknown text engine '{name}' (known: {', '.join(ENGINES)})")
    reader = open_tesseract(languages, fetch)
    if name == "tesseract":
        return reader
    return FirstLookEngine(Detector.open(LOOK_SIDE), reader)


# --- Tesseract ---------------------------------------------------------------------------


def split_languages(languages: str) -> list[str]:
    codes = [code for code in languages.split("+") if code]
    bad = [code for code in codes if not LANGUAGE_CODE.match(code)]
    if not codes or bad:
        raise EngineUnavailable(
            f"'{languages}' is not a list of Tesseract languages (e.g. kor+eng, vie)"
        )
    return codes


def tessdata_folders() -> list[Path]:
    """Where language data is looked for, in order: TESSDATA_PREFIX, the system's folders,
    hanclip's cache."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    folders = [Path(prefix)] if prefix else []
    return [*folders, *(Path(f) for f in SYSTEM_TESSDATA), cache_root() / "tessdata"]


def _has_all(folder: Path, codes: Sequence[str]) -> bool:
    return all((folder / f"{code}.traineddata").is_file() for code in codes)


def fetch_traineddata(code: str, folder: Path, fetch: Opener) -> Path:
    """`code`.traineddata fetched into `folder`, written atomically (a half-fetched file is
    never mistaken for language data)."""
    url = TESSDATA_URL.format(language=code)
    try:
        data = fetch(url)
    except OSError as exc:
        raise EngineUnavailable(_missing_line(code, f"fetching {url} failed: {exc}")) from exc
    if not data or data.lstrip()[:1] == b"<":  # empty, or an HTML error page
        raise EngineUnavailable(_missing_line(code, f"{url} gave no language data"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{code}.traineddata"
    atomic_write_bytes(path, data)
    return path


def _missing_line(code: str, why: str) -> str:
    package = f"tesseract-ocr-{code.replace('_', '-')}"
    return (
        f"Tesseract has no '{code}' language data here ({why}): install it "
        f"(Debian/Ubuntu: apt-get install {package}; macOS: brew install tesseract-lang)"
    )


def tessdata_folder(languages: str, fetch: Opener | None) -> Path:
    """The first folder that holds every language's data; else the cache, where the missing
    ones are fetched (Tesseract reads all its languages from one folder)."""
    codes = split_languages(languages)
    folders = tessdata_folders()
    for folder in folders:
        if _has_all(folder, codes):
            return folder
    cache = folders[-1]
    missing = [code for code in codes if not (cache / f"{code}.traineddata").is_file()]
    if fetch is None:
        nowhere = [c for c in codes if not any(_has_all(f, [c]) for f in folders)]
        raise EngineUnavailable(_missing_line((nowhere or missing)[0], "and fetching is off"))
    for code in missing:
        fetch_traineddata(code, cache, fetch)
    return cache


def open_tesseract(
    languages: str, fetch: Opener | None = download, page_mode: int = PAGE_MODE
) -> TesseractEngine:
    """Tesseract for `languages`, reading a page in Tesseract's `page_mode` (its --psm)."""
    try:
        import tesserocr
    except ImportError:
        raise EngineUnavailable(f"text recognition needs tesserocr: {INSTALL_EXTRA}") from None
    folder = tessdata_folder(languages, fetch)
    try:
        api = tesserocr.PyTessBaseAPI(
            path=str(folder), lang=languages, psm=page_mode, oem=tesserocr.OEM.LSTM_ONLY
        )
    except RuntimeError as exc:
        raise EngineUnavailable(
            f"Tesseract cannot load '{languages}' from {folder}: {exc}"
        ) from exc
    version = tesserocr.tesseract_version().split()[1]
    return TesseractEngine(api, EngineId("tesseract", version, languages), page_mode)


def prepared(image: Image.Image, max_side: int = MAX_SIDE) -> tuple[Image.Image, float]:
    """`image` as RGB with its longest side at most `max_side`, and the factor back to the
    original's pixels. Raises `RecognitionFailed` for pixels that cannot be decoded."""
    from PIL import Image

    try:
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        longest = max(rgb.size)
        if min(rgb.size) < 1:
            raise RecognitionFailed(f"an image of {rgb.width}x{rgb.height} pixels has nothing")
        if longest <= max_side:
            return rgb, 1.0
        scale = max_side / longest
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        return rgb.resize(size, Image.BILINEAR, reducing_gap=2.0), 1 / scale
    except RecognitionFailed:
        raise
    except Exception as exc:  # a truncated or odd file fails here, at its first decode
        raise RecognitionFailed(f"the image cannot be decoded: {exc}") from exc


@dataclass
class TesseractEngine:
    """Tesseract with its languages loaded once; one photo at a time (not thread-safe)."""

    api: Any  # tesserocr.PyTessBaseAPI
    id: EngineId
    page_mode: int = PAGE_MODE
    time_limit_s: float = TIME_LIMIT_S
    min_confidence: float = MIN_WORD_CONFIDENCE

    def read(self, image: Image.Image) -> Recognition:
        page, back = prepared(image)
        words = self._recognised(page, back)
        return Recognition(_joined(words), tuple(word for word, _ in words))

    def _recognised(self, page: Image.Image, back: float) -> list[tuple[Word, bool]]:
        try:
            self.api.SetImage(page)
            if not self.api.Recognize(timeout=int(self.time_limit_s * 1000)):
                raise RecognitionFailed(
                    f"Tesseract ran past its time limit of {self.time_limit_s:g} s"
                )
            return self._words(back)
        except RecognitionFailed:
            raise
        except Exception as exc:
            raise RecognitionFailed(f"Tesseract failed: {exc}") from exc
        finally:
            self.api.Clear()

    def _words(self, back: float) -> list[tuple[Word, bool]]:
        """The confident words with their boxes in the original's pixels, each with whether
        it starts a line."""
        import tesserocr

        level = tesserocr.RIL.WORD
        found = []
        for item in tesserocr.iterate_level(self.api.GetIterator(), level):
            try:
                text = item.GetUTF8Text(level).strip()
            except RuntimeError:  # tesserocr's answer for a word with no text
                continue
            confidence = item.Confidence(level) / 100
            box = item.BoundingBox(level)
            if confidence < self.min_confidence or box is None:
                continue
            if not any(c.isalnum() for c in text):
                continue
            left, top, right, bottom = (round(v * back) for v in box)
            word = Word(text, left, top, right - left, bottom - top, confidence)
            found.append((word, item.IsAtBeginningOf(tesserocr.RIL.TEXTLINE)))
        return found


def _joined(words: Sequence[tuple[Word, bool]]) -> str:
    """The words in reading order: a space between words, a new line where a line starts."""
    text = ""
    for word, starts_line in words:
        text += ("\n" if starts_line else " ") if text else ""
        text += word.text
    return text


# --- The first look ----------------------------------------------------------------------


@dataclass
class Detector:
    """RapidOCR's shipped text detector (a DB model) over the photo brought down to `side`:
    whether the photo holds any text line."""

    detector: Any  # rapidocr_onnxruntime's TextDetector
    model: str
    side: int

    @classmethod
    def open(cls, side: int) -> Detector:
        try:
            import rapidocr_onnxruntime
            from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
        except ImportError:
            raise EngineUnavailable(
                f"the text detector needs rapidocr-onnxruntime: {INSTALL_EXTRA}"
            ) from None
        models = sorted(Path(rapidocr_onnxruntime.__file__).parent.glob("models/*det*.onnx"))
        if not models:
            raise EngineUnavailable("rapidocr-onnxruntime ships no text detector model here")
        config = {
            "model_path": str(models[-1]),
            "limit_side_len": side,
            "limit_type": "max",
            "use_cuda": False,
            "use_dml": False,
            "intra_op_num_threads": -1,
            "inter_op_num_threads": -1,
        }
        return cls(TextDetector(config), models[-1].stem, side)

    def sees_text(self, image: Image.Image) -> bool:
        """Whether the detector finds any text line."""
        import numpy as np

        small, _ = prepared(image, self.side)
        try:
            quads, _ = self.detector(np.ascontiguousarray(np.asarray(small)[:, :, ::-1]))  # BGR
        except Exception as exc:
            raise RecognitionFailed(f"the text detector failed: {exc}") from exc
        return quads is not None and len(quads) > 0


@dataclass
class FirstLookEngine:
    """The first look, then Tesseract on the whole photo only where it saw text. (Reading
    the detector's lines one by one instead measured worse: benchmarks/ocr_quality.py.)"""

    look: Detector
    reader: TesseractEngine

    @property
    def id(self) -> EngineId:
        inner = self.reader.id
        version = f"{inner.version}+{self.look.model}@{self.look.side}"
        return EngineId("tesseract+detect", version, inner.languages)

    def read(self, image: Image.Image) -> Recognition:
        if not self.look.sees_text(image):
            return Recognition("")
        return self.reader.read(image)
