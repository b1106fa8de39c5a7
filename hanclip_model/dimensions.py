"""The widths a bundle's vectors have, as each part of it states them, and the one check
that they agree: a bundle whose heads take 512-d image vectors from a 32-d image encoder
would install and then fail at its first search.

Read without loading a model (small JSON files and the heads' tensor shapes):
- `hanclip.json`'s `dims` (`image`, `text`, `output`), as `hanclip train` writes it;
- the heads file: f1's input (image side), f2's input (text side), their output;
- an open_clip `local-dir:` folder's `open_clip_config.json` (`model_cfg.embed_dim`), for the
  image model and for a text model that is an open_clip model's own text tower;
- a sentence-transformers folder's modules (the last `Dense`'s `out_features`, else the
  pooling's width times its modes);
- the bundle's own ONNX encoders (`fast_image.json`, `fast_text.json`: `dim`).
A hub id (`ViT-B-32:openai`) states nothing until downloaded, and is not checked here.
Without heads, image and text vectors are compared directly: every width must be one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanclip_model.bundle import LOCAL_DIR_PREFIX, MANIFEST_NAME, BundleSpec, clip_text_source
from hanclip_model.errors import BundleError
from hanclip_model.heads import load_heads

# The pooling modes sentence-transformers concatenates, each adding one embedding width.
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


@dataclass(frozen=True)
class StatedDim:
    """One width one part of the bundle states. side: "image" (what the image encoder gives
    and f1 takes), "text" (what the text encoder gives and f2 takes) or "output"."""

    side: str
    dim: int
    source: str  # the part that states it, in words


def stated_dimensions(spec: BundleSpec) -> list[StatedDim]:
    """Every width the bundle's parts state (see the module's words)."""
    found: list[StatedDim] = []
    dims = spec.extra.get("dims")
    if isinstance(dims, dict):
        for side in ("image", "text", "output"):
            if _is_width(dims.get(side)):
                found.append(StatedDim(side, int(dims[side]), f"{MANIFEST_NAME} dims"))
    if spec.heads_path is not None:
        heads = load_heads(spec.heads_path)
        found += [
            StatedDim("image", heads.image.in_dim, "the heads' f1 input"),
            StatedDim("text", heads.text.in_dim, "the heads' f2 input"),
            StatedDim("output", heads.dim, "the heads' output"),
        ]
    image = _open_clip_dim(spec.image_model)
    if image is not None:
        found.append(StatedDim("image", image, "the image model's open_clip_config.json"))
    tower = clip_text_source(spec.text_model)  # an open_clip model's own text tower
    if tower is not None:
        text = _open_clip_dim(tower)
        source = "the text model's open_clip_config.json"
    else:
        text = _sentence_transformer_dim(Path(spec.text_model))
        source = "the text model's modules"
    if text is not None:
        found.append(StatedDim("text", text, source))
    for side, folder, config in (
        ("image", spec.image_export, "fast_image.json"),
        ("text", spec.text_export, "fast_text.json"),
    ):
        dim = _read(folder / config, "dim") if folder is not None else None
        if _is_width(dim):
            found.append(StatedDim(side, int(dim), f"the ONNX {side} encoder"))
    return found


def check_dimensions(spec: BundleSpec) -> None:
    """Refuse, in one line, a bundle whose parts disagree on a width."""
    stated = stated_dimensions(spec)
    # Without heads the image and text vectors are one space.
    groups = ("image", "text", "output") if spec.heads_path is not None else ("",)
    for group in groups:
        members = [s for s in stated if s.side == group or not group]
        first = members[0] if members else None
        for other in members[1:]:
            if other.dim != first.dim:
                what = f"{group} vectors" if group else "vectors (no heads: image and text alike)"
                raise BundleError(
                    f"wrong dimensions in the bundle {spec.directory}: for its {what}, "
                    f"{first.source} says {first.dim} but {other.source} says {other.dim}"
                )


def _open_clip_dim(image_model: str) -> int | None:
    if not image_model.startswith(LOCAL_DIR_PREFIX):
        return None
    folder = Path(image_model[len(LOCAL_DIR_PREFIX) :])
    cfg = _read(folder / "open_clip_config.json", "model_cfg")
    dim = cfg.get("embed_dim") if isinstance(cfg, dict) else None
    return int(dim) if _is_width(dim) else None


def _sentence_transformer_dim(folder: Path) -> int | None:
    modules = _read(folder / "modules.json")
    if not folder.is_dir() or not isinstance(modules, list):
        return None
    width = None
    for module in modules:
        if not isinstance(module, dict):
            continue
        kind = str(module.get("type", ""))
        config = folder / str(module.get("path", "")) / "config.json"
        if kind.endswith("Pooling"):
            pooling = _read(config)
            if isinstance(pooling, dict) and _is_width(pooling.get("word_embedding_dimension")):
                modes = sum(bool(pooling.get(mode)) for mode in _POOLING_MODES) or 1
                width = int(pooling["word_embedding_dimension"]) * modes
        elif kind.endswith("Dense"):
            out = _read(config, "out_features")
            width = int(out) if _is_width(out) else width
    return width


def _read(path: Path, key: str | None = None) -> Any:
    """A small JSON file (or one key of it); None when it is missing or unreadable: a part
    that states nothing is not checked, and reading it for real says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if key is None:
        return data
    return data.get(key) if isinstance(data, dict) else None


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
