"""A `hanclip search` answered by a `hanclip serve` already running on the same library.

A cold search pays for loading the HNSW index: a quarter of a second at 100k photos, seconds
at a million. A running server holds it in memory, kept current with SQLite (it checks
`PRAGMA data_version` before every search, so an `index` that committed is in the next
answer). So `hanclip serve` writes `serve.json` into the library folder while it answers (its
URL, process id, library and model fingerprint), and `search` asks it first:

* only when the file is there (no file: nothing else is done, not even a stat more), its
  process is alive, and it serves this library with the very model `search` would use
  (the fingerprint: encoders and the heads' bytes);
* only for what the server's API can say exactly (`SearchRequest.said_by_params`): words
  (no photos as queries, no --add or --sub), at most `MAX_PAGE` hits, filters with absolute
  folders; and no --html, no --device;
* the answer must name the same library and fingerprint; anything else (no answer within
  the timeouts, an error, another server on that port) and `search` runs on its own, as it
  always did. The server never takes the writer lock, so an `index` is never held up.

A large library gets such a server without asking: after a search of its own over at least
`RESIDENT_MIN_PHOTOS` photos, `search` starts `hanclip serve --port 0 --idle-exit 600` in the
background (`start_resident_server`; its own session, no terminal, nothing printed), which
answers the searches that follow and stops by itself after ten minutes without one. One
start at a time (`serve.starting`, made exclusively); none on a read-only library, none where
the system cannot spawn a process without a shell (POSIX `posix_spawn`), none with
`HANCLIP_RESIDENT=0`.

`HANCLIP_VIA_SERVER=0` turns asking off. The answer has the fields of `search --json`; scores
agree with a search of its own to about 1e-6 (the server's text encoder is set up for many
queries, see `HanclipModel.few_texts`), rankings are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hanclip_model import settings
from hanclip_model.files import atomic_write_text

if TYPE_CHECKING:
    from hanclip_library.request import Params

SERVER_FILE = "serve.json"
STARTING_FILE = "serve.starting"
# Below this many photos a cold search loads its index in a tenth of a second: no server.
RESIDENT_MIN_PHOTOS = 50_000
RESIDENT_IDLE_S = 600.0
# A start that has not announced its server after this long has failed: the next may try.
STARTING_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 0.5
# A server refreshing a large index after an `index` commit answers late, not wrongly.
ANSWER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int
    library: str
    fingerprint: str


def write_server_file(directory: Path, url: str, fingerprint: str) -> bool:
    """Announce this process's server in `directory`; False where the folder is read-only
    (then searches simply do not find it)."""
    from hanclip_library.store import read_only_folder

    if read_only_folder(directory):
        return False
    record = {
        "url": url,
        "pid": os.getpid(),
        "library": str(directory),
        "fingerprint": fingerprint,
    }
    try:
        atomic_write_text(directory / SERVER_FILE, json.dumps(record) + "\n")
    except OSError:
        return False
    with contextlib.suppress(OSError):
        (directory / STARTING_FILE).unlink()
    return True


def remove_server_file(directory: Path) -> None:
    """Withdraw the announcement, if it is still this process's."""
    found = read_server_file(directory)
    if found is not None and found.pid == os.getpid():
        with contextlib.suppress(OSError):
            (directory / SERVER_FILE).unlink()


def read_server_file(directory: Path) -> RunningServer | None:
    try:
        data = json.loads((directory / SERVER_FILE).read_text(encoding="utf-8"))
        return RunningServer(
            url=str(data["url"]),
            pid=int(data["pid"]),
            library=str(data["library"]),
            fingerprint=str(data["fingerprint"]),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def running_server(directory: Path) -> RunningServer | None:
    """The server announced in `directory` while its process lives; None otherwise, and
    None when asking servers is turned off (`HANCLIP_VIA_SERVER=0`)."""
    if not settings.VIA_SERVER.enabled():
        return None
    return _live_server(directory)


def _live_server(directory: Path) -> RunningServer | None:
    """The server announced in `directory` while its process lives."""
    found = read_server_file(directory)
    if found is None or found.library != str(directory):
        return None
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's: its answer is still checked by `ask_server`
    return found


def ask_server(server: RunningServer, params: Params) -> dict | None:
    """The server's `/api/search` answer to `params`, when it is an answer for this library
    and model; None for anything else (the caller then searches on its own)."""
    # Imported here: a search with no server announced pays nothing for them.
    import http.client
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(server.url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    query = urlencode(params)
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port or 80, timeout=CONNECT_TIMEOUT_S
    )
    try:
        connection.connect()
        connection.sock.settimeout(ANSWER_TIMEOUT_S)
        connection.request("GET", f"/api/search?{query}", headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return None
        answer = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    if not isinstance(answer, dict):
        return None
    if answer.get("library") != server.library or answer.get("fingerprint") != server.fingerprint:
        return None
    return answer


def start_resident_server(directory: Path, model: str, photos: int) -> bool:
    """Start a background `hanclip serve` for the searches that follow, when the library is
    large enough and none runs or is starting (see the module docstring); True if started."""
    if not settings.RESIDENT.enabled() or not hasattr(os, "posix_spawn"):
        return False
    from hanclip_library.store import read_only_folder

    if read_only_folder(directory):
        return False  # it could not announce itself, and nothing is written there
    if photos < settings.RESIDENT_MIN_PHOTOS.number(RESIDENT_MIN_PHOTOS):
        return False
    if _live_server(directory) is not None:
        return False
    if not _claim_start(directory / STARTING_FILE):
        return False
    import sys

    idle = settings.RESIDENT_IDLE_S.number(RESIDENT_IDLE_S)
    argv = [sys.executable, "-m", "hanclip_cli", "serve", "--library", str(directory)]
    argv += ["--model", model, "--host", "127.0.0.1", "--port", "0", "--idle-exit", str(idle)]
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    env = {**os.environ, settings.RESIDENT.name: "0"}
    try:
        os.posix_spawn(sys.executable, argv, env, file_actions=quiet, setsid=True)
    except OSError:
        with contextlib.suppress(OSError):
            (directory / STARTING_FILE).unlink()
        return False
    return True


def _claim_start(marker: Path) -> bool:
    """Make `marker` exclusively; one older than STARTING_TIMEOUT_S is a failed start."""
    import time

    for _ in range(2):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            try:
                age = time.time() - marker.stat().st_mtime
            except OSError:
                continue
            if age < STARTING_TIMEOUT_S:
                return False
            with contextlib.suppress(OSError):
                marker.unlink()
        except OSError:
            return False  # a read-only library: searches go on without a server
    return False
