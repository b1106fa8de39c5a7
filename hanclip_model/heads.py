"""Projection heads f1 (image side) and f2 (text side), inference in numpy.

Each head is Linear -> BatchNorm1d -> ReLU -> Linear, L2-normalised output. At inference
BatchNorm uses its running statistics, so the head is a fixed affine map, a ReLU and another
affine map: numpy does it without importing torch, which keeps `search` start-up fast.

Tensor names in `heads.safetensors` follow a torch `nn.Sequential` per head, so the trainer's
torch module (`trainer.heads`) saves and loads the very same file:
``{head}.0.weight/bias`` (first Linear), ``{head}.1.weight/bias/running_mean/running_var``
(BatchNorm1d), ``{head}.3.weight/bias`` (second Linear), with head in {"f1", "f2"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanclip_model.errors import BundleError

BATCHNORM_EPS = 1e-5
HEAD_NAMES = ("f1", "f2")
_PARTS = {
    "in_weight": "0.weight",
    "in_bias": "0.bias",
    "bn_weight": "1.weight",
    "bn_bias": "1.bias",
    "bn_mean": "1.running_mean",
    "bn_var": "1.running_var",
    "out_weight": "3.weight",
    "out_bias": "3.bias",
}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Head:
    """One projection head in eval mode, folded into two affine maps around a ReLU."""

    in_weight: np.ndarray  # [hidden, in]
    in_bias: np.ndarray  # [hidden]
    out_weight: np.ndarray  # [out, hidden]
    out_bias: np.ndarray  # [out]

    @property
    def in_dim(self) -> int:
        return int(self.in_weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.out_weight.shape[0])

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], name: str) -> Head:
        try:
            p = {k: np.asarray(tensors[f"{name}.{v}"], dtype=np.float64) for k, v in _PARTS.items()}
        except KeyError as exc:
            raise BundleError(f"heads file has no tensor {exc.args[0]!r}") from None
        # BatchNorm with running stats is y = (x - mean) * scale + beta: fold it into Linear 1.
        scale = p["bn_weight"] / np.sqrt(p["bn_var"] + BATCHNORM_EPS)
        in_weight = p["in_weight"] * scale[:, None]
        in_bias = (p["in_bias"] - p["bn_mean"]) * scale + p["bn_bias"]
        hidden = in_weight.shape[0]
        if p["out_weight"].shape[1] != hidden:
            raise BundleError(f"head {name}: hidden sizes disagree in the heads file")
        return cls(
            in_weight=in_weight.astype(np.float32),
            in_bias=in_bias.astype(np.float32),
            out_weight=p["out_weight"].astype(np.float32),
            out_bias=p["out_bias"].astype(np.float32),
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise BundleError(f"head expects [N, {self.in_dim}] embeddings, got {list(x.shape)}")
        hidden = np.maximum(x @ self.in_weight.T + self.in_bias, 0.0)
        return l2_normalize(hidden @ self.out_weight.T + self.out_bias)


@dataclass(frozen=True)
class Heads:
    """The pair of heads of a bundle: f1 maps CLIP image embeddings, f2 text embeddings."""

    image: Head
    text: Head

    @property
    def dim(self) -> int:
        return self.image.out_dim


def load_heads(path: str | Path) -> Heads:
    """Read `heads.safetensors` (numpy only; never unpickles anything)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"heads file not found: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"cannot read heads file {path}: {exc}") from None
    heads = Heads(image=Head.from_tensors(tensors, "f1"), text=Head.from_tensors(tensors, "f2"))
    if heads.image.out_dim != heads.text.out_dim:
        raise BundleError(
            f"heads file {path}: f1 projects to {heads.image.out_dim} dims "
            f"but f2 to {heads.text.out_dim}"
        )
    return heads
