"""What a failed write means to a user: a full disk, a read-only one, a drive that is gone.

Writers report these three ways. Python's own files, torch and onnx raise an OSError with its
errno; SQLite says it in a fixed message ("database or disk is full") and Rust writers
(safetensors) end theirs with "(os error 28)"; and some say nothing of the cause: numpy's short
writes, hnswlib and ONNX Runtime lose the errno, and SQLite's "disk I/O error" is also how it
reports a full disk or a pulled-out drive. `storage_error` reads the first two; for the third
it asks the folder itself (`disk_state`), right after the failure and before the writer
cleans up: a removed temporary file would free the space again.

A damaged database ("malformed", "not a database", an I/O error on a disk that is neither
full, read-only nor gone), a locked one, a bad input or a bug is not a storage failure:
`storage_error` returns None and the error goes on as it came.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path

from hanclip_model.errors import HanclipError, StorageError

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY = frozenset({errno.EROFS})
DENIED = frozenset({errno.EACCES, errno.EPERM})
GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ESTALE})
FAILING = frozenset({errno.EIO})
STORAGE_ERRNOS = FULL | READ_ONLY | DENIED | GONE | FAILING

# SQLite's fixed texts (sqlite3ErrStr) for the storage failures that name their cause.
_SQLITE_ERRNOS = {
    "database or disk is full": errno.ENOSPC,
    "attempt to write a readonly database": errno.EROFS,
}
# SQLite's texts that name no cause (an I/O error is also a full disk on which SQLite cannot
# grow its shared-memory file): the folder is asked.
_SQLITE_VAGUE = ("disk i/o error", "unable to open database file")
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
# A writer that lost the errno of a full disk leaves it at (nearly) no free bytes; below this
# no write worth making fits.
NEARLY_FULL_BYTES = 1 << 20


def storage_error(
    exc: BaseException,
    where: Path | None,
    *,
    what: str = "folder",
    unexplained_write: bool = False,
) -> StorageError | None:
    """What `exc`, raised while writing below the folder `where`, means to the user; None when
    it is no storage failure.

    `what` names the folder's role in the message ("library folder"). `where` None takes the
    folder of the file the error names. `unexplained_write`: `exc` came from a writer that may
    lose the errno, so whatever it raised is explained by the state of `where`. An error
    already explained deeper down (by `files.atomic_path`) is explained again for `where`.
    """
    if isinstance(exc, StorageError):
        cause = exc.__cause__
        again = storage_error(cause, where, what=what) if cause is not None else None
        return again or exc
    if isinstance(exc, HanclipError):
        return None
    code = _reported_errno(exc)
    named = _path_named_by(exc)
    if where is None:
        where = named.parent if named is not None else None
        if code in GONE and (where is None or os.path.isdir(where)):
            return None  # a file that is not there, not a folder that went away
    elif named is not None and not (_within(named, where) or _within(where, named)):
        return None  # about another file (a photo being read, say), not this folder
    if code is None and (unexplained_write or _says_not_why(exc)):
        code = disk_state(where)
    return _words(code, where, what) if code in STORAGE_ERRNOS else None


def _path_named_by(exc: BaseException) -> Path | None:
    named = getattr(exc, "filename", None)
    return Path(os.path.abspath(os.fsdecode(named))) if isinstance(named, (str, bytes)) else None


def _within(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _reported_errno(exc: BaseException) -> int | None:
    """The errno `exc` carries, in whichever form its writer put it."""
    if isinstance(exc, OSError):
        return exc.errno
    message = str(exc).lower()
    if isinstance(exc, sqlite3.Error):
        return next((c for text, c in _SQLITE_ERRNOS.items() if message.startswith(text)), None)
    found = _RUST_OS_ERROR.search(message)
    return int(found.group(1)) if found else None


def _says_not_why(exc: BaseException) -> bool:
    """An error that says that a write (or an open for writing) failed, but not why."""
    if isinstance(exc, OSError):
        return exc.errno is None
    return isinstance(exc, sqlite3.Error) and str(exc).lower().startswith(_SQLITE_VAGUE)


def disk_state(where: Path | None) -> int | None:
    """Why a write below `where` may have failed, asked of the folder: its errno when it
    cannot be looked at (gone), EROFS when its disk is mounted read-only, ENOSPC when the disk
    is (nearly) full, EACCES when this user may not write it; None when it looks writable."""
    if where is None:
        return None
    try:
        disk = os.statvfs(where)
    except OSError as exc:
        return exc.errno
    if disk.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if disk.f_bavail * disk.f_frsize < NEARLY_FULL_BYTES:
        return errno.ENOSPC
    if not os.access(where, os.W_OK):
        return errno.EACCES
    return None


def unwritable(where: Path, *, what: str = "folder") -> StorageError:
    """Why the folder `where`, found unwritable before anything was written, is so."""
    code = disk_state(where)
    return _words(code if code in STORAGE_ERRNOS else errno.EACCES, where, what)


def _words(code: int, where: Path | None, what: str) -> StorageError:
    """The words for storage errno `code` met while writing below `where`. A folder that has
    disappeared is named as such whatever the errno: a drive pulled out mid-write shows up as
    an I/O error, a missing file or a read-only database."""
    reconnect = "reconnect the drive"
    if where is not None and not os.path.isdir(where):
        return StorageError(f"the {what} {where} is no longer there (drive unplugged?)", reconnect)
    disk = f"the disk holding {where}" if where is not None else "a disk hanclip writes to"
    folder = f"the {what} {where}" if where is not None else f"a {what} hanclip writes to"
    if code in FULL:
        return StorageError(f"{disk} is full", "free some space")
    if code in READ_ONLY:
        return StorageError(f"{disk} is read-only", "make it writable")
    if code in DENIED:
        return StorageError(
            f"{folder} is read-only for this user (permission denied)", "make it writable"
        )
    if code in GONE:
        return StorageError(f"files in {folder} are no longer there (drive unplugged?)", reconnect)
    return StorageError(f"{disk} reports an input/output error (failing or unplugged?)", "check it")
