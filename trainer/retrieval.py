"""Soft retrieval from a memory bank: the semantic enhancement step of HanCLIP.

For each query q the result is normalise( Σ_k softmax_k(q·b_k / τ) b_k ) over the whole bank:
exact, not a top-k approximation. The bank can be far larger than memory allows a
[queries, bank] logit matrix, so the softmax is streamed over bank chunks with an online
log-sum-exp (as in FlashAttention): per query we keep the running max m, the running sum of
exp(logit - m) and the running exp-weighted sum of bank rows, and rescale both sums whenever
a chunk raises m. Peak memory is one [query_chunk, bank_chunk] logit block plus one chunk of
each input, whatever the bank size.

On a GPU the bank is copied to the device once, when it fits in half of the free memory
(1.5M CLIP rows are 3 GB): every query chunk sweeps the whole bank, and copying it from host
memory again for each one would cost more than the arithmetic. A larger bank streams from
host memory chunk by chunk, as on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from hanclip_model.device import is_cuda, pick_device


def _chunk_to_torch(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    # Copy even when already float32: a slice of a read-only memmap cannot back a tensor.
    return torch.from_numpy(np.array(rows, dtype=np.float32, copy=True)).to(device)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` more may live on `device`: a GPU with twice that free; never the CPU
    (host memory and memmaps already are where the CPU reads)."""
    if not is_cuda(device):
        return False
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free_bytes // 2


def copy_to_device(array: np.ndarray, device: torch.device, chunk_rows: int) -> torch.Tensor:
    """A float32 copy of `array` [N, D] on `device`, read `chunk_rows` rows at a time (a
    memmap is never read into host memory whole)."""
    out = torch.empty(array.shape, dtype=torch.float32, device=device)
    for start in range(0, array.shape[0], chunk_rows):
        out[start : start + chunk_rows] = _chunk_to_torch(array[start : start + chunk_rows], device)
    return out


def _soft_retrieve_chunk(
    queries: torch.Tensor,
    bank: np.ndarray | torch.Tensor,
    tau: float,
    bank_chunk: int,
    device: torch.device,
) -> torch.Tensor:
    """Streaming softmax-weighted mean of the bank rows for one chunk of queries."""
    scaled_queries = queries / tau
    running_max = torch.full((queries.shape[0],), -torch.inf, device=device)
    running_sum = torch.zeros(queries.shape[0], device=device)
    weighted_sum = torch.zeros_like(queries)
    for start in range(0, bank.shape[0], bank_chunk):
        bank_rows = bank[start : start + bank_chunk]
        if isinstance(bank_rows, np.ndarray):
            bank_rows = _chunk_to_torch(bank_rows, device)
        logits = scaled_queries @ bank_rows.T
        new_max = torch.maximum(running_max, logits.amax(dim=1))
        # exp(-inf) = 0 on the first chunk, so the empty sums start cleanly.
        rescale = torch.exp(running_max - new_max)
        weights = logits.sub_(new_max[:, None]).exp_()
        running_sum = running_sum * rescale + weights.sum(dim=1)
        weighted_sum = weighted_sum * rescale[:, None] + weights @ bank_rows
        running_max = new_max
    return F.normalize(weighted_sum / running_sum[:, None], dim=-1)


def soft_retrieve(
    queries: np.ndarray,
    bank: np.ndarray,
    tau: float,
    *,
    query_chunk: int = 4096,
    bank_chunk: int = 16384,
    device: str | None = None,
) -> np.ndarray:
    """Softmax(τ)-weighted mean of `bank` rows for every query row, L2-normalised.

    queries [Q, D] and bank [N, D] may be memmaps: only chunks are copied into torch.
    Returns float32 [Q, D]. Runs on CUDA when available unless `device` says otherwise.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries [Q, D] and bank [N, D] must share D, got {list(queries.shape)} "
            f"and {list(bank.shape)}"
        )
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    if tau <= 0:
        raise ValueError(f"temperature must be positive, got {tau}")
    if query_chunk < 1 or bank_chunk < 1:
        raise ValueError("chunk sizes must be positive")
    target = torch.device(pick_device(device))
    result = np.empty(queries.shape, dtype=np.float32)
    with torch.inference_mode():
        source = bank
        if fits_on_device(bank.shape[0] * bank.shape[1] * 4, target):
            source = copy_to_device(bank, target, bank_chunk)
        for start in range(0, queries.shape[0], query_chunk):
            query_rows = _chunk_to_torch(queries[start : start + query_chunk], target)
            retrieved = _soft_retrieve_chunk(query_rows, source, tau, bank_chunk, target)
            result[start : start + query_rows.shape[0]] = retrieved.cpu().numpy()
    return result
