"""The recognition engines behind `text_engines.TextEngine`, opened by name.

- `tesseract`: Tesseract 5 through tesserocr (its wheels bundle libtesseract), one
  `PyTessBaseAPI` kept open per engine. Its language data (`kor.traineddata`, ...) comes from
  the system's tessdata folder (Debian/Ubuntu `tesseract-ocr-kor`, Homebrew `tesseract-lang`)
  or from hanclip's cache, where it is fetched once from the tessdata repository when no
  folder holds it.
- `tesseract+detect`: a first look before Tesseract. A screen-like image (a screenshot: most
  of its pixels one flat colour) is read as a page. Any other photo gets RapidOCR's shipped
  text detector at a reduced size: where it sees no text line, the photo costs only that
  look; where it does, the detector finds the lines at a larger size and Tesseract reads
  each line, straightened out of its angle and perspective (a scene's sign at an angle, on
  texture, defeats Tesseract's page layout). `benchmarks/ocr_quality.py` measures what the
  look saves and what it misses, and each way of reading.

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
# enough to see small text (benchmarks/ocr_quality.py: first look, its cost and its misses;
# 416 missed no more scene text than 480 did, for four fifths of the time).
LOOK_SIDE = 416
# A screenshot has most of its pixels in one flat colour; a camera's photo never does
# (benchmarks/ocr_quality.py: screenshots at 0.84 and more, photo-like images at 0.11 and
# less). A screen is read as a page, with no look: the look at LOOK_SIDE misses its small
# glyphs, and Tesseract reads a page whole.
SCREEN_FLATNESS = 0.4
# The look's detector keeps fainter line candidates than RapidOCR's defaults (0.3 and 0.5):
# at the look's small size a small sign's line scores low, and a false line costs only a
# reading (benchmarks/ocr_quality.py: at 416 px, 4 of 40 photo-like images missed against
# 7, text-free photos flagged unchanged).
LOOK_PIXEL_THRESHOLD, LOOK_BOX_THRESHOLD = 0.2, 0.3
# Where the text lines of a scene are found: the detector at this side (its own default).
SCENE_SIDE = 960
# Each line is read twice by Tesseract, straightened and brought to a height: as it is (grey)
# and Otsu-binarised; the reading with more confident characters is kept (either alone read
# less of the benchmark's scene text).
LINE_RENDERINGS = ((64, False), (48, True))
LINE_PAGE_MODE = 7  # Tesseract's --psm 7: the image is one text line
# A line's words are kept down to this confidence: the detector already said it is text.
MIN_LINE_CONFIDENCE = 0.3

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
    lines = open_tesseract(languages, fetch, page_mode=LINE_PAGE_MODE)
    lines.min_confidence = MIN_LINE_CONFIDENCE
    return FirstLookEngine(Detector.open(LOOK_SIDE), reader, LineReader(lines))


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
        words = self.recognised(page, back)
        return Recognition(_joined(words), tuple(word for word, _ in words))

    def recognised(self, page: Image.Image, back: float) -> list[tuple[Word, bool]]:
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
    """RapidOCR's shipped text detector (a DB model): whether a photo brought down to `side`
    holds any text line (with the look's thresholds), and where its lines are."""

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

    def _quads(self, image: Image.Image, side: int, thresholds: tuple[float, float] | None):
        """The detector's line boxes in `image` brought down to `side` (in those pixels),
        and the factor back to `image`'s; `thresholds` (pixel, box) replace its own."""
        import numpy as np

        small, back = prepared(image, side)
        post = self.detector.postprocess_op
        saved = self.detector.limit_side_len, post.thresh, post.box_thresh
        try:
            self.detector.limit_side_len = side
            if thresholds is not None:
                post.thresh, post.box_thresh = thresholds
            quads, _ = self.detector(np.ascontiguousarray(np.asarray(small)[:, :, ::-1]))  # BGR
        except Exception as exc:
            raise RecognitionFailed(f"the text detector failed: {exc}") from exc
        finally:
            self.detector.limit_side_len, post.thresh, post.box_thresh = saved
        return (quads if quads is not None else []), back

    def sees_text(self, image: Image.Image) -> bool:
        """Whether the detector, at `side` with the look's thresholds, finds any text line."""
        quads, _ = self._quads(image, self.side, (LOOK_PIXEL_THRESHOLD, LOOK_BOX_THRESHOLD))
        return len(quads) > 0

    def lines(self, image: Image.Image, side: int = SCENE_SIDE) -> list[Any]:
        """The text lines the detector finds in `image` brought down to `side`, as
        four-corner boxes (clockwise from top left, float32) in `image`'s pixels, top to
        bottom."""
        import numpy as np

        quads, back = self._quads(image, side, None)
        found = [np.asarray(q, dtype=np.float32) * back for q in quads]
        return sorted(found, key=lambda q: (float(q[:, 1].min()), float(q[:, 0].min())))


def flatness(image: Image.Image, side: int = 256) -> float:
    """The share of the pixels of `image` (brought down to `side`) in its commonest colour,
    colours counted at 5 bits a channel: near 1 for a screenshot, low for a photo."""
    import numpy as np

    small = image.copy()
    small.thumbnail((side, side))
    pixels = np.asarray(small.convert("RGB")).astype(np.int32) >> 3
    colours = (pixels[..., 0] << 10) | (pixels[..., 1] << 5) | pixels[..., 2]
    return float(np.bincount(colours.ravel()).max() / max(1, colours.size))


PAGE, SCENE = "page", "scene"  # how a photo the first look kept is read


@dataclass
class LineReader:
    """Tesseract reading one detected line at a time: each line cut out of the photo along
    its four corners (straightening its angle and perspective), brought to a height, read in
    each of `LINE_RENDERINGS`, the reading with more confident characters kept."""

    reader: TesseractEngine  # in LINE_PAGE_MODE

    def read(self, image: Image.Image, quads: Sequence[Any]) -> Recognition:
        import time

        deadline = time.monotonic() + self.reader.time_limit_s
        words: list[tuple[Word, bool]] = []
        photo = _bgr(image)
        for quad in quads:
            if time.monotonic() > deadline:
                raise RecognitionFailed(
                    f"Tesseract ran past its time limit of {self.reader.time_limit_s:g} s"
                )
            words.extend(self._line(photo, quad))
        return Recognition(_joined(words), tuple(word for word, _ in words))

    def _line(self, photo: Any, quad: Any) -> list[tuple[Word, bool]]:
        """The words of the best reading of one line, boxed in the photo's pixels."""
        line, to_photo = _straightened(photo, quad)
        if line is None:
            return []
        best: list[tuple[Word, bool]] = []
        best_back = to_photo
        for height, binarised in LINE_RENDERINGS:
            page, to_line = _rendered(line, height, binarised)
            read = self.reader.recognised(page, 1.0)
            if _weight(read) > _weight(best):
                best, best_back = read, to_photo @ to_line
        return [(_mapped(word, best_back), i == 0) for i, (word, _) in enumerate(best)]


def _weight(words: Sequence[tuple[Word, bool]]) -> float:
    return sum(word.confidence * len(word.text) for word, _ in words)


def _bgr(image: Image.Image) -> Any:
    import numpy as np

    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _straightened(photo: Any, quad: Any) -> tuple[Any, Any]:
    """The line inside `quad` cut out as an upright rectangle (a tall one turned to lie
    flat), and the transform from its pixels back to the photo's; (None, None) when it is
    too small to read."""
    import cv2
    import numpy as np

    top, bottom = np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2])
    left, right = np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])
    width, height = round(max(top, bottom)), round(max(left, right))
    if width < 4 or height < 4:
        return None, None
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    into = cv2.getPerspectiveTransform(quad.astype(np.float32), corners)
    line = cv2.warpPerspective(
        photo, into, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    back = np.linalg.inv(into)
    if height > 1.5 * width:  # a vertical line: read it lying down
        line = np.ascontiguousarray(np.rot90(line))
        turn = np.float64([[0, -1, width], [1, 0, 0], [0, 0, 1]])  # lying -> standing
        back = back @ turn
    return line, back


def _rendered(line: Any, height: int, binarised: bool) -> tuple[Image.Image, Any]:
    """The line at `height` px with a margin of its own border colour (Tesseract wants some
    room around a line), and the transform from those pixels back to the line's."""
    import cv2
    import numpy as np
    from PIL import Image

    scale = height / line.shape[0]
    width = max(1, round(line.shape[1] * scale))
    pixels = cv2.resize(line, (width, height), interpolation=cv2.INTER_CUBIC)
    if binarised:
        grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
        _, ink = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if ink.mean() < 128:  # light text on dark: dark on light reads better
            ink = 255 - ink
        pixels = cv2.cvtColor(ink, cv2.COLOR_GRAY2BGR)
    margin = height // 4
    pixels = cv2.copyMakeBorder(pixels, *(margin,) * 4, cv2.BORDER_REPLICATE)
    back = np.float64([[1 / scale, 0, -margin / scale], [0, 1 / scale, -margin / scale], [0, 0, 1]])
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1])), back


def _mapped(word: Word, back: Any) -> Word:
    """`word` (boxed in a rendered line's pixels, as `TesseractEngine` gives it with a
    factor of 1) boxed in the photo's pixels: the bounding box of its four corners taken
    back through the line's transform."""
    import numpy as np

    x0, y0, x1, y1 = word.left, word.top, word.left + word.width, word.top + word.height
    corners = np.float64([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]]).T
    placed = back @ corners
    xs, ys = placed[0] / placed[2], placed[1] / placed[2]
    left, top = round(float(xs.min())), round(float(ys.min()))
    width, height = round(float(xs.max())) - left, round(float(ys.max())) - top
    return Word(word.text, left, top, max(1, width), max(1, height), word.confidence)


@dataclass
class FirstLookEngine:
    """The first look (`first_look`), then the photo read as its look said (`read_as`): a
    screen as a page, a scene line by line; nothing more for a photo the look saw no text
    in. The index's text pass calls the two steps apart, so that a photo's look is made on a
    small decode and only a photo with text is decoded large."""

    look: Detector
    reader: TesseractEngine
    lines: LineReader

    @property
    def id(self) -> EngineId:
        inner = self.reader.id
        version = f"{inner.version}+{self.look.model}@{self.look.side}+lines@{SCENE_SIDE}"
        return EngineId("tesseract+detect", version, inner.languages)

    @property
    def look_side(self) -> int:
        """The smallest side an image handed to `first_look` needs."""
        return self.look.side

    def first_look(self, image: Image.Image) -> str | None:
        """PAGE for a screen-like image, SCENE for a photo where the detector sees a text
        line, None for one where it sees none."""
        page, _ = prepared(image, max(self.look.side, 256))
        if flatness(page) >= SCREEN_FLATNESS:
            return PAGE
        return SCENE if self.look.sees_text(page) else None

    def read_as(self, image: Image.Image, layout: str) -> Recognition:
        """The text of `image`, which the first look said holds text laid out as `layout`."""
        if layout == PAGE:
            return self.reader.read(image)
        page, back = prepared(image)
        found = self.lines.read(page, self.look.lines(page))
        if back == 1.0:
            return found
        words = tuple(_scaled(word, back) for word in found.words)
        return Recognition(found.text, words)

    def read(self, image: Image.Image) -> Recognition:
        layout = self.first_look(image)
        return Recognition("") if layout is None else self.read_as(image, layout)


def _scaled(word: Word, factor: float) -> Word:
    return Word(
        word.text,
        round(word.left * factor),
        round(word.top * factor),
        round(word.width * factor),
        round(word.height * factor),
        word.confidence,
    )
