"""`hanclip watch`: keep a library in line with its folders while they change.

First a whole incremental `index` of the roots (what changed while nothing watched), then the
file system's own events (`watchfiles`, the binding of Rust's `notify` that uvicorn uses:
inotify, FSEvents, ReadDirectoryChangesW) gathered into batches. A batch goes through the
same plan and apply as `index` (`index_library`), `within` the paths its events name, so new,
changed, deleted, moved and copied photos, excludes and offline folders follow `index_plan`'s
rules and nothing else's.

- A path joins a batch once it and everything below it has been quiet for `settle_s`: a photo
  still being copied keeps sending events, so it is embedded once, complete. (A copy that
  stalls longer than that gives a file that does not decode yet: recorded as a failure, and
  retried when its size or time changes, as `index` does.)
- The writer lock is held per batch only, so an `index` or `forget` runs between two. A batch
  that finds it taken waits and tries again.
- A root that goes away (an unplugged drive, a folder renamed) is a batch of its own: the
  plan keeps its photos, offline. An unmount sends no file event, and a mount none at the
  mount point: the mount table is watched too (Linux: `/proc/self/mountinfo` wakes a poll),
  and the nearest existing folder of an offline root, not recursively, which also has the
  offline roots probed every OFFLINE_PROBE_S (one folder listed: the only timer, and only
  while a root is offline). When the root probes present again, it is one batch (its
  unchanged photos stay as they are: nothing is embedded again) and watched again.
- `stop()` (a signal handler may call it) lets the batch in hand finish and drops the rest:
  the next start catches up on it.

The watcher runs on the thread that opened the library (SQLite's rule); the event sources
are threads that only put what they see on one queue. It prints nothing: batches go to the
`WatchListener` the front end hands in.

A watch is background work: `in_background()` lowers the CPU priority of the thread that
will run it (and of the threads it starts: the model's among them) before the library is
opened, so a folder of new photos being embedded gives way to what a person is doing, a
search of the same server's page included (`benchmarks/serve_load.py`).
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Protocol

import watchfiles

from hanclip_library.folders import probe_folder
from hanclip_library.indexer import IndexOptions, IndexReport, index_library
from hanclip_library.library import LibraryBusy, OpenLibrary
from hanclip_library.progress import NO_PROGRESS, ProgressReporter
from hanclip_library.store import at_or_below
from hanclip_library.text_pass import TextReader
from hanclip_model.errors import HanclipError
from hanclip_model.images import (
    DEFAULT_EXCLUDES,
    PHOTO_EXTENSIONS,
    exclude_patterns,
    is_excluded,
)

MOUNT_TABLE = "/proc/self/mountinfo"
BACKGROUND_NICE = 10  # the CPU priority (nice value) a watch runs at, at least
OFFLINE_PROBE_S = 5.0  # an offline root is probed at least this often (`_EventThread`)


@dataclass(frozen=True)
class WatchOptions:
    """How `hanclip watch` runs; the defaults are the command's."""

    # The first, whole run; the batches keep its batch size and hidden rule, and use the
    # excludes it remembered.
    index: IndexOptions = IndexOptions()
    # Quiet time before a changed path is indexed: a copy writes on without pauses this long
    # (one that stalls longer gives a file that fails to decode, retried once it changes).
    settle_s: float = 0.5
    # Before trying again a lock another writer holds: a lock lets no event know when it is
    # free, and most holders are brief (every `search` takes it to bring the index file up
    # to date), so a batch tries soon, not after the next few searches.
    busy_retry_s: float = 0.05


@dataclass(frozen=True)
class BatchReport:
    """One applied batch: what `index` would report, and when."""

    report: IndexReport
    catch_up: bool  # the whole run at the start
    paths: int  # changed paths the batch covered (the catch-up: the roots)
    seconds: float  # from taking the lock to letting it go
    finished_at: str  # ISO 8601, local time with its offset

    def as_json(self) -> dict[str, object]:
        """As `hanclip watch --json` prints it, one line a batch."""
        return {
            "timestamp": self.finished_at,
            "seconds": round(self.seconds, 3),
            "catch_up": self.catch_up,
            "paths": self.paths,
            **self.report.as_json(),
        }


class WatchListener(Protocol):
    """Where a watch says what it does."""

    def watching(self, online: Sequence[str], offline: Sequence[str]) -> None:
        """The roots watched now, and those offline (waited for)."""

    def applied(self, batch: BatchReport) -> None: ...


@dataclass
class _Pending:
    """Changed paths not applied yet: each with the time of its last event."""

    last: dict[str, float] = field(default_factory=dict)

    def touch(self, paths: Iterable[str], now: float) -> None:
        for path in paths:
            self.last[path] = now

    def clusters(self) -> dict[str, float]:
        """Each top-most pending path, with the last event at or below it."""
        tops: dict[str, float] = {}
        top: str | None = None
        for path in sorted(self.last):
            if top is None or not at_or_below(path, top):
                top = path
                tops[top] = self.last[path]
            else:
                tops[top] = max(tops[top], self.last[path])
        return tops

    def take(self, paths: Iterable[str]) -> None:
        for path in paths:
            for pending in [p for p in self.last if at_or_below(p, path)]:
                del self.last[pending]


class _Signal:
    """A wake-up that carries no paths."""


_STOP = _Signal()  # `Watcher.stop()`
_PROBE = _Signal()  # something changed near an offline root: probe the roots
_MOUNTS = _Signal()  # the mount table changed: probe, and watch offline roots anew
_Item = _Signal | set | BaseException


class _EventThread:
    """One `watchfiles.watch` on a thread, putting what it sees on `put` until closed: the
    changes under `paths` that `keep` keeps, or (`keep` None: folders where an offline root
    may come back) a probe at any change there, and every OFFLINE_PROBE_S as well. A mount
    point is that case: the watch holds the folder under the mount, and a copy into a drive
    just mounted may come before the watch on it."""

    def __init__(
        self,
        paths: Sequence[str],
        put: Callable[[_Item], None],
        keep: Callable[[object, str], bool] | None,
    ) -> None:
        self._stop = threading.Event()
        tree = keep is not None

        def run() -> None:
            try:
                for changes in watchfiles.watch(
                    *paths,
                    watch_filter=keep,
                    stop_event=self._stop,
                    recursive=tree,
                    rust_timeout=0 if tree else round(OFFLINE_PROBE_S * 1000),
                    yield_on_timeout=not tree,
                    ignore_permission_denied=True,
                    raise_interrupt=False,
                ):
                    put(changes if tree else _PROBE)
            except BaseException as exc:
                if self._stop.is_set():
                    return
                # A folder gone as the watch began: the roots are probed again, and watched
                # anew. Anything else the watcher's thread raises (`_take`).
                gone = not all(os.path.exists(path) for path in paths)
                put(_PROBE if gone else exc)

        self._thread = threading.Thread(target=run, name="hanclip-watch-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _MountThread:
    """Wakes the watcher whenever the mount table changes (Linux): the kernel marks
    /proc/self/mountinfo for poll() on every mount and unmount, so it sleeps till then."""

    def __init__(self, put: Callable[[_Item], None]) -> None:
        self._wake_read, self._wake_write = os.pipe()

        def run() -> None:
            with open(MOUNT_TABLE, "rb") as table:
                poller = select.poll()
                poller.register(table, select.POLLPRI)
                poller.register(self._wake_read, select.POLLIN)
                poller.poll(0)  # the first poll reports the table as changed
                while True:
                    if any(fd == self._wake_read for fd, _ in poller.poll()):
                        return
                    put(_MOUNTS)

        self._thread = threading.Thread(target=run, name="hanclip-watch-mounts", daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.write(self._wake_write, b"x")
        self._thread.join()
        os.close(self._wake_read)
        os.close(self._wake_write)


def in_background(*, whole_process: bool = False) -> bool:
    """Lower the CPU priority of the calling thread to nice BACKGROUND_NICE (never raise it:
    a higher value already set stays), and so of the threads it starts from then on; with
    `whole_process` (a process that is nothing but the watch), of every thread it has. Linux
    gives each thread its own nice value; elsewhere only `whole_process` lowers anything,
    the whole process, where the system has `os.nice`. Whether it was lowered."""
    try:
        if sys.platform.startswith("linux"):
            own = os.listdir("/proc/self/task") if whole_process else ()
            for thread in {threading.get_native_id(), *map(int, own)}:
                current = os.getpriority(os.PRIO_PROCESS, thread)
                os.setpriority(os.PRIO_PROCESS, thread, max(current, BACKGROUND_NICE))
            return True
        if whole_process and hasattr(os, "nice"):
            os.nice(max(0, BACKGROUND_NICE - os.nice(0)))
            return True
    except OSError:
        pass  # not allowed here (a sandbox): the watch runs as it is
    return False


def _nearest_folder(path: str) -> str:
    """`path` if it is there, else the nearest folder above it that is."""
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    return path


class Watcher:
    """Keeps `opened` in line with `roots` until `stop()`; `run()` on the thread that opened
    it."""

    def __init__(
        self,
        opened: OpenLibrary,
        roots: Sequence[Path],
        options: WatchOptions,
        listener: WatchListener,
        *,
        progress: ProgressReporter = NO_PROGRESS,
        text_reader: TextReader | None = None,
    ) -> None:
        self._opened = opened
        self._roots = sorted({str(root) for root in roots})
        self._options = options
        self._listener = listener
        self._progress = progress
        # Opened once, not once a batch: opening an engine loads its models.
        self._reader = (
            None if text_reader is None else replace(text_reader, open=cache(text_reader.open))
        )
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._pending = _Pending()
        self._online: set[str] = set()
        self._tree: _EventThread | None = None  # the online roots, recursively
        self._waiting: _EventThread | None = None  # the nearest folders of the offline ones
        self._remounted = False
        self._stopping = False
        self._library = str(opened.directory)
        index = options.index
        remembered = () if index.reset_excludes else opened.meta.excludes
        # What the events' thread filters with (it may not read SQLite): the excludes as the
        # catch-up will remember them, then as each batch found them.
        self._patterns = (*DEFAULT_EXCLUDES, *exclude_patterns([*remembered, *index.exclude]))

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`. Safe in a signal handler: it
        only sets a flag and puts on a queue whose put is reentrant."""
        self._stopping = True
        self._queue.put(_STOP)

    def run(self) -> None:
        """The catch-up, then batch after batch until `stop()`; a watch that cannot go on
        (no events to be had) raises a HanclipError."""
        mounts = _MountThread(self._queue.put) if os.path.exists(MOUNT_TABLE) else None
        try:
            # Watched before the catch-up: what changes during it comes next.
            self._online = {root for root in self._roots if probe_folder(root) == "present"}
            self._watch_tree()
            self._watch_offline()
            self._announce()
            self._loop()
        finally:
            for thread in (self._tree, self._waiting):
                if thread is not None:
                    thread.close()
            if mounts is not None:
                mounts.close()

    def _loop(self) -> None:
        catch_up = True
        retry_at: float | None = None
        while not self._stopping:
            now = time.monotonic()
            if retry_at is None or now >= retry_at:
                if catch_up:
                    done = self._apply(self._roots, catch_up=True)
                    catch_up = not done
                    if done:
                        self._warm_up()
                else:
                    self._check_roots(now)
                    ready = self._ready(now)
                    done = not ready or self._apply(ready, catch_up=False)
                    if ready and done:
                        self._pending.take(ready)
                retry_at = None if done else now + self._options.busy_retry_s
            self._wait(self._timeout(retry_at))

    def _wait(self, timeout: float | None) -> None:
        """Block until an item comes (or `timeout` passes), then take every one there is."""
        try:
            self._take(self._queue.get(timeout=timeout))
            while True:
                self._take(self._queue.get_nowait())
        except queue.Empty:
            pass

    def _take(self, item: _Item) -> None:
        if isinstance(item, BaseException):
            raise HanclipError(f"cannot watch {', '.join(sorted(self._online))}: {item}") from item
        if isinstance(item, set):
            self._pending.touch((path for _, path in item), time.monotonic())
        elif item is _MOUNTS:
            self._remounted = True

    def _timeout(self, retry_at: float | None) -> float | None:
        """Seconds until the next pending path settles, or a lock is tried again; None: block
        until an event comes."""
        settle = self._options.settle_s
        due = [last + settle for last in self._pending.clusters().values()]
        if retry_at is not None:
            due.append(retry_at)
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _ready(self, now: float) -> list[str]:
        settle = self._options.settle_s
        return [path for path, last in self._pending.clusters().items() if now - last >= settle]

    def _check_roots(self, now: float) -> None:
        """A root gone or back is a change of its own: it joins the pending paths, and the
        watches follow. One gone is indexed at once (its photos go offline); one back once it
        has settled, as a drive still filling (a folder copied back) sends events."""
        online = {root for root in self._roots if probe_folder(root) == "present"}
        remounted, self._remounted = self._remounted, False
        if online == self._online:
            if remounted:  # a mount point's folder is another one now
                self._watch_offline()
            return
        self._pending.touch(self._online - online, now - self._options.settle_s)
        self._pending.touch(online - self._online, now)
        self._online = online
        self._watch_tree()
        self._watch_offline()
        self._announce()

    def _watch_tree(self) -> None:
        if self._tree is not None:
            self._tree.close()
        online = sorted(self._online)
        put = self._queue.put
        self._tree = _EventThread(online, put, self._keep) if online else None

    def _watch_offline(self) -> None:
        """Watch the nearest existing folder of each offline root (not recursively): any
        event there has the roots probed again."""
        if self._waiting is not None:
            self._waiting.close()
        offline = [root for root in self._roots if root not in self._online]
        nearest = sorted({_nearest_folder(root) for root in offline})
        put = self._queue.put
        self._waiting = _EventThread(nearest, put, None) if offline else None

    def _announce(self) -> None:
        offline = [root for root in self._roots if root not in self._online]
        self._listener.watching(sorted(self._online), offline)

    def _keep(self, change: object, path: str) -> bool:
        """Whether an event can matter to the library (on the events' thread): a photo's, a
        folder added, or anything deleted (a folder, perhaps), never the library's own files,
        a hidden or excluded name's (the plan rules again on what it is given)."""
        if at_or_below(path, self._library):
            return False
        root = max((r for r in self._roots if at_or_below(path, r)), key=len, default=None)
        if root is None:
            return False
        hidden = not self._options.index.include_hidden
        patterns = self._patterns
        for name in path[len(root.rstrip("/")) + 1 :].split("/") if path != root else ():
            if (hidden and name.startswith(".")) or is_excluded(name, patterns):
                return False
        if change == watchfiles.Change.deleted:
            return True
        if os.path.splitext(path)[1].lower() in PHOTO_EXTENSIONS:
            return True
        return change == watchfiles.Change.added and os.path.isdir(path)

    def _apply(self, paths: Sequence[str], *, catch_up: bool) -> bool:
        """Index `paths` under the lock; False when another writer holds it."""
        store = self._opened.store
        roots = [
            Path(root)
            for root in self._roots
            if any(at_or_below(path, root) for path in paths)
            and (os.path.exists(root) or store.ids_under([root]))
        ]
        if not roots:
            return True  # a root never indexed, gone before it was: nothing to do
        options = self._options.index
        if not catch_up:
            # The excludes the catch-up remembered (or an `index` since) hold.
            options = replace(options, exclude=(), reset_excludes=False, reocr=False)
        try:
            with self._opened.library.writer_lock():
                started = time.perf_counter()
                report = index_library(
                    self._opened,
                    roots,
                    options,
                    self._progress if catch_up else NO_PROGRESS,
                    self._reader,
                    within=None if catch_up else [Path(path) for path in paths],
                )
                seconds = time.perf_counter() - started
        except LibraryBusy:
            return False
        self._patterns = (*DEFAULT_EXCLUDES, *self._opened.meta.excludes)
        finished = datetime.now().astimezone().isoformat(timespec="seconds")
        self._listener.applied(BatchReport(report, catch_up, len(paths), seconds, finished))
        return True

    def _warm_up(self) -> None:
        """Load the image encoder now, so the first photo that comes is as quick as the
        next."""
        from PIL import Image

        model = self._opened.model
        model.raw_image_embeddings([Image.new("RGB", (model.image_size,) * 2)])


def watch_library(
    opened: OpenLibrary,
    roots: Sequence[Path],
    options: WatchOptions,
    listener: WatchListener,
    *,
    progress: ProgressReporter = NO_PROGRESS,
    text_reader: TextReader | None = None,
    started: Callable[[Watcher], None] = lambda watcher: None,
) -> None:
    """Watch until stopped: `started` is handed the watcher first (to stop it from a signal
    handler or another thread)."""
    watcher = Watcher(opened, roots, options, listener, progress=progress, text_reader=text_reader)
    started(watcher)
    watcher.run()
