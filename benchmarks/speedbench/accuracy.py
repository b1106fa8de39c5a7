"""Every approximate path against its torch fp32 reference, as cosines on the same inputs:
the ONNX text encoder (and its optional int8 form), the numpy heads, JPEG draft decoding."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from benchkit.processes import log, median
from benchkit.vectors import row_cosines

from hanclip_model.heads import l2_normalize
from speedbench.ceiling import ClipParts
from speedbench.results import (
    AccuracyResult,
    CosineSummary,
    DraftDecodeAccuracy,
    FastTextAccuracy,
    HeadsAccuracy,
    Int8Accuracy,
)
from speedbench.settings import DRAFT_PHOTOS, HEAD_ROWS, SENTENCES

if TYPE_CHECKING:
    from hanclip_model.bundle import BundleSpec
    from hanclip_model.fast_text.runtime import FastTextEncoder


def fast_text_cosines(text_model: str) -> FastTextAccuracy:
    """The ONNX export (as `search` runs it) against sentence-transformers in fp32."""
    from sentence_transformers import SentenceTransformer

    from hanclip_model.cache import cache_root
    from hanclip_model.encoders import quiet_transformers
    from hanclip_model.fast_text.cache import ensure_fast_text
    from hanclip_model.fast_text.runtime import FastTextEncoder
    from hanclip_model.texts import nfc_texts

    quiet_transformers()
    fast = FastTextEncoder.load(ensure_fast_text(text_model, cache_root()))
    reference = SentenceTransformer(text_model, device="cpu").eval()
    texts = nfc_texts(SENTENCES)  # the reference gets what the CLI hands any encoder
    expected = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    single = np.concatenate([fast.embed([t]) for t in texts])
    return FastTextAccuracy(
        sentences=len(texts),
        one_at_a_time=CosineSummary.of(row_cosines(single, expected)),
        batched=CosineSummary.of(row_cosines(fast.embed(texts), expected)),
        fp32_ms_per_query=_ms_per_query(fast, texts),
        int8=int8_text_cosines(text_model, texts, expected),
    )


def int8_text_cosines(text_model: str, texts: list[str], expected: np.ndarray) -> Int8Accuracy:
    """The optional int8 export (ONNX Runtime dynamic quantisation), which the export keeps
    only when its worst cosine with the fp32 export is >= MIN_QUANTIZED_COSINE."""
    from hanclip_model.cache import cache_root
    from hanclip_model.fast_text.cache import ensure_fast_text
    from hanclip_model.fast_text.runtime import FastTextConfig, FastTextEncoder

    export = ensure_fast_text(text_model, cache_root(), quantize=True)
    config = FastTextConfig.read(export)
    if not config.quantized:
        return Int8Accuracy(gate_cosine=config.int8_cosine, kept=False)
    int8 = FastTextEncoder.load(export, quantized=True)
    single = np.concatenate([int8.embed([t]) for t in texts])
    return Int8Accuracy(
        gate_cosine=config.int8_cosine,
        kept=True,
        one_at_a_time=CosineSummary.of(row_cosines(single, expected)),
        ms_per_query=_ms_per_query(int8, texts),
    )


def _ms_per_query(encoder: FastTextEncoder, texts: list[str]) -> float:
    """Median milliseconds to embed one sentence, warm, over `texts`."""
    encoder.embed(texts[:1])
    times = []
    for text in texts:
        start = time.perf_counter()
        encoder.embed([text])
        times.append(time.perf_counter() - start)
    return median(times) * 1000


def heads_cosines(heads_path: Path, seed: int = 0) -> HeadsAccuracy:
    """The numpy heads (BatchNorm folded) against the torch module, on random inputs."""
    import torch

    from hanclip_model.heads import load_heads
    from trainer.heads import HanclipHeads

    numpy_heads, torch_heads = load_heads(heads_path), HanclipHeads.load(heads_path).eval()
    rng = np.random.default_rng(seed)
    image_in = rng.standard_normal((HEAD_ROWS, numpy_heads.image.in_dim), dtype=np.float32)
    text_in = rng.standard_normal((HEAD_ROWS, numpy_heads.text.in_dim), dtype=np.float32)
    with torch.inference_mode():
        image_ref = torch_heads.project_image(torch.from_numpy(image_in)).numpy()
        text_ref = torch_heads.project_text(torch.from_numpy(text_in)).numpy()
    return HeadsAccuracy(
        image=CosineSummary.of(row_cosines(numpy_heads.image(image_in), image_ref)),
        text=CosineSummary.of(row_cosines(numpy_heads.text(text_in), text_ref)),
    )


def draft_decode_cosines(clip: ClipParts, photos: Sequence[Path]) -> DraftDecodeAccuracy:
    """Image embeddings of JPEG-draft decodes (hanclip) against full-resolution decodes.

    With random weights the scale is unknown, so the mean cosine between different photos
    is given beside it: agreement means something only where that one is clearly lower.
    """
    import torch
    from PIL import Image

    from hanclip_model.images import load_image

    draft, full = [], []
    for path in photos:
        draft.append(clip.preprocess(load_image(path, clip.image_size).image))
        with Image.open(path) as image:
            full.append(clip.preprocess(image.convert("RGB")))
    with torch.inference_mode():
        draft_vectors = l2_normalize(clip.model.encode_image(torch.stack(draft)).numpy())
        full_vectors = l2_normalize(clip.model.encode_image(torch.stack(full)).numpy())
    between = full_vectors @ full_vectors.T
    others = between[~np.eye(len(photos), dtype=bool)]
    return DraftDecodeAccuracy(
        draft_vs_full=CosineSummary.of(row_cosines(draft_vectors, full_vectors)),
        different_photos_mean=float(others.mean()) if len(others) else float("nan"),
        photos=len(photos),
    )


def measure_accuracy(spec: BundleSpec, clip: ClipParts, photos: Sequence[Path]) -> AccuracyResult:
    log("accuracy: fast text, heads, draft decoding")
    return AccuracyResult(
        fast_text=fast_text_cosines(spec.text_model),
        heads=heads_cosines(spec.heads_path) if spec.heads_path else None,
        draft_decode=draft_decode_cosines(clip, photos[:DRAFT_PHOTOS]),
    )
