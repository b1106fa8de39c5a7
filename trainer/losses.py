"""The HanCLIP losses and the embedding noise used during training (torch, batch-first)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """CLIP-style symmetric InfoNCE: row i of `a` and row i of `b` are the positive pair.

    Mean of the cross-entropy over the rows (a→b) and over the columns (b→a) of a·bᵀ/τ.
    """
    logits = a @ b.T / tau
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def intra_loss(
    e_img: torch.Tensor, v_img: torch.Tensor, e_txt: torch.Tensor, k_txt: torch.Tensor
) -> torch.Tensor:
    """mean(‖ê^I − v̂‖ + ‖ê^K − k̂‖) / 2: pulls each caption towards its pseudo pair.

    Attractive only (no negatives): the inter-modal InfoNCE terms already keep apart what
    differs, this term just closes the gap between a caption and what it retrieved.
    """
    image_side = torch.linalg.vector_norm(e_img - v_img, dim=-1)
    text_side = torch.linalg.vector_norm(e_txt - k_txt, dim=-1)
    return (image_side + text_side).mean() / 2


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """normalise(x + std·N(0, 1)).

    Spreads each embedding into a small cloud, so heads trained on text-side points also
    cover nearby image-side points across the modality gap (noise injection, as in CapDec).
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.normalize(x + std * noise, dim=-1)
