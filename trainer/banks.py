"""Memory banks: corpora encoded once by the frozen encoders, cached on disk as `.npy`.

A bank is keyed by a fingerprint of what went in (the kind, the encoder spec, every caption
or every image path with its size and mtime), so a second `train` on the same corpus reads
it back instantly. Encoding writes into a memory-mapped `.partial.npy` and records how many
rows are done after each batch: an interrupted run continues where it stopped, be it killed or
stopped by a full, read-only or vanished disk (a `StorageError` that counts the rows kept).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hanclip_model.device import usable_cores
from hanclip_model.encoders import ClipEncoder
from hanclip_model.errors import ImageLoadError
from hanclip_model.files import atomic_write_text, preallocate
from hanclip_model.images import load_image
from hanclip_model.storage import storage_error

EncodeBatch = Callable[[Sequence[str]], np.ndarray]


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
    encode_batch: EncodeBatch,
    dim: int,
    path: Path,
    *,
    batch_size: int = 256,
    on_rows: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Encode `items` into `path` ([len(items), dim] float32), resuming a partial file.

    Returns the finished bank memory-mapped read-only. `on_rows(n)` reports progress,
    including rows already done by an earlier run.
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
        for start in range(done, len(items), batch_size):
            chunk = items[start : start + batch_size]
            bank[start : start + len(chunk)] = encode_batch(chunk)
            bank.flush()
            # Written only after the rows are on disk: a crash never claims rows it lacks.
            atomic_write_text(state_file, json.dumps({"rows_done": start + len(chunk)}))
            done = start + len(chunk)
            if on_rows:
                on_rows(len(chunk))
        del bank
        os.replace(partial, path)
        state_file.unlink(missing_ok=True)
    except Exception as exc:
        error = storage_error(exc, path.parent, what="bank cache folder")
        if error is None:
            raise
        raise error.saving(f"{done} of {len(items)} rows of {path.name} kept") from exc
    return np.load(path, mmap_mode="r")


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


def image_batch_encoder(clip: ClipEncoder, workers: int | None = None) -> EncodeBatch:
    """Decode photos in threads and embed them; an unreadable photo gets an all-zero row."""
    workers = workers or max(2, usable_cores())

    def decode(path: str):
        try:
            return load_image(path, clip.image_size).image
        except ImageLoadError:
            return None

    def encode(paths: Sequence[str]) -> np.ndarray:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            images = list(pool.map(decode, paths))
        out = np.zeros((len(paths), clip.dim), dtype=np.float32)
        readable = [i for i, im in enumerate(images) if im is not None]
        if readable:
            out[readable] = clip.embed_images([images[i] for i in readable])
        return out

    return encode


def drop_empty_rows(bank: np.ndarray) -> np.ndarray:
    """Rows of unreadable photos are zero; leave them out of training."""
    norms = np.linalg.norm(bank, axis=1)
    return bank if bool(np.all(norms > 0)) else np.asarray(bank)[norms > 0]
