"""Model bundles: which frozen encoders to use and, optionally, the trained heads.

A bundle is a directory holding `hanclip.json`:

    {"format": 1, "name": str, "image_model": <open_clip spec>,
     "text_model": <sentence-transformers id or path> | "open_clip-text:<open_clip spec>",
     "heads": "heads.safetensors" | null}

Other keys (dims, training metadata) are kept and ignored. Relative paths in `image_model`
(`local-dir:rel/path`), `text_model` and `heads` are relative to the bundle directory. With
`"heads": null` image and text vectors are compared directly (Multilingual-CLIP style).

A `text_model` of `open_clip-text:SPEC` names the text tower of the open_clip model SPEC
itself (its own tokenizer and `encode_text`): the models trained with a multilingual text
tower of their own (XLM-R, NLLB, SigLIP 2's Gemma vocabulary), which no sentence-transformers
model carries. SPEC is written as `image_model` is (`NAME:PRETRAINED`, `hf-hub:`,
`local-dir:`); `clip_text_model` makes one, `clip_text_source` reads it back.

An optional `"calibration"` block turns a score (cosine) into a match probability,
sigmoid(a·cos + b) (written by `hanclip train`; trainer/calibration.py says what it means):
`{"a": float > 0, "b": float, ...}`. A block `{"uncalibrated": "why", ...}`, or none, leaves
the bundle uncalibrated; anything else is a BundleError. It is read into
`BundleSpec.calibration` and also kept, as written, among the other keys.

An optional `"encoders"` block names the bundle's own ONNX encoders (written by `hanclip
export` or `hanclip train --export`), folders relative to the bundle directory:
`{"image": "encoders/image", "text": "encoders/text", "image_int8": false}`. With them the
bundle indexes and searches without torch, on any machine it is copied to. `image_int8`
true: photos go through the int8 image graph, a space of its own (`image_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_model.errors import BundleError, UnknownModel
from hanclip_model.files import atomic_write_text, file_sha256
from hanclip_model.sources import resolve_local

BUNDLE_FORMAT = 1
MANIFEST_NAME = "hanclip.json"
HEADS_NAME = "heads.safetensors"
LOCAL_DIR_PREFIX = "local-dir:"
ENCODERS_DIR = "encoders"
IMAGE_ENCODER_DIR = "encoders/image"
TEXT_ENCODER_DIR = "encoders/text"
CLIP_TEXT_PREFIX = "open_clip-text:"


def clip_text_model(image_model: str) -> str:
    """The `text_model` that names the text tower of the open_clip model `image_model`."""
    return CLIP_TEXT_PREFIX + image_model


def clip_text_source(text_model: str) -> str | None:
    """The open_clip spec whose own text tower `text_model` names; None for a
    sentence-transformers model."""
    if text_model.startswith(CLIP_TEXT_PREFIX):
        return text_model[len(CLIP_TEXT_PREFIX) :]
    return None


@dataclass(frozen=True)
class Calibration:
    """p(match) = sigmoid(a·cos + b); a > 0, so the probability rises with the score."""

    a: float
    b: float

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Match probabilities of cosine scores (float64, any shape)."""
        z = self.a * np.asarray(scores, dtype=np.float64) + self.b
        # exp of -|z| only: neither branch overflows, however far the score lies out.
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1 / (1 + e), e / (1 + e))

    def score_at(self, probability: float) -> float:
        """The cosine whose match probability is `probability` (0 < probability < 1)."""
        return (math.log(probability / (1 - probability)) - self.b) / self.a


@dataclass(frozen=True)
class BundleSpec:
    """What a bundle names, with every relative path already resolved."""

    name: str
    image_model: str
    text_model: str
    heads_path: Path | None = None
    directory: Path | None = None  # None for a built-in bundle
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None  # None: scores only, no match probability
    # The bundle's own ONNX encoders (folders), None where it carries none.
    image_export: Path | None = None
    text_export: Path | None = None
    image_int8: bool = False  # photos through the int8 image graph

    @property
    def image_fingerprint(self) -> str:
        """Identifies the raw image embedding space; raw vectors are reusable while it holds.

        The fp32 ONNX graph and open_clip give the same vectors (verified to cosine 0.999 at
        export), one space; the int8 graph is another."""
        if self.image_int8:
            return _digest({"image_model": self.image_model, "image_quantization": "int8"})
        return _digest({"image_model": self.image_model})

    @property
    def fingerprint(self) -> str:
        """Identifies the search space: encoders plus the exact bytes of the heads."""
        heads = file_sha256(self.heads_path) if self.heads_path else None
        return _digest(
            {"image_model": self.image_model, "text_model": self.text_model, "heads": heads}
        )


def _open_clip_pair(name: str, model: str) -> BundleSpec:
    """A built-in that is one open_clip model, both towers its own, compared directly."""
    return BundleSpec(name=name, image_model=model, text_model=clip_text_model(model))


BUILTIN_BUNDLES: dict[str, BundleSpec] = {
    # The frozen encoders HanCLIP trains its heads on: a base for `train`, not a search model.
    "hanclip-base": BundleSpec(
        name="hanclip-base",
        image_model="ViT-B-32:openai",
        text_model="sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    ),
    # The same with OpenCLIP's ViT-B/32 trained on DataComp-XL as the image space (the image
    # tower a published follow-up of HanCLIP's idea trained its heads on).
    "hanclip-base-datacomp": BundleSpec(
        name="hanclip-base-datacomp",
        image_model="ViT-B-32:datacomp_xl_s13b_b90k",
        text_model="sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    ),
    "mclip": BundleSpec(
        name="mclip",
        image_model="ViT-B-32:openai",
        text_model="sentence-transformers/clip-ViT-B-32-multilingual-v1",
    ),
    # open_clip models with a multilingual text tower of their own (their published Korean
    # figures: `catalog.py`); the pretrained tags are the ones open_clip lists for them.
    "xlmr-b32": _open_clip_pair("xlmr-b32", "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"),
    "siglip2-b32": _open_clip_pair("siglip2-b32", "ViT-B-32-SigLIP2-256:webli"),
    "siglip2-b16": _open_clip_pair("siglip2-b16", "ViT-B-16-SigLIP2-256:webli"),
    "nllb-siglip-base": _open_clip_pair("nllb-siglip-base", "nllb-clip-base-siglip:mrl"),
    "nllb-siglip-large": _open_clip_pair("nllb-siglip-large", "nllb-clip-large-siglip:mrl"),
}


# Built-ins that are no search model: the frozen encoders a `train` starts from, whose
# spaces differ (512-d images, 384-d texts) until trained heads join them.
TRAIN_BASES = frozenset({"hanclip-base", "hanclip-base-datacomp"})
# The built-in names `--model` takes for searching and indexing, as `hanclip models` lists them.
SEARCH_BUILTINS = tuple(name for name in BUILTIN_BUNDLES if name not in TRAIN_BASES)


def unknown_model(
    name: str, *, builtins: Iterable[str] = SEARCH_BUILTINS, installed: Iterable[str] = ()
) -> UnknownModel:
    """The error for a model name that names nothing, with the names that would: the
    built-ins (`builtins`) and the bundles installed in the library (`installed`)."""
    known = ", ".join(sorted(builtins))
    names = sorted(installed)
    there = f", a bundle installed in the library ({', '.join(names)})" if names else ""
    return UnknownModel(
        f"unknown model {name!r}: not a built-in name ({known}){there}, nor a bundle directory"
    )


def not_a_search_model(name: str) -> BundleError:
    """`--model hanclip-base` for a search: say what it is and what to pass instead."""
    return BundleError(
        f"{name!r} is a base for `hanclip train --base-model`, not a search model: pass "
        f"--model with a bundle trained from it, or one of {', '.join(SEARCH_BUILTINS)}"
    )


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _resolve_image_model(spec: str, base: Path) -> str:
    if spec.startswith(LOCAL_DIR_PREFIX):
        local = Path(os.path.expanduser(spec[len(LOCAL_DIR_PREFIX) :]))
        if not local.is_absolute():
            local = base / local
        return LOCAL_DIR_PREFIX + str(local.resolve())
    return spec


def _resolve_text_model(spec: str, base: Path) -> str:
    source = clip_text_source(spec)
    if source is not None:
        if not source.strip():
            raise BundleError(f"{base / MANIFEST_NAME}: '{spec}' names no open_clip model")
        return clip_text_model(_resolve_image_model(source.strip(), base))
    return resolve_local(spec, base)


def read_bundle(directory: str | Path) -> BundleSpec:
    """Read and validate `hanclip.json` in `directory` (or the path of the file itself)."""
    path = Path(directory).expanduser()
    manifest = path if path.name == MANIFEST_NAME and path.is_file() else path / MANIFEST_NAME
    if not manifest.is_file():
        raise BundleError(f"no {MANIFEST_NAME} in {path}")
    base = manifest.parent.resolve()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {manifest}: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest}: expected a JSON object")
    if data.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{manifest}: unsupported bundle format {data.get('format')!r} "
            f"(this hanclip reads format {BUNDLE_FORMAT})"
        )
    for key in ("image_model", "text_model"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise BundleError(f"{manifest}: '{key}' must be a non-empty string")
    heads = data.get("heads")
    if heads is not None and (not isinstance(heads, str) or not heads.strip()):
        raise BundleError(f"{manifest}: 'heads' must be a file name or null")
    heads_path = None
    if heads is not None:
        heads_path = Path(heads).expanduser()
        heads_path = heads_path if heads_path.is_absolute() else base / heads_path
        if not heads_path.is_file():
            raise BundleError(f"{manifest}: heads file {heads_path} is missing")
    known = {"format", "name", "image_model", "text_model", "heads", "encoders"}
    encoders = _read_encoders(data.get("encoders"), manifest)
    return BundleSpec(
        name=str(data.get("name") or base.name),
        image_model=_resolve_image_model(data["image_model"].strip(), base),
        text_model=_resolve_text_model(data["text_model"].strip(), base),
        heads_path=heads_path,
        directory=base,
        extra={k: v for k, v in data.items() if k not in known},
        calibration=_read_calibration(data.get("calibration"), manifest),
        image_export=encoders.get("image"),
        text_export=encoders.get("text"),
        image_int8=bool(encoders.get("image_int8")),
    )


def _read_encoders(block: Any, manifest: Path) -> dict[str, Any]:
    """The `encoders` block: {"image": Path, "text": Path, "image_int8": bool}, what is there."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise BundleError(f"{manifest}: 'encoders' must be an object")
    found: dict[str, Any] = {}
    for side in ("image", "text"):
        value = block.get(side)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise BundleError(f"{manifest}: encoders '{side}' must be a folder name")
        folder = Path(value).expanduser()
        folder = folder if folder.is_absolute() else manifest.parent / folder
        if not folder.is_dir():
            raise BundleError(f"{manifest}: its ONNX {side} encoder {folder} is missing")
        found[side] = folder.resolve()
    int8 = block.get("image_int8", False)
    if not isinstance(int8, bool):
        raise BundleError(f"{manifest}: encoders 'image_int8' must be true or false")
    if int8 and "image" not in found:
        raise BundleError(f"{manifest}: encoders 'image_int8' needs an 'image' encoder")
    found["image_int8"] = int8
    return found


def record_encoders(
    directory: str | Path, *, image: str | None, text: str | None, image_int8: bool = False
) -> Path:
    """Name the bundle's ONNX encoders (folders inside it) in its `hanclip.json`, atomically,
    every other key kept as it was."""
    manifest = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {manifest}: {exc}") from None
    block = {"image": image, "text": text, "image_int8": image_int8}
    data["encoders"] = {k: v for k, v in block.items() if v is not None}
    atomic_write_text(manifest, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _read_calibration(block: Any, manifest: Path) -> Calibration | None:
    """The `calibration` block: None when absent or saying why there is none."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise BundleError(f"{manifest}: 'calibration' must be an object")
    if "a" not in block and "b" not in block and isinstance(block.get("uncalibrated"), str):
        return None
    values = {}
    for key in ("a", "b"):
        value = block.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BundleError(f"{manifest}: calibration '{key}' must be a number")
        if not math.isfinite(value):
            raise BundleError(f"{manifest}: calibration '{key}' must be finite, got {value}")
        values[key] = float(value)
    if values["a"] <= 0:
        raise BundleError(
            f"{manifest}: calibration 'a' must be positive (a higher score, a higher "
            f"probability), got {values['a']}"
        )
    return Calibration(a=values["a"], b=values["b"])


def resolve_bundle(path_or_name: str | Path) -> BundleSpec:
    """A built-in name (`mclip`, `hanclip-base`) or the path of a bundle directory. A name
    installed in a library is resolved to its path first (`hanclip_library.library`)."""
    key = str(path_or_name)
    if key in BUILTIN_BUNDLES:
        return BUILTIN_BUNDLES[key]
    path = Path(key).expanduser()
    if path.exists():
        return read_bundle(path)
    raise unknown_model(key, builtins=BUILTIN_BUNDLES)


def train_base(base_model: str | Path, image_tower: str | None = None) -> BundleSpec:
    """The frozen encoders `hanclip train` fits its heads on: those of `base_model` (a
    built-in name or a bundle directory), its image tower replaced by `image_tower` when
    given (an open_clip spec, or a built-in name whose image tower to take). A base whose
    text is its image model's own tower (`xlmr-b32`, `siglip2-b32`, ...) lends its image
    tower, and the text side is HanCLIP's sentence encoder (`hanclip-base`'s): the heads join
    a multilingual sentence space to that image space, as the method does for ViT-B/32. The
    heads' input width follows the towers: it is read from the banks."""
    spec = resolve_bundle(base_model)
    if clip_text_source(spec.text_model) is not None:
        spec = replace(spec, text_model=BUILTIN_BUNDLES["hanclip-base"].text_model)
    if image_tower:
        tower = (
            BUILTIN_BUNDLES[image_tower].image_model
            if image_tower in BUILTIN_BUNDLES
            else image_tower
        )
        spec = replace(spec, name=f"{spec.name}+{image_tower}", image_model=tower)
    return spec


def write_bundle(
    directory: str | Path,
    *,
    name: str,
    image_model: str,
    text_model: str,
    heads: str | None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `hanclip.json` into `directory` (atomically); `heads` is a file name inside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "image_model": image_model,
        "text_model": text_model,
        "heads": heads,
    }
    data.update(extra or {})
    manifest = directory / MANIFEST_NAME
    atomic_write_text(manifest, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return manifest
