"""Memory banks: corpora encoded once by the frozen encoders, cached on disk as `.npy`.

A bank is keyed by a fingerprint of what went in (the kind, the encoder spec, every caption
or every image path with its size and mtime), so a second `train` on the same corpus reads
it back instantly. Encoding writes into a memory-mapped `.partial.npy` and records how many
rows are done after each batch: an interrupted run continues where it stopped, be it killed or
stopped by a full, read-only or vanished disk (a `StorageError` that counts the rows kept).

Texts are encoded a batch at a time. Photos stream through a `torch.utils.data.DataLoader`:
worker processes decode and preprocess the next batches while the image tower runs on this
one, and each batch is written as it comes out, so resuming works the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hanclip_model.device import is_cuda, usable_cores
from hanclip_model.encoders import ClipEncoder
from hanclip_model.errors import ImageLoadError
from hanclip_model.files import atomic_write_text, preallocate
from hanclip_model.images import load_image
from hanclip_model.storage import storage_error

EncodeBatch = Callable[[Sequence[str]], np.ndarray]

# Rows per bank batch, (CPU, CUDA). A batch is one progress record (an fsync) and what a
# killed run can lose; a photo batch is also one forward pass, and each DataLoader worker
# holds up to two of them ahead (0.6 MB of pixels a photo at 224 px).
_BANK_BATCH_SIZES = {"image": (32, 128), "text": (256, 4096)}


def bank_batch_size(kind: str, device: str) -> int:
    """Rows per bank batch for `kind` "image" or "text" (both caption banks) on `device`."""
    cpu, cuda = _BANK_BATCH_SIZES[kind]
    return cuda if is_cuda(device) else cpu


def bank_fingerprint(kind: str, encoder_spec: str, items: Sequence[str]) -> str:
    sha = hashlib.sha256(f"{kind}\n{encoder_spec}\n".encode())
    for item in items:
        sha.update(item.encode("utf-8", "surrogateescape"))
        if kind == "image":
            st = os.stat(item)
            sha.update(f"\t{st.st_size}\t{st.st_mtime_ns}".encode())
        sha.update(b"\n")
    return sha.hexdigest()[:24]


def encode_bank(
    items: Sequence[str],
    encoder: EncodeBatch | ImageBankEncoder,
    dim: int,
    path: Path,
    *,
    batch_size: int = 256,
    on_rows: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Encode `items` into `path` ([len(items), dim] float32), resuming a partial file.

    `encoder` is called on one batch of items at a time, or streams them (an
    `ImageBankEncoder`). Returns the finished bank memory-mapped read-only. `on_rows(n)`
    reports progress, including rows already done by an earlier run.
    """
    if path.is_file():
        bank = np.load(path, mmap_mode="r")
        if on_rows:
            on_rows(len(bank))
        return bank
    partial = path.with_name(path.stem + ".partial.npy")
    state_file = path.with_name(path.stem + ".progress.json")
    done = 0
    try:
        done = _rows_done(partial, state_file, (len(items), dim))
        path.parent.mkdir(parents=True, exist_ok=True)
        if done == 0:
            np.lib.format.open_memmap(
                partial, mode="w+", dtype=np.float32, shape=(len(items), dim)
            ).flush()
        preallocate(partial)
        bank = np.load(partial, mmap_mode="r+")
        if on_rows and done:
            on_rows(done)
        # closing(): an interrupted stream shuts its DataLoader workers down at once.
        with closing(_row_blocks(encoder, items[done:], batch_size)) as blocks:
            for rows in blocks:
                bank[done : done + len(rows)] = rows
                bank.flush()
                # Written only after the rows are on disk: a crash never claims rows it lacks.
                atomic_write_text(state_file, json.dumps({"rows_done": done + len(rows)}))
                done += len(rows)
                if on_rows:
                    on_rows(len(rows))
        if done != len(items):
            raise RuntimeError(f"the encoder gave {done} rows for {len(items)} items")
        del bank
        os.replace(partial, path)
        state_file.unlink(missing_ok=True)
    except Exception as exc:
        error = storage_error(exc, path.parent, what="bank cache folder")
        if error is None:
            raise
        raise error.saving(f"{done} of {len(items)} rows of {path.name} kept") from exc
    return np.load(path, mmap_mode="r")


def _row_blocks(
    encoder: EncodeBatch | ImageBankEncoder, items: Sequence[str], batch_size: int
) -> Iterator[np.ndarray]:
    """The rows of `items` in order, one block per batch."""
    if isinstance(encoder, ImageBankEncoder):
        yield from encoder.stream(items, batch_size)
        return
    for start in range(0, len(items), batch_size):
        yield encoder(items[start : start + batch_size])


def _rows_done(partial: Path, state_file: Path, shape: tuple[int, int]) -> int:
    """Rows an earlier run finished in `partial`; 0 when there is none of this shape."""
    if not (partial.is_file() and state_file.is_file()):
        return 0
    try:
        done = int(json.loads(state_file.read_text())["rows_done"])
        found = np.load(partial, mmap_mode="r")
    except (ValueError, KeyError, TypeError):
        return 0
    return done if found.shape == shape else 0


class PhotoDataset(Dataset):
    """Photos decoded (`load_image`) and preprocessed for the image tower, in DataLoader
    workers: item i is (pixels, readable); an unreadable photo gives blank pixels and False."""

    def __init__(
        self, paths: Sequence[str], preprocess: Callable[[Any], torch.Tensor], min_side: int
    ):
        # The paths packed into two arrays: forked workers share them page for page, where
        # the reference counts of a list of a million str objects would be touched, and so
        # copied into every worker, one page at a time.
        encoded = [os.fsencode(path) for path in paths]
        self.path_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.path_ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self.preprocess = preprocess
        self.min_side = min_side
        # The blank's shape is whatever the preprocess makes of an image (crop or resize).
        self.blank_shape = tuple(preprocess(Image.new("RGB", (min_side, min_side))).shape)

    def __len__(self) -> int:
        return len(self.path_ends)

    def path(self, index: int) -> str:
        start = int(self.path_ends[index - 1]) if index else 0
        return os.fsdecode(self.path_bytes[start : self.path_ends[index]].tobytes())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool]:
        try:
            image = load_image(self.path(index), self.min_side).image
        except ImageLoadError:
            return torch.zeros(self.blank_shape), False
        return self.preprocess(image), True


def loader_workers(device: str, cores: int | None = None) -> int:
    """DataLoader workers decoding photos: none on one core (decoding then runs between
    forward passes); beside a GPU every core but the one driving it, since decoding is
    the slower half there; beside a CPU image tower, which takes the cores itself and is the
    slower half (benchmarks/train_throughput.py), a quarter of them."""
    cores = cores or usable_cores()
    if cores <= 1:
        return 0
    return cores - 1 if is_cuda(device) else max(1, cores // 4)


@dataclass(frozen=True)
class ImageBankEncoder:
    """Photo paths to raw CLIP embeddings through a DataLoader; unreadable photos become
    all-zero rows (`drop_empty_rows` leaves them out of training)."""

    clip: ClipEncoder
    workers: int

    def stream(self, paths: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
        """Rows of `paths` in order, one [batch, dim] block per batch."""
        clip = self.clip
        loader = DataLoader(
            PhotoDataset(paths, clip.preprocess, clip.image_size),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=is_cuda(clip.device),
        )
        for pixels, readable in loader:
            readable = readable.numpy()
            if not readable.any():
                yield np.zeros((len(readable), clip.dim), dtype=np.float32)
                continue
            # Blank pixels run through the tower with the rest (rare, and the batch stays
            # in pinned memory); their rows are zeroed.
            rows = clip.embed_pixels(pixels)
            rows[~readable] = 0.0
            yield rows


def image_batch_encoder(clip: ClipEncoder, workers: int | None = None) -> ImageBankEncoder:
    """The photo encoder for `encode_bank`, with `loader_workers` workers unless given."""
    return ImageBankEncoder(clip, loader_workers(clip.device) if workers is None else workers)


def drop_empty_rows(bank: np.ndarray) -> np.ndarray:
    """Rows of unreadable photos are zero; leave them out of training."""
    norms = np.linalg.norm(bank, axis=1)
    return bank if bool(np.all(norms > 0)) else np.asarray(bank)[norms > 0]
