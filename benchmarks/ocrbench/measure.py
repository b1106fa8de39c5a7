"""Reading the test set with each candidate pipeline, and scoring what was read.

The text match used to rank photos for a query is `matches` / `ranked` (one place): a photo
matches a query word when the word is a substring of its recognised text, both NFC,
case-folded and with every space removed (Tesseract may split a Korean word in two); photos
are ranked by the number of query words they match, then by the mean confidence of their
recognised words; a photo matching no word is not returned. The library's full-text search
replaces this rule in the product; the benchmark keeps it simple and stated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from hanclip_library import ocr_engines
from hanclip_library.text_engines import Recognition, RecognitionFailed
from hanclip_model.texts import nfc
from ocrbench.testset import NO_TEXT, Query, Sample

# Candidate pipelines: the product's engines, and the alternatives they were chosen over.
PRODUCT = ocr_engines.ENGINES
ALTERNATIVES = ("tesseract+look-page", "tesseract-psm3", "tesseract-psm11", "rapidocr")
CANDIDATES = (*PRODUCT, *ALTERNATIVES)
LANGUAGES = "kor+eng"


@dataclass(frozen=True)
class Reading:
    """One image read by one pipeline."""

    text: str
    confidence: float  # mean over the recognised words; 0 when none
    seconds: float
    failed: str | None  # the RecognitionFailed reason


class RapidOcrShipped:
    """RapidOCR as its wheel ships it: detector, direction classifier and its Chinese and
    English recogniser (no Hangul in its alphabet). For the record, not for the product."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self.ocr = RapidOCR()

    def read(self, image: Image.Image) -> Recognition:
        import numpy as np

        result, _ = self.ocr(np.asarray(image.convert("RGB"))[:, :, ::-1].copy())
        lines = [(text, float(score)) for _, text, score in (result or [])]
        from hanclip_library.text_engines import Word

        words = tuple(Word(text, 0, 0, 0, 0, score) for text, score in lines)
        return Recognition("\n".join(text for text, _ in lines), words)


class LookThenPage:
    """The first look, then Tesseract on the whole photo wherever it saw text, scenes too:
    the default before scenes were read line by line. For the record, not for the
    product."""

    def __init__(self) -> None:
        self.engine = ocr_engines.open_engine("tesseract+detect", LANGUAGES, fetch=None)

    def read(self, image: Image.Image) -> Recognition:
        if self.engine.first_look(image) is None:
            return Recognition("")
        return self.engine.read_as(image, ocr_engines.PAGE)


def open_candidate(name: str) -> Any:
    """A pipeline by its benchmark name, opened once (its start-up is not timed)."""
    if name in PRODUCT:
        return ocr_engines.open_engine(name, LANGUAGES, fetch=None)
    if name == "tesseract+look-page":
        return LookThenPage()
    if name.startswith("tesseract-psm"):
        page_mode = int(name.removeprefix("tesseract-psm"))
        return ocr_engines.open_tesseract(LANGUAGES, fetch=None, page_mode=page_mode)
    if name == "rapidocr":
        return RapidOcrShipped()
    raise ValueError(f"unknown pipeline {name} (known: {', '.join(CANDIDATES)})")


def read_all(engine: Any, samples: Sequence[Sample], progress: Callable[[str], None]):
    readings = []
    for i, sample in enumerate(samples):
        with Image.open(sample.path) as opened:
            image = opened.convert("RGB")
        start = time.perf_counter()
        try:
            found = engine.read(image)
            failed = None
        except RecognitionFailed as exc:
            found, failed = Recognition(""), exc.reason
        seconds = time.perf_counter() - start
        confidences = [w.confidence for w in found.words]
        mean = sum(confidences) / len(confidences) if confidences else 0.0
        readings.append(Reading(found.text, mean, seconds, failed))
        if i % 10 == 9:
            progress(f"  {i + 1}/{len(samples)}")
    return readings


def normal(text: str) -> str:
    return "".join(nfc(text).casefold().split())


def matches(words: Sequence[str], reading: Reading) -> int:
    """How many of the query's words the reading holds."""
    read = normal(reading.text)
    return sum(1 for word in words if normal(word) in read)


def ranked(words: Sequence[str], readings: Sequence[Reading], among: Sequence[int]) -> list[int]:
    """The photos of `among` that match at least one word, best first."""
    scored = [(matches(words, readings[i]), readings[i].confidence, i) for i in among]
    return [i for count, conf, i in sorted(scored, key=lambda s: (-s[0], -s[1])) if count > 0]


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(truth: str, read: str) -> float:
    """Edits from the read text to the true one over the true text's length, spaces left
    out of both (a space Tesseract adds inside a Korean word costs nothing in search)."""
    expected = normal(truth)
    return edit_distance(expected, normal(read)) / max(1, len(expected))


def recall_at(ranking: Sequence[int], relevant: frozenset[int], k: int) -> float:
    """The share of the relevant photos in the top k, out of as many as fit there."""
    return len(relevant.intersection(ranking[:k])) / min(k, len(relevant))


@dataclass(frozen=True)
class QueryScores:
    queries: int
    recall_at_1: float
    recall_at_10: float


def query_scores(
    queries: Sequence[Query], readings: Sequence[Reading], among: Sequence[int]
) -> QueryScores | None:
    """Recall of the queries whose relevant photos are among `among` (a kind of image mixed
    with the text-free photos)."""
    pool = set(among)
    r1, r10 = [], []
    for query in queries:
        relevant = query.relevant & pool
        if not relevant:
            continue
        ranking = ranked(query.words, readings, among)
        r1.append(recall_at(ranking, frozenset(relevant), 1))
        r10.append(recall_at(ranking, frozenset(relevant), 10))
    if not r1:
        return None
    return QueryScores(len(r1), sum(r1) / len(r1), sum(r10) / len(r10))


def false_matches(
    queries: Sequence[Query], readings: Sequence[Reading], samples: Sequence[Sample]
) -> tuple[int, int]:
    """(text-free photos returned by any query, query-photo pairs so returned)."""
    free = [i for i, s in enumerate(samples) if s.kind == NO_TEXT]
    pairs = [(q, i) for q in queries for i in free if matches(q.words, readings[i]) > 0]
    return len({i for _, i in pairs}), len(pairs)


@dataclass(frozen=True)
class LookFigure:
    """The first look (RapidOCR's detector) alone at one input side."""

    side: int
    ms_per_photo: float
    missed_screenshots: int  # text images where it saw no line
    missed_photos: int
    text_free_flagged: int  # text-free photos where it saw a line (they go on to Tesseract)


def measure_first_look(side: int, samples: Sequence[Sample]) -> LookFigure:
    """The product's first look (a screen-like image kept as a page, else the detector at
    `side`) alone: its cost on an image decoded at the look's size, and its misses."""
    look = ocr_engines.FirstLookEngine(ocr_engines.Detector.open(side), None, None)  # type: ignore[arg-type]
    seen, seconds = [], []
    for sample in samples:
        with Image.open(sample.path) as opened:
            image, _ = ocr_engines.prepared(opened.convert("RGB"), max(side, 256))
        start = time.perf_counter()
        seen.append(look.first_look(image) is not None)
        seconds.append(time.perf_counter() - start)
    # The first call builds the session's buffers; it is left out of the time.
    per_photo = sum(seconds[1:]) / max(1, len(seconds) - 1) * 1000

    def missed(kind: str) -> int:
        return sum(1 for s, saw in zip(samples, seen, strict=True) if s.kind == kind and not saw)

    flagged = sum(1 for s, saw in zip(samples, seen, strict=True) if s.kind == NO_TEXT and saw)
    return LookFigure(side, per_photo, missed("screenshot"), missed("photo"), flagged)


def embedding_ms_per_photo(photos: int = 16) -> float | None:
    """A ViT-B/32 image embedding's cost per photo here, in batches as `index` embeds:
    open_clip's architecture with random weights (same FLOPs), torch on the usable cores.
    None where torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from hanclip_eval.random_models import random_clip_vit_b32

    encoder = random_clip_vit_b32(device="cpu")
    pixels = torch.rand(photos, 3, encoder.image_size, encoder.image_size)
    encoder.embed_pixels(pixels[:2])
    start = time.perf_counter()
    encoder.embed_pixels(pixels)
    return (time.perf_counter() - start) / photos * 1000
