"""Random unit vectors, clustered ones, and the cosine of each row of one matrix with the same
row of another (how every approximate path is compared with its reference)."""

from __future__ import annotations

import numpy as np

from hanclip_model.heads import l2_normalize


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Random unit vectors: what retrieval, training and HNSW cost does not depend on the
    values."""
    return l2_normalize(rng.standard_normal((n, dim), dtype=np.float32))


def around(rng: np.random.Generator, centres: np.ndarray, count: int, std: float) -> np.ndarray:
    """`count` unit vectors, each a random one of `centres` plus Gaussian noise of `std` per
    coordinate: clustered, as photos of a few kinds of scene are."""
    which = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, centres.shape[1]), dtype=np.float32) * std
    return l2_normalize(centres[which] + noise)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row i of `a` against row i of `b`, in float64 (the worst of them is reported to 1e-7)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
