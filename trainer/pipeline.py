"""What `hanclip train` runs: banks from corpora or from embedding files, training, a bundle."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanclip_model.bundle import resolve_bundle
from hanclip_model.encoders import ClipEncoder, TextEncoder
from hanclip_model.errors import HanclipError
from hanclip_model.heads import l2_normalize
from hanclip_model.images import iter_image_files
from trainer.banks import bank_fingerprint, drop_empty_rows, encode_bank, image_batch_encoder
from trainer.corpus import read_captions
from trainer.train import (
    TrainBanks,
    TrainConfig,
    TrainProgress,
    TrainResult,
    train_heads,
    write_trained_bundle,
)

STATE_DIR = ".train-state"


@dataclass(frozen=True)
class CorpusInputs:
    """Raw corpora: English and target-language captions, a folder of unlabeled photos."""

    english: Path
    korean: Path
    images: Path
    base_model: str  # a bundle or built-in name: its encoders are the frozen ones


@dataclass(frozen=True)
class EmbeddingInputs:
    """Precomputed float32 [N, D] embeddings; row i of both English files is one caption."""

    english_clip: Path
    english_text: Path
    korean: Path
    images: Path
    image_model: str
    text_model: str


@dataclass
class PreparedBanks:
    banks: TrainBanks
    image_model: str
    text_model: str
    info: dict[str, object]


BankProgress = Callable[[str, int, int], None]  # (bank name, rows just done, total rows)


def _load_matrix(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise HanclipError(f"{what} file not found: {path}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise HanclipError(f"cannot read {what} file {path}: {exc}") from None
    if array.ndim != 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.floating):
        raise HanclipError(
            f"{path}: expected a non-empty float [rows, dim] array, got {array.shape}"
        )
    sample = np.asarray(array[: min(len(array), 256)], dtype=np.float32)
    if array.dtype == np.float32 and np.allclose(np.linalg.norm(sample, axis=1), 1.0, atol=1e-3):
        return array
    # Soft retrieval and the losses assume unit vectors.
    return l2_normalize(np.asarray(array, dtype=np.float32))


def load_embedding_banks(inputs: EmbeddingInputs) -> PreparedBanks:
    english_clip = _load_matrix(inputs.english_clip, "English CLIP embedding")
    english_text = _load_matrix(inputs.english_text, "English text embedding")
    korean = _load_matrix(inputs.korean, "Korean embedding")
    images = _load_matrix(inputs.images, "image embedding")
    if english_clip.shape[0] != english_text.shape[0]:
        raise HanclipError(
            f"{inputs.english_clip} has {english_clip.shape[0]} rows but {inputs.english_text} "
            f"has {english_text.shape[0]}: row i of both must be the same English caption"
        )
    if images.shape[1] != english_clip.shape[1]:
        raise HanclipError(
            f"image embeddings are {images.shape[1]}-d but English CLIP embeddings are "
            f"{english_clip.shape[1]}-d: both must come from the same CLIP model"
        )
    if korean.shape[1] != english_text.shape[1]:
        raise HanclipError(
            f"Korean embeddings are {korean.shape[1]}-d but English text embeddings are "
            f"{english_text.shape[1]}-d: both must come from the same text encoder"
        )
    banks = TrainBanks(english_clip, english_text, images, korean)
    return PreparedBanks(banks, inputs.image_model, inputs.text_model, {"source": "embeddings"})


def build_corpus_banks(
    inputs: CorpusInputs,
    cache_dir: Path,
    *,
    device: str | None = None,
    batch_size: int = 256,
    progress: BankProgress | None = None,
) -> PreparedBanks:
    """Encode the corpora with the base bundle's frozen encoders (cached, resumable)."""
    spec = resolve_bundle(inputs.base_model)
    english = read_captions(inputs.english)
    korean = read_captions(inputs.korean)
    if not inputs.images.is_dir():
        raise HanclipError(f"image folder not found: {inputs.images}")
    photos = list(iter_image_files(inputs.images))
    if not photos:
        raise HanclipError(f"no photos found in {inputs.images}")
    clip = ClipEncoder(spec.image_model, device=device)
    text = TextEncoder(spec.text_model, device=device)

    def bank(name: str, kind: str, encoder_spec: str, items: list[str], encode, dim: int):
        path = cache_dir / f"{name}-{bank_fingerprint(kind, encoder_spec, items)}.npy"
        report = (lambda rows: progress(name, rows, len(items))) if progress else None
        return encode_bank(items, encode, dim, path, batch_size=batch_size, on_rows=report)

    english_clip = bank(
        "english-clip", "clip_text", spec.image_model, english, clip.embed_texts, clip.dim
    )
    english_text = bank("english-text", "text", spec.text_model, english, text.embed, text.dim)
    korean_bank = bank("korean-text", "text", spec.text_model, korean, text.embed, text.dim)
    image_bank = bank(
        "images", "image", spec.image_model, photos, image_batch_encoder(clip), clip.dim
    )
    readable = drop_empty_rows(image_bank)
    if len(readable) == 0:
        raise HanclipError(f"none of the photos in {inputs.images} could be read")
    banks = TrainBanks(english_clip, english_text, readable, korean_bank)
    info = {
        "source": "corpora",
        "english": str(inputs.english),
        "korean": str(inputs.korean),
        "images": str(inputs.images),
        "unreadable_images": int(len(image_bank) - len(readable)),
        "base_model": spec.name,
    }
    return PreparedBanks(banks, spec.image_model, spec.text_model, info)


def train_bundle(
    prepared: PreparedBanks,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    name: str,
    progress: Callable[[TrainProgress], None] | None = None,
) -> tuple[TrainResult, Path]:
    """Train and write the bundle; state for resuming lives in `out_dir/.train-state`."""
    state = out_dir / STATE_DIR
    result = train_heads(prepared.banks, cfg, progress=progress, checkpoint_dir=state)
    banks_info = {**prepared.banks.sizes(), **prepared.info}
    manifest = write_trained_bundle(
        result,
        out_dir,
        name=name,
        image_model=prepared.image_model,
        text_model=prepared.text_model,
        cfg=cfg,
        banks_info=banks_info,
    )
    shutil.rmtree(state, ignore_errors=True)
    return result, manifest
