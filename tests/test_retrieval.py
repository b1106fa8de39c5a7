"""soft_retrieve: the streamed, chunked softmax equals the direct formula over the whole bank."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.retrieval import soft_retrieve

TAU = 0.01


def direct_soft_retrieve(queries: np.ndarray, bank: np.ndarray, tau: float) -> np.ndarray:
    """normalise(softmax(q·bᵀ/τ) b) in float64 over the full logit matrix, max-shifted."""
    logits = queries.astype(np.float64) @ bank.astype(np.float64).T / tau
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    mixed = weights @ bank.astype(np.float64)
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Chunks this small gain nothing from two threads, and on a busy machine the hand-offs
    between them cost more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    bank = unit_rows(rng, 1000, 32)
    # Half the queries are near-duplicates of bank rows, so the top logits reach ~1/τ = 100,
    # where a plain float32 exp overflows; the other half mixes many rows.
    near = bank[:25] + 0.05 * rng.standard_normal((25, 32)).astype(np.float32)
    near = near / np.linalg.norm(near, axis=1, keepdims=True)
    queries = np.concatenate([near, unit_rows(rng, 25, 32)])
    return queries, bank


@pytest.mark.parametrize(
    ("query_chunk", "bank_chunk"),
    [(4096, 16384), (7, 13), (50, 1000), (1, 999), (16, 1), (3, 333)],
)
def test_chunked_equals_direct_formula(
    data: tuple[np.ndarray, np.ndarray], query_chunk: int, bank_chunk: int
) -> None:
    queries, bank = data
    result = soft_retrieve(
        queries, bank, TAU, query_chunk=query_chunk, bank_chunk=bank_chunk, device="cpu"
    )
    assert result.dtype == np.float32
    assert result.shape == queries.shape
    np.testing.assert_allclose(result, direct_soft_retrieve(queries, bank, TAU), atol=1e-5)


def test_large_logits_do_not_overflow(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, bank = data
    # Norm-3 vectors at τ=0.01 give logits near 900: exp overflows even in float64.
    queries, bank = 3 * queries, 3 * bank
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(queries.astype(np.float64) @ bank.T / TAU)).any()
    result = soft_retrieve(queries, bank, TAU, query_chunk=8, bank_chunk=128, device="cpu")
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, direct_soft_retrieve(queries, bank, TAU), atol=1e-5)


def test_low_temperature_picks_the_nearest_row(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, bank = data
    result = soft_retrieve(queries[:25], bank, 1e-4, bank_chunk=64, device="cpu")
    np.testing.assert_allclose(result, bank[:25], atol=1e-5)


def test_memmap_inputs(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, bank = data
    np.save(tmp_path / "queries.npy", queries)
    np.save(tmp_path / "bank.npy", bank)
    mapped_queries = np.load(tmp_path / "queries.npy", mmap_mode="r")
    mapped_bank = np.load(tmp_path / "bank.npy", mmap_mode="r")
    result = soft_retrieve(
        mapped_queries, mapped_bank, TAU, query_chunk=10, bank_chunk=300, device="cpu"
    )
    np.testing.assert_allclose(result, direct_soft_retrieve(queries, bank, TAU), atol=1e-5)
    np.testing.assert_array_equal(
        result, soft_retrieve(queries, bank, TAU, query_chunk=10, bank_chunk=300, device="cpu")
    )


def test_rejects_bad_arguments(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, bank = data
    with pytest.raises(ValueError, match="share D"):
        soft_retrieve(queries, bank[:, :16], TAU)
    with pytest.raises(ValueError, match="empty"):
        soft_retrieve(queries, bank[:0], TAU)
    with pytest.raises(ValueError, match="positive"):
        soft_retrieve(queries, bank, 0.0)
