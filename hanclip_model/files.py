"""Writing files so that a reader, or a crash, never sees half of one.

Every file hanclip rewrites in place (a bundle manifest, the HNSW pointer, a training
checkpoint, an export's config) goes through `atomic_path`: the new bytes are written to a
temporary file beside the target, flushed to the disk, and renamed over the target with
`os.replace`, which POSIX makes atomic within one file system. A reader opens the old file or
the new one; a killed process leaves the old file and, at worst, a `*.tmp` that the next
writer of the same name ignores. A write that fails for want of room, a read-only disk or a
vanished drive raises `StorageError`, which says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hanclip_model.storage import storage_error

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """A fresh name beside `path`: `{name}.{random}.tmp`, so two writers never share one."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")


def fsync_file(path: str | Path) -> None:
    """Flush a written file's bytes to the disk (a rename alone may reach it first)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; when the block ends without
    an error it is fsynced and renamed over `path`, otherwise it is removed (and a storage
    failure raised as `StorageError`)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        mode = _new_file_mode(tmp)
        yield tmp
        fsync_file(tmp)
        # Some writers make their files private (safetensors: 0600); every file hanclip
        # writes gets the mode of any new file here, so a bundle's files share one mode.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except Exception as exc:
        # Explained while the temporary file still holds the space it took.
        error = storage_error(exc, path.parent)
        if error is None:
            raise
        raise error from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path, *, saving: str, what: str = "folder") -> Iterator[Path]:
    """Yield a fresh, empty staging folder beside the folder `path` (`.{name}.tmp-{pid}`);
    when the block ends without an error it replaces `path` whole (`replace_dir`), and either
    way it is gone afterwards. For writers that may lose the errno of a full disk (ONNX
    Runtime, numpy): a failure is explained by the state of the disk, asked while the staging
    folder still holds the space it took, and raised as `StorageError` (its role `what`, the
    consequence `saving`) when it is a storage failure."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        yield staging
        replace_dir(staging, path)
    except Exception as exc:
        error = storage_error(exc, path.parent, what=what, unexplained_write=True)
        if error is None:
            raise
        raise error.saving(saving) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_file_mode(path: Path) -> int:
    """The mode a file created at `path` gets (the umask applied), learnt by creating it:
    reading the umask would change it for a moment for every thread."""
    with open(path, "xb"):
        pass
    mode = stat.S_IMODE(path.stat().st_mode)
    path.unlink()
    return mode


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text, whatever the locale."""
    atomic_write_bytes(path, text.encode("utf-8"))


def preallocate(path: str | Path) -> None:
    """Give the file `path` its disk blocks now, keeping its content. A memory map written
    into a file with holes dies of SIGBUS when the disk fills up; after this, a full disk
    is an ENOSPC here instead. (Where the platform has no posix_fallocate, nothing is done.)"""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def replace_dir(source: Path, target: Path) -> None:
    """Move the folder `source` to `target`, replacing whatever is there, with no moment at
    which `target` holds half a tree (the old one is renamed away first, then removed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def link_tree(source: Path, target: Path) -> None:
    """Copy the folder `source` to `target`, hard-linking files where the disk allows: for
    large files that are never changed in place (a rewrite replaces the file)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
