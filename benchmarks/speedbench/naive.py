"""The contenders: what a script written without hanclip's care would do.

`naive_search` runs in a fresh process of its own (`speed.py --naive-search`), so this
module imports only the standard library and numpy at its top: such a script pays for
what it imports itself, and for nothing of the benchmark's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def naive_search(bundle: str, vectors_path: str, paths_path: str, query: str) -> None:
    """Import the usual libraries, load the text model with sentence-transformers, project
    with torch, search with numpy, print the ten best paths."""
    import open_clip  # noqa: F401 - such a script imports what indexing needed too
    import torch
    from sentence_transformers import SentenceTransformer

    from hanclip_model.bundle import read_bundle
    from trainer.heads import HanclipHeads

    spec = read_bundle(bundle)
    text_model = SentenceTransformer(spec.text_model, device="cpu")
    raw = text_model.encode([query], convert_to_tensor=True, normalize_embeddings=True)
    with torch.inference_mode():
        if spec.heads_path is not None:
            raw = HanclipHeads.load(spec.heads_path).eval().project_text(raw)
    query_vector = raw[0].float().numpy()
    vectors, paths = np.load(vectors_path), np.load(paths_path)
    scores = vectors @ query_vector
    for rank, i in enumerate(np.argsort(-scores)[:10], start=1):
        print(f"{rank:2d}  {scores[i]:.3f}  {paths[i]}")


def naive_index_rate(model: Any, preprocess: Any, photos: Sequence[Path]) -> float:
    """Photos/s of the obvious loop: full-resolution decode, RGB, preprocess, one photo per
    forward. Timed after one warm-up photo, so start-up does not count against it (which
    flatters the naive loop: `hanclip index` is timed from its library's opening instead)."""
    import torch
    from PIL import Image

    def embed(path: Path) -> None:
        with Image.open(path) as image:
            pixels = preprocess(image.convert("RGB"))[None]
        model.encode_image(pixels)

    with torch.inference_mode():
        embed(photos[0])
        start = time.perf_counter()
        for path in photos:
            embed(path)
        return len(photos) / (time.perf_counter() - start)
