"""`hanclip forget PATH`: drop what the library holds at or below a folder, on the user's word.

For a drive or folder that is gone for good: its photos stay offline (kept) until the user says
so. Nothing on disk but the library is touched, and `path` is not even looked at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hanclip_library.library import Library, library_dir
from hanclip_library.store import DB_NAME, at_or_below
from hanclip_library.vector_index import drop_removed_photos
from hanclip_model.errors import HanclipError


@dataclass(frozen=True)
class ForgetReport:
    """What `forget` removed from the library (never anything on disk but the library)."""

    library: str
    path: str
    photos: int
    offline_folders: int
    failures: int
    roots: tuple[str, ...]


def forget_folder(library: Path | None, path: Path) -> ForgetReport:
    """Remove what the library holds at or below `path` (photos, offline records, failures,
    and the roots there), without looking at `path`: for a drive that is gone for good."""
    directory = library_dir(library)
    if not (directory / DB_NAME).exists():
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    target = os.path.abspath(os.path.expanduser(path))
    with Library(directory, create=True) as lib, lib.writer_lock():
        forgotten = lib.store.forget_under(target)
        roots = lib.meta.roots
        dropped = tuple(str(r) for r in roots if at_or_below(str(r), target))
        if not (forgotten.photos or forgotten.offline_folders or forgotten.failures or dropped):
            raise HanclipError(f"the library {directory} holds nothing at or below {target}")
        if dropped:
            lib.meta.roots = [r for r in roots if str(r) not in dropped]
        drop_removed_photos(directory, lib.store)
    return ForgetReport(
        str(directory),
        target,
        forgotten.photos,
        forgotten.offline_folders,
        forgotten.failures,
        dropped,
    )
