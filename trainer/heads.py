"""The projection heads as a torch module, for training.

Same architecture and tensor names as `hanclip_model.heads` (which runs them in numpy at
inference): f1 = Linear(d_image, 2*d_image) -> BatchNorm1d -> ReLU -> Linear(-> d_out) and
f2 = Linear(d_text, 2*d_text) -> BatchNorm1d -> ReLU -> Linear(-> d_out), outputs L2-normalised.
With CLIP ViT-B/32 (512) and MiniLM (384) that is 512-1024-512 and 384-768-512: 1.74M parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


def projection_head(in_dim: int, out_dim: int, hidden_dim: int | None = None) -> nn.Sequential:
    hidden_dim = hidden_dim or 2 * in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class HanclipHeads(nn.Module):
    """f1 for CLIP-side embeddings (images and CLIP text), f2 for multilingual text embeddings."""

    def __init__(self, image_dim: int = 512, text_dim: int = 384, out_dim: int = 512) -> None:
        super().__init__()
        self.f1 = projection_head(image_dim, out_dim)
        self.f2 = projection_head(text_dim, out_dim)

    def project_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.f1(x), dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.f2(x), dim=-1)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path))

    @classmethod
    def load(cls, path: str | Path) -> HanclipHeads:
        from safetensors.torch import load_file

        state = load_file(str(path))
        heads = cls(
            image_dim=state["f1.0.weight"].shape[1],
            text_dim=state["f2.0.weight"].shape[1],
            out_dim=state["f1.3.weight"].shape[0],
        )
        heads.load_state_dict(state)
        return heads
