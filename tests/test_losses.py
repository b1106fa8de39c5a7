"""The training losses against direct, loop-by-loop hand computations in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.losses import add_noise, info_nce, intra_loss


def unit_rows(seed: int, n: int, dim: int) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, dim)))
    return torch.nn.functional.normalize(x, dim=-1)


def hand_info_nce(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Cross-entropy of each row of a·bᵀ/τ and of each column, diagonal labels, averaged."""
    n = a.shape[0]
    logits = [[float(a[i] @ b[j]) / tau for j in range(n)] for i in range(n)]

    def cross_entropy(row: list[float], label: int) -> float:
        top = max(row)
        return top + math.log(sum(math.exp(x - top) for x in row)) - row[label]

    rows = sum(cross_entropy(logits[i], i) for i in range(n)) / n
    columns = sum(cross_entropy([logits[j][i] for j in range(n)], i) for i in range(n)) / n
    return (rows + columns) / 2


@pytest.mark.parametrize("tau", [0.01, 0.07, 1.0])
def test_info_nce_matches_hand_computation(tau: float) -> None:
    a, b = unit_rows(0, 6, 8), unit_rows(1, 6, 8)
    expected = hand_info_nce(a.numpy(), b.numpy(), tau)
    assert info_nce(a, b, tau).item() == pytest.approx(expected, rel=1e-9)


def test_info_nce_is_symmetric_and_small_for_aligned_pairs() -> None:
    a, b = unit_rows(0, 6, 8), unit_rows(1, 6, 8)
    assert info_nce(a, b, 0.1).item() == pytest.approx(info_nce(b, a, 0.1).item(), rel=1e-12)
    assert info_nce(a, a, 0.01).item() < 1e-6
    assert info_nce(a, b, 0.01).item() > 1.0


def test_intra_loss_matches_hand_computation() -> None:
    e_img, v_img, e_txt, k_txt = (unit_rows(seed, 5, 4) for seed in range(4))
    n = e_img.shape[0]

    def distance(x: torch.Tensor, y: torch.Tensor, i: int) -> float:
        return math.sqrt(sum((float(x[i, j]) - float(y[i, j])) ** 2 for j in range(x.shape[1])))

    expected = sum(distance(e_img, v_img, i) + distance(e_txt, k_txt, i) for i in range(n)) / n / 2
    assert intra_loss(e_img, v_img, e_txt, k_txt).item() == pytest.approx(expected, rel=1e-12)
    assert intra_loss(e_img, e_img, e_txt, e_txt).item() == 0.0


def test_add_noise_is_seeded_gaussian_then_normalised() -> None:
    x = unit_rows(0, 10, 16).float()
    noisy = add_noise(x, 0.1, torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    expected = (x + 0.1 * noise) / torch.linalg.vector_norm(x + 0.1 * noise, dim=1, keepdim=True)
    torch.testing.assert_close(noisy, expected)
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(10))
    torch.testing.assert_close(add_noise(3 * x, 0.0, None), x)
