"""Folders that held indexed photos: whether one is there now, and forgetting one.

`probe_folder` is the one test of "is this folder there". `index` hands its answers to the
planner (`index_plan`), which decides which folders are offline; `search` and `info` ask again
about the folders the last `index` recorded offline, so photos come back the moment their
folder does (a reader never writes the library: the next `index` records the change).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hanclip_cli.library import Library, library_dir
from hanclip_cli.store import DB_NAME, OfflineFolder, at_or_below
from hanclip_cli.vector_index import drop_removed_photos
from hanclip_model.errors import HanclipError

FolderState = Literal["present", "missing", "empty", "unreadable"]


def probe_folder(path: str) -> FolderState:
    """What is at `path` now: a folder listing at least one entry (or a file: a photo given
    as a root) is "present"; a folder with no entries at all (an unmounted mount point looks
    like this) is "empty"; a folder that cannot be listed (permission, I/O error, a stale
    network mount) is "unreadable"."""
    try:
        with os.scandir(path) as entries:
            return "present" if next(entries, None) is not None else "empty"
    except NotADirectoryError:
        return "present" if os.path.exists(path) else "missing"
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def still_offline(folders: Iterable[OfflineFolder]) -> list[OfflineFolder]:
    """The recorded offline folders that are not back yet."""
    return [folder for folder in folders if probe_folder(folder.path) != "present"]


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
