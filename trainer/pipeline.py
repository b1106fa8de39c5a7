"""What `hanclip train` runs: banks from corpora or from embedding files, training, a bundle."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanclip_model.bundle import MANIFEST_NAME, train_base
from hanclip_model.device import pick_device
from hanclip_model.encoders import ClipEncoder, TextEncoder
from hanclip_model.errors import HanclipError
from hanclip_model.heads import l2_normalize
from hanclip_model.images import iter_image_files
from trainer.banks import (
    bank_batch_size,
    bank_fingerprint,
    drop_empty_rows,
    encode_bank,
    image_batch_encoder,
)
from trainer.card import write_card
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
    """Raw corpora: English and target-language captions, and the images: photo files to
    encode (`photos`), or raw CLIP embeddings of the base model's image encoder that exist
    already (`image_bank`: what `index` stored in a library)."""

    english: Sequence[str]
    target: Sequence[str]
    base_model: str  # a bundle or built-in name: its encoders are the frozen ones
    image_tower: str | None = None  # replaces the base's image tower (`train_base`)
    photos: Sequence[str] | None = None
    image_bank: np.ndarray | None = None
    language: str | None = None  # the target captions' language, recorded in the bundle
    sources: dict[str, object] = field(default_factory=dict)  # where each corpus came from


def photos_in(folder: Path) -> list[str]:
    """The photo files below `folder`, as `index` finds them."""
    if not folder.is_dir():
        raise HanclipError(f"image folder not found: {folder}")
    photos = list(iter_image_files(folder))
    if not photos:
        raise HanclipError(f"no photos found in {folder}")
    return photos


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
    batch_size: int | None = None,
    progress: BankProgress | None = None,
) -> PreparedBanks:
    """Encode the corpora with the base bundle's frozen encoders (cached, resumable); an
    `image_bank` given is used as it is (no photo is opened)."""
    if (inputs.photos is None) == (inputs.image_bank is None):
        raise HanclipError("give the images either as photo files or as an image bank")
    spec = train_base(inputs.base_model, inputs.image_tower)
    english = [*inputs.english]
    target = [*inputs.target]
    for what, captions in (("English", english), ("target-language", target)):
        if not captions:
            raise HanclipError(f"no {what} captions to train on")
    clip = ClipEncoder(spec.image_model, device=device)
    text = TextEncoder(spec.text_model, device=device)
    on = pick_device(device)  # asked of the rule, not of an encoder: that would load it

    def bank(name: str, kind: str, encoder_spec: str, items: list[str], encode, dim: int):
        path = cache_dir / f"{name}-{bank_fingerprint(kind, encoder_spec, items)}.npy"
        report = (lambda rows: progress(name, rows, len(items))) if progress else None
        # Per device unless given: a GPU takes much larger batches than a CPU.
        rows = batch_size or bank_batch_size("image" if kind == "image" else "text", on)
        return encode_bank(items, encode, dim, path, batch_size=rows, on_rows=report)

    english_clip = bank(
        "english-clip", "clip_text", spec.image_model, english, clip.embed_texts, clip.dim
    )
    english_text = bank("english-text", "text", spec.text_model, english, text.embed, text.dim)
    # Korean banks keep the name they had before other languages came.
    target_name = "korean" if inputs.language in (None, "ko") else inputs.language
    target_bank = bank(f"{target_name}-text", "text", spec.text_model, target, text.embed, text.dim)
    if inputs.image_bank is not None:
        readable = inputs.image_bank
        unreadable = 0
        if readable.ndim != 2 or len(readable) == 0:
            raise HanclipError("the image bank is empty")
        if readable.shape[1] != english_clip.shape[1]:
            raise HanclipError(
                f"the image bank is {readable.shape[1]}-d but {spec.image_model!r} gives "
                f"{english_clip.shape[1]}-d vectors: it comes from another image model"
            )
        readable = l2_normalize(np.asarray(readable, dtype=np.float32))
    else:
        photos = [*inputs.photos]
        image_bank = bank(
            "images", "image", spec.image_model, photos, image_batch_encoder(clip), clip.dim
        )
        readable = drop_empty_rows(image_bank)
        unreadable = int(len(image_bank) - len(readable))
        if len(readable) == 0:
            raise HanclipError("none of the photos could be read")
    banks = TrainBanks(english_clip, english_text, readable, target_bank)
    info = {
        "source": "corpora",
        **inputs.sources,
        "unreadable_images": unreadable,
        "base_model": spec.name,
        "language": inputs.language,
    }
    return PreparedBanks(banks, spec.image_model, spec.text_model, info)


def check_out_dir(out_dir: Path, *, force: bool) -> None:
    """Refuse to train over a finished bundle in `out_dir` unless `force`. A run stopped there
    (its `STATE_DIR` is left) goes on: its checkpoint says whether it belongs to this run."""
    if force or not (out_dir / MANIFEST_NAME).is_file() or (out_dir / STATE_DIR).is_dir():
        return
    raise HanclipError(
        f"{out_dir} holds a trained bundle already: choose another --out, or --force to replace it"
    )


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
    write_card(out_dir)  # MODEL_CARD.md, from the manifest just written
    shutil.rmtree(state, ignore_errors=True)
    return result, manifest
