"""Folders that held indexed photos: whether one is there now.

`probe_folder` is the one test of "is this folder there". `index` hands its answers to the
planner (`index_plan`), which decides which folders are offline; `search` and `info` ask again
about the folders the last `index` recorded offline, so photos come back the moment their
folder does (a reader never writes the library: the next `index` records the change).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

from hanclip_library.store import OfflineFolder

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
