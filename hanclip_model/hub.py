"""Loading an encoder whose weights may come from the Hugging Face hub: quietly, and, when they
cannot be fetched, in one line that says what to do.

open_clip and sentence-transformers fetch through huggingface_hub, which retries a hub it
cannot reach with backoff (five tries for each file, and open_clip asks for two) and logs
every attempt on its own stderr handler; open_clip's module-level `logging.error` also gives
the root logger a stderr handler for the rest of the process. Around each load (`fetching`)
the root logger gets a NullHandler and huggingface_hub's logger shows errors only. Where the
hub cannot be reached at all (one TCP connection, not tried behind a proxy, whose rules only
huggingface_hub's client knows), the load runs in huggingface_hub's offline mode: a model in
the local cache loads as before, a missing one fails at once, with no retries. The online
path is unchanged.

A bundle lives on the hub as a repository of its own (`hf-hub:ORG/REPO[@REVISION]`):
`download_snapshot` fetches one with `snapshot_download` (into the Hugging Face cache, resumed
where an interrupted download stopped, its bytes reported to a callback) and `upload_files`
commits one (`create_repo`, then one commit of every file). Whatever the hub answers
(missing repository or revision, offline, refused, a download cut short) becomes one
`HubError` line. Where the hub is comes from huggingface_hub (`HF_ENDPOINT`), the token too
(`HF_TOKEN`, or its login).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from hanclip_model.errors import BundleError, HanclipError
from hanclip_model.onnx_runtime import root_logger_muted

OFFLINE_ADVICE = (
    "with no network, pass --model with a bundle on this machine (hanclip-demo DIR makes a "
    "tiny one), or set HF_HUB_OFFLINE=1 to use only models already downloaded; see "
    "'Trying it without network' in the README"
)
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_PROBE_SECONDS = 5.0


@contextmanager
def fetching(what: str, spec: str, *, remote: bool) -> Iterator[None]:
    """Around loading `what` (e.g. "image model") `spec`; `remote`: its weights may come from
    the hub. A `BundleError` raised inside while the hub is out of reach becomes one that
    names what could not be fetched and what to do (`OFFLINE_ADVICE`)."""
    if not remote:
        yield
        return
    from huggingface_hub import constants

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    offline_before = constants.HF_HUB_OFFLINE
    offline = offline_before or not hub_reachable()
    hub_logger.setLevel(logging.ERROR)
    constants.HF_HUB_OFFLINE = offline
    try:
        with root_logger_muted():
            yield
    except BundleError as exc:
        if not offline:
            raise
        where = "offline mode is on" if offline_before else "the hub cannot be reached"
        raise BundleError(
            f"cannot fetch {what} {spec!r} from the Hugging Face hub ({where}) and it is not "
            f"in the local cache: {OFFLINE_ADVICE}"
        ) from exc
    finally:
        constants.HF_HUB_OFFLINE = offline_before
        hub_logger.setLevel(level)


@cache
def hub_reachable() -> bool:
    """Whether a connection to the hub's host opens (asked once per process); True behind a
    proxy, which huggingface_hub's client goes through and this check would not."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), _PROBE_SECONDS):
            return True
    except OSError:
        return False


# -- bundle repositories ---------------------------------------------------------------------

HUB_PREFIX = "hf-hub:"
# The hub's own rule for a model id: a namespace and a name, each of letters, digits, `-`,
# `_`, `.` (not starting with one of the last three).
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN_ADVICE = "set HF_TOKEN to a token that may write there, or log in with `hf auth login`"


class HubError(HanclipError):
    """The hub could not be reached, refused, or sent something incomplete."""


@dataclass(frozen=True)
class HubRepo:
    """A bundle repository on the hub, at a revision (a branch, tag or commit; None: main)."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str) -> HubRepo:
        """`hf-hub:ORG/REPO[@REVISION]` (the prefix optional), refused in words when no id."""
        text = spec.removeprefix(HUB_PREFIX).strip()
        repo_id, at, revision = text.partition("@")
        if not _REPO_ID.fullmatch(repo_id) or (at and not revision.strip()):
            raise HubError(
                f"{spec!r} is no hub repository: write {HUB_PREFIX}ORG/REPO, or "
                f"{HUB_PREFIX}ORG/REPO@REVISION for a branch, tag or commit"
            )
        return cls(repo_id, revision.strip() or None)

    def __str__(self) -> str:
        return HUB_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_spec(spec: str) -> bool:
    return spec.startswith(HUB_PREFIX)


@dataclass(frozen=True)
class Snapshot:
    """A repository downloaded into the Hugging Face cache: its files, at one commit."""

    repo: HubRepo
    path: Path
    commit: str


@dataclass(frozen=True)
class Transfer:
    """How far a download has come, in bytes (`total` grows as each file starts)."""

    done: int
    total: int


def download_snapshot(
    repo: HubRepo, on_progress: Callable[[Transfer], None] | None = None
) -> Snapshot:
    """Every file of `repo` at its revision, in the Hugging Face cache (files already there
    are not fetched again; a file cut short is resumed by the next call)."""
    from huggingface_hub import snapshot_download

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retries are ours to report, in one line
    try:
        path = snapshot_download(
            repo.repo_id, revision=repo.revision, tqdm_class=_reporting_bars(on_progress)
        )
    except _failures() as exc:
        raise _download_error(repo, exc) from None
    finally:
        hub_logger.setLevel(level)
    # The cache keeps each commit's files under snapshots/<commit>.
    return Snapshot(repo, Path(path), Path(path).name)


@dataclass(frozen=True)
class UploadFile:
    """One file of a commit: its path in the repository, and a file here or its bytes."""

    path_in_repo: str
    content: Path | bytes


@dataclass(frozen=True)
class Published:
    repo_id: str
    url: str
    commit: str


def upload_files(
    repo_id: str, files: Sequence[UploadFile], *, message: str, private: bool = False
) -> Published:
    """Create the model repository `repo_id` when it does not exist, then commit `files`
    into it as one commit (files it holds and `files` does not name are kept)."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise HubError(f"cannot publish to {repo_id}: offline mode is on (unset HF_HUB_OFFLINE)")
    token = get_token()
    if not token:
        raise HubError(f"publishing to {repo_id} needs a Hugging Face token: {_TOKEN_ADVICE}")
    api = HfApi(token=token)
    operations = [
        CommitOperationAdd(
            path_in_repo=f.path_in_repo,
            path_or_fileobj=f.content if isinstance(f.content, bytes) else str(f.content),
        )
        for f in files
    ]
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        commit = api.create_commit(repo_id, operations=operations, commit_message=message)
    except _failures() as exc:
        raise _upload_error(repo_id, exc) from None
    return Published(repo_id, f"{api.endpoint}/{repo_id}", str(commit.oid))


def _reporting_bars(on_progress: Callable[[Transfer], None] | None) -> type | None:
    """A progress-bar class for `snapshot_download` that draws nothing and reports the bytes
    fetched to `on_progress`; None (huggingface_hub's own bars) without one.

    snapshot_download gives this class to its bars: a count of files and (in huggingface_hub
    ≥ 1) byte bars, each told every byte of every file. Their largest count and total are
    the download's, whatever number of byte bars a version keeps."""
    if on_progress is None:
        return None
    from huggingface_hub.utils import tqdm as hub_tqdm

    lock = threading.Lock()
    byte_bars: list[ReportingBar] = []

    class ReportingBar(hub_tqdm):
        def __init__(self, *args, **kwargs):
            counts_bytes = kwargs.get("unit") == "B"
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)
            if counts_bytes:
                with lock:
                    byte_bars.append(self)

        def update(self, n=1):
            with lock:
                self.done += int(n or 0)
            self._report()

        def refresh(self, *args, **kwargs):
            self._report()  # a total that grew

        def _report(self) -> None:
            if self not in byte_bars:
                return
            with lock:
                total = max(int(bar.total or 0) for bar in byte_bars)
                done = max(bar.done for bar in byte_bars)
            on_progress(Transfer(done=min(done, total) if total else done, total=total))

    return ReportingBar


@cache
def _failures() -> tuple[type[BaseException], ...]:
    """What a hub call raises when the hub answers no or cannot be reached: huggingface_hub's
    errors are OSErrors (or ValueErrors, for an id it refuses); its HTTP client's errors are
    its own, whichever client this version uses."""
    found: list[type[BaseException]] = [OSError, ValueError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            found.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _download_error(repo: HubRepo, exc: BaseException) -> HubError:
    from huggingface_hub import constants, errors

    where = constants.ENDPOINT
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(
            f"{repo.repo_id} on the hub ({where}) has no revision {repo.revision!r}; "
            "nothing was installed"
        )
    if isinstance(exc, errors.GatedRepoError):
        return HubError(
            f"{repo.repo_id} on the hub is gated: accept its terms on its page, then "
            + _TOKEN_ADVICE
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(
            f"no repository {repo.repo_id} on the hub ({where}); nothing was installed (a "
            f"private one needs a token: {_TOKEN_ADVICE})"
        )
    if isinstance(exc, errors.LocalEntryNotFoundError):
        cause = (
            "offline mode is on (HF_HUB_OFFLINE)"
            if constants.HF_HUB_OFFLINE
            else f"the hub ({where}) cannot be reached"
        )
        return HubError(
            f"cannot fetch {repo}: {cause} and it is not in the local cache; nothing was installed"
        )
    if "Consistency check failed" in str(exc):
        return HubError(
            f"the download of {repo} was cut short ({_first_line(exc)}); nothing was installed: "
            "run the same command again (the files fetched already are kept in the cache)"
        )
    status = _status(exc)
    answer = f"answered {status}" if status else "failed"
    return HubError(
        f"fetching {repo} from the hub ({where}) {answer}: {_first_line(exc)}; "
        "nothing was installed"
    )


def _upload_error(repo_id: str, exc: BaseException) -> HubError:
    from huggingface_hub import constants

    status = _status(exc)
    if status in (401, 403):
        return HubError(f"the hub refused the upload to {repo_id} ({status}): {_TOKEN_ADVICE}")
    answer = f"answered {status}" if status else "failed"
    return HubError(
        f"publishing to {repo_id} on the hub ({constants.ENDPOINT}) {answer}: {_first_line(exc)}"
    )
