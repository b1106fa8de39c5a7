"""`hanclip serve` under load: many clients for a fixed time while `hanclip watch` commits.

    python benchmarks/serve_load.py [--work DIR] [--clients 16] [--seconds 60] [--photos 10000]
    python benchmarks/serve_load.py --short          # a few clients, a few seconds, tiny bundle

A `hanclip serve` on a library of real 12-MP JPEGs topped up with synthetic rows (the library
of `serve_latency.py`, kept under `--work`; each run works on a copy) answers `--clients`
clients for `--seconds` seconds. Each client keeps one connection and asks, with no pause, a
mix of searches (a new Korean text each time), cached thumbnails, timeline pages (when the
server has /api/timeline), similar photos and original files (one download in three dropped
after its first chunk). Meanwhile a `hanclip watch` process (its own connection to the
library, as a user's would be) is given a new photo every `--copy-every` seconds: once its row
is committed, the very next request (a search of the watched folder) must hold it, and its
first thumbnail is asked for (a thumbnail made, not cached).

Reported: requests per second; p50/p99 per endpoint; errors (anything but the answer asked
for; the run must have none); commits made and seen; the server's RSS, sampled from
/proc/PID/status, its peak and its growth from the first window of the run to the last (a
minute each, a third of a shorter run); its file handles before and after; the CPU the
server and the clients used (both run on this machine). Targets (issue 26): 0 errors, every
commit seen, search p99 <= 150 ms, cached thumbnail p99 <= 100 ms, RSS growth <= 10 %.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchkit import entry
from benchkit.figures import Check, Spread, Target
from benchkit.inputs import (
    PHOTO_SIZE,
    PHRASES,
    ensure_photos,
    korean_queries,
    prepare_inputs,
    tiny_bundle,
)
from benchkit.load import (
    EndpointFigures,
    MemoryFigures,
    RequestFailed,
    RssSampler,
    Tally,
    cpu_s,
    open_fds,
)
from benchkit.processes import BenchmarkError, LoadSampler, LoadSummary, log
from benchkit.server import Server, running_server
from benchkit.workspace import Workspace, default_work, isolated_env, isolated_process
from serve_latency import Library, build_library

REPO = Path(__file__).resolve().parents[1]
ERRORS = Target("errors", "errors (any answer but the one asked for)", "<=", 0)
MISSED = Target("commits_missed", "commits missing from the next answer", "<=", 0)
SEARCH_P99 = Target("search_p99_ms", "search p99", "<=", 150.0, " ms")
THUMBNAIL_P99 = Target("thumbnail_cached_p99_ms", "thumbnail p99 (cached)", "<=", 100.0, " ms")
RSS_GROWTH = Target("rss_growth_percent", "server RSS growth, first to last", "<=", 10.0, " %")

PAGE = 30  # n of a search or similar: the web page's grid
TIMELINE_PAGE = 60
TIMELINE_DEPTH = 5  # pages a client scrolls before it starts from the top again
HANG_UP_EVERY = 3  # one original download in this many is dropped after its first chunk
# What a client asks, and how often (weights).
MIX = (
    ("search", 35),
    ("thumbnail_cached", 25),
    ("timeline", 15),
    ("similar", 10),
    ("original", 15),
)
# Every endpoint's row, in the report's order ("commit_check": the writer's search of the
# watched folder right after a commit; "thumbnail_first": a new photo's first thumbnail).
KEYS = ("search", "similar", "timeline", "thumbnail_cached", "thumbnail_first", "original")
WRITER_KEYS = ("commit_check",)
REQUEST_TIMEOUT_S = 60.0
COMMIT_DEADLINE_S = 120.0  # a copied photo not committed by then: the watch is stuck
WATCH_START_DEADLINE_S = 300.0  # the watch's start and its first photo (a model to load)
POLL_S = 0.02
INCOMING_SEED = 100_000  # the writer's photos: other pictures than the library's
# What the server prints when an answer fails: routes.py's log line, uvicorn's, a traceback.
SERVER_ERRORS = ("error answering", "Exception in ASGI", "Traceback")


@dataclass(frozen=True)
class Sizes:
    clients: int = 16
    seconds: float = 60.0
    photos: int = 10_000  # the library, synthetic rows included
    real_photos: int = 12  # indexed JPEGs: thumbnails and originals
    photo_size: tuple[int, int] = PHOTO_SIZE
    copy_every_s: float = 2.0
    tiny: bool = False  # the tests' tiny bundle instead of the real-size random one


SHORT = Sizes(
    clients=4,
    seconds=5.0,
    photos=300,
    real_photos=4,
    photo_size=(640, 480),
    copy_every_s=0.5,
    tiny=True,
)


@dataclass(frozen=True)
class Commits:
    """The writer's photos: copied in during the run, each committed by the watch."""

    made: int
    seen: int  # in the first answer after their commit
    commit_s: Spread | None  # copy finished to its row in SQLite

    @property
    def missed(self) -> int:
        return self.made - self.seen


@dataclass(frozen=True)
class Run:
    """What the clients and the writer measured, and what the server did meanwhile."""

    clients_s: float  # from the start to the last client's last answer
    tally: Tally
    commits: Commits
    memory: MemoryFigures | None
    server_fds_before: int | None
    server_fds_after: int | None
    server_cpu_s: float | None
    client_cpu_s: float  # this process: the clients and the writer


@dataclass(frozen=True)
class Results:
    library_photos: int
    real_photos: int
    clients: int
    seconds: float
    bundle: str
    cores: int
    load_average: LoadSummary
    timeline: str  # "asked", or why not
    requests_made: int  # answered, failed or dropped on purpose
    errors: int
    error_messages: tuple[str, ...]
    hang_ups: int  # original downloads dropped on purpose
    endpoints: tuple[EndpointFigures, ...]
    commits: Commits
    memory: MemoryFigures | None
    server_fds_before: int | None
    server_fds_after: int | None
    server_error_lines: int  # lines of the server's output that report an error
    server_cpu_s: float | None
    client_cpu_s: float
    clients_s: float
    work: str
    wall_s: float

    @property
    def requests_per_s(self) -> float:
        return self.requests_made / self.clients_s

    def _p99(self, key: str) -> float | None:
        return next(row.p99_ms for row in self.endpoints if row.key == key)

    @property
    def search_p99_ms(self) -> float | None:
        return self._p99("search")

    @property
    def thumbnail_cached_p99_ms(self) -> float | None:
        return self._p99("thumbnail_cached")

    @property
    def rss_growth_percent(self) -> float | None:
        return None if self.memory is None else self.memory.growth_percent

    @property
    def commits_missed(self) -> int:
        return self.commits.missed


def checks(results: Results) -> list[Check]:
    return [
        Check.of(ERRORS, results.errors + results.server_error_lines),
        Check.of(MISSED, results.commits_missed),
        Check.of(SEARCH_P99, results.search_p99_ms),
        Check.of(THUMBNAIL_P99, results.thumbnail_cached_p99_ms),
        Check.of(RSS_GROWTH, results.rss_growth_percent),
    ]


def command(*args: str) -> list[str]:
    """`hanclip ARGS...` from this checkout."""
    return [sys.executable, "-m", "hanclip_cli", *args]


def query_texts() -> Iterator[str]:
    """Distinct Korean texts, endlessly: the phrases, then the phrases numbered 2, 3, ..."""
    phrases = korean_queries(PHRASES)
    for round_ in itertools.count(1):
        for text in phrases:
            yield text if round_ == 1 else f"{text} {round_}"


@dataclass
class Scene:
    """What the clients ask about."""

    library: Library
    timeline: bool
    texts: Iterator[str]


# -- one request of each kind: its answer checked; raises RequestFailed --------------------


async def ask_json(client: httpx.AsyncClient, path: str, params: dict) -> dict:
    response = await client.get(path, params=params)
    if response.status_code != 200:
        raise RequestFailed(f"{path}: {response.status_code} {response.text[:200]}")
    return response.json()


async def ask_jpeg(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    if response.status_code != 200:
        raise RequestFailed(f"{path}: {response.status_code} {response.text[:200]}")
    if response.headers.get("content-type") != "image/jpeg" or not response.content:
        raise RequestFailed(f"{path}: no JPEG in the answer")


async def search(client: httpx.AsyncClient, text: str) -> None:
    if not (await ask_json(client, "/api/search", {"q": text, "n": PAGE}))["results"]:
        raise RequestFailed(f"search {text!r}: no results")


async def download(client: httpx.AsyncClient, photo_id: int, hang_up: bool) -> bool:
    """The original, whole (True), or dropped after its first chunk (False)."""
    path = f"/api/photos/{photo_id}/original"
    async with client.stream("GET", path) as response:
        if response.status_code != 200:
            raise RequestFailed(f"{path}: {response.status_code}")
        expected, got = int(response.headers["content-length"]), 0
        async for chunk in response.aiter_raw():
            if hang_up:
                return False  # leaving the block closes the connection mid-body
            got += len(chunk)
    if got != expected:
        raise RequestFailed(f"{path}: {got} of {expected} bytes")
    return True


class Client:
    """One client: one connection, one request after another until `stop_at`."""

    def __init__(self, number: int, scene: Scene, tally: Tally) -> None:
        self.rng = random.Random(number)
        self.scene, self.tally = scene, tally
        self.cursor: str | None = None  # the timeline page to ask next
        self.pages = 0
        self.downloads = 0
        kinds = [(k, w) for k, w in MIX if scene.timeline or k != "timeline"]
        self.kinds, self.weights = [k for k, _ in kinds], [w for _, w in kinds]

    async def timeline(self, client: httpx.AsyncClient) -> None:
        params: dict[str, object] = {"n": TIMELINE_PAGE}
        if self.cursor is not None:
            params["cursor"] = self.cursor
        body = await ask_json(client, "/api/timeline", params)
        if not body["months"]:
            raise RequestFailed(f"timeline {params}: no photos")
        self.pages += 1
        self.cursor = body["cursor"] if self.pages < TIMELINE_DEPTH else None
        if self.cursor is None:  # the end, or deep enough: from the top again
            self.pages = 0

    async def ask(self, client: httpx.AsyncClient, kind: str) -> bool:
        """One request of `kind`; False when it was dropped on purpose."""
        library, rng = self.scene.library, self.rng
        if kind == "search":
            await search(client, next(self.scene.texts))
        elif kind == "similar":
            photo = rng.choice(library.all_ids)
            await ask_json(client, f"/api/photos/{photo}/similar", {"n": PAGE})
        elif kind == "timeline":
            await self.timeline(client)
        elif kind == "thumbnail_cached":
            await ask_jpeg(client, f"/api/photos/{rng.choice(library.real_ids)}/thumbnail")
        else:
            self.downloads += 1
            hang_up = self.downloads % HANG_UP_EVERY == 0
            return await download(client, rng.choice(library.real_ids), hang_up)
        return True

    async def run(self, url: str, stop_at: float) -> float:
        """Requests until `stop_at`; perf_counter at the last answer."""
        async with httpx.AsyncClient(
            base_url=url, timeout=REQUEST_TIMEOUT_S, trust_env=False
        ) as client:
            while time.perf_counter() < stop_at:
                kind = self.rng.choices(self.kinds, self.weights)[0]
                await timed(self.tally, kind, self.ask(client, kind))
        return time.perf_counter()


async def timed(tally: Tally, key: str, request) -> bool:
    """Await `request`, its latency or its failure tallied under `key`; whether it
    succeeded."""
    start = time.perf_counter()
    try:
        whole = await request
    except (RequestFailed, httpx.HTTPError, ValueError, KeyError) as exc:
        tally.failed(key, str(exc) or type(exc).__name__)
        return False
    if whole is False:
        tally.hang_ups += 1
    else:
        tally.answered(key, time.perf_counter() - start)
    return True


# -- the writer: photos copied into the watched folder, each looked for once committed ----


def photo_id(library: Path, path: Path) -> int | None:
    try:
        uri = f"file:{library / 'library.db'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=0.1)) as conn:
            row = conn.execute("SELECT id FROM photos WHERE path = ?", [str(path)]).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else int(row[0])


async def committed(library: Path, path: Path, alive: Callable[[], bool]) -> int:
    """The id of `path`'s row once the watch has committed it."""
    deadline = time.perf_counter() + COMMIT_DEADLINE_S
    while (found := await asyncio.to_thread(photo_id, library, path)) is None:
        if not alive():
            raise BenchmarkError("hanclip watch exited during the run")
        if time.perf_counter() > deadline:
            raise BenchmarkError(f"{path}: not committed within {COMMIT_DEADLINE_S:.0f} s")
        await asyncio.sleep(POLL_S)
    return found


async def visible(client: httpx.AsyncClient, folder: Path, path: Path) -> bool:
    """Whether the server's answer right now holds `path` (a search of its folder)."""
    params = {"q": "사진", "in": str(folder), "n": 200}
    body = await ask_json(client, "/api/search", params)
    return str(path) in {hit["path"] for hit in body["results"]}


@dataclass
class Writer:
    url: str
    library: Path
    folder: Path  # watched
    sources: Sequence[Path]
    every_s: float
    alive: Callable[[], bool]

    async def add(self, client: httpx.AsyncClient, number: int) -> tuple[Path, int, float]:
        """Copy photo `number` in; (its path, its id, copy finished to commit)."""
        path = self.folder / f"new-{number:04d}.jpg"
        await asyncio.to_thread(shutil.copyfile, self.sources[number], path)
        done = time.perf_counter()
        found = await committed(self.library, path, self.alive)
        return path, found, time.perf_counter() - done

    async def run(self, stop_at: float, tally: Tally) -> Commits:
        """One photo every `every_s` until `stop_at` (the first is the warm-up's)."""
        seen, waits = 0, []
        async with httpx.AsyncClient(
            base_url=self.url, timeout=REQUEST_TIMEOUT_S, trust_env=False
        ) as client:
            for number in range(1, len(self.sources)):
                started = time.perf_counter()
                if started >= stop_at:
                    break
                path, found, wait = await self.add(client, number)
                waits.append(wait)
                answer = asyncio.ensure_future(visible(client, self.folder, path))
                if not await timed(tally, "commit_check", answer):
                    continue  # a failed request: tallied as an error, and not seen
                if answer.result():
                    seen += 1
                else:
                    tally.failed("commit_check", f"{path.name}: not in the answer after commit")
                await timed(tally, "thumbnail_first", ask_jpeg(client, thumbnail(found)))
                await asyncio.sleep(max(0.0, started + self.every_s - time.perf_counter()))
        return Commits(len(waits), seen, Spread.of(waits) if waits else None)


def thumbnail(photo: int) -> str:
    return f"/api/photos/{photo}/thumbnail"


# -- the run --------------------------------------------------------------------------


async def has_timeline(client: httpx.AsyncClient) -> bool:
    """Whether the server has /api/timeline (a 404: not yet)."""
    answer = await client.get("/api/timeline", params={"n": 1})
    if answer.status_code not in (200, 404):
        raise BenchmarkError(f"/api/timeline: {answer.status_code} {answer.text[:200]}")
    return answer.status_code == 200


async def warm_up(client: httpx.AsyncClient, scene: Scene, writer: Writer) -> None:
    """The watch's first photo committed (its model loaded), every real photo's thumbnail
    made, one request of each kind: the run measures a server in its steady state."""
    await writer.add(client, 0)
    for photo in scene.library.real_ids:
        await ask_jpeg(client, thumbnail(photo))
    await search(client, next(scene.texts))
    await ask_json(client, f"/api/photos/{scene.library.real_ids[0]}/similar", {"n": PAGE})
    await download(client, scene.library.real_ids[0], hang_up=False)
    if scene.timeline:
        await ask_json(client, "/api/timeline", {"n": TIMELINE_PAGE})


async def drive(server: Server, scene: Scene, writer: Writer, sizes: Sizes) -> Run:
    async with httpx.AsyncClient(
        base_url=server.url, timeout=REQUEST_TIMEOUT_S, trust_env=False
    ) as client:
        scene.timeline = await has_timeline(client)
        log("warm-up: the watch's first photo, thumbnails, one request of each kind")
        try:
            await warm_up(client, scene, writer)
        except RequestFailed as exc:
            raise BenchmarkError(f"warm-up: {exc}") from None
    tally, memory = Tally(), RssSampler(server.pid)
    fds_before, server_cpu, own_cpu = open_fds(server.pid), cpu_s(server.pid), time.process_time()
    log(f"run: {sizes.clients} clients for {sizes.seconds:g} s, a photo every {writer.every_s} s")
    start = time.perf_counter()
    stop_at = start + sizes.seconds
    memory.start()
    clients = [
        Client(number, scene, tally).run(server.url, stop_at) for number in range(sizes.clients)
    ]
    commits, *ends = await asyncio.gather(writer.run(stop_at, tally), *clients)
    clients_s = max(ends) - start
    await memory.stop()
    client_cpu = time.process_time() - own_cpu
    server_cpu_after = cpu_s(server.pid)
    await asyncio.sleep(1.0)  # the server sees the last connections close
    return Run(
        clients_s=clients_s,
        tally=tally,
        commits=commits,
        memory=memory.figures(clients_s),
        server_fds_before=fds_before,
        server_fds_after=open_fds(server.pid),
        server_cpu_s=None
        if server_cpu is None or server_cpu_after is None
        else server_cpu_after - server_cpu,
        client_cpu_s=client_cpu,
    )


@contextmanager
def running_watch(ws: Workspace, folder: Path, library: Path) -> Iterator[subprocess.Popen]:
    """`hanclip watch FOLDER --json` until the block ends (then SIGTERM, as a user stops
    it); its output goes to files in the work directory."""
    cmd = [*ws.hanclip, "watch", str(folder), "--library", str(library)]
    cmd += ["--model", str(ws.bundle), "--json", "--no-ocr"]
    out_path, err_path = ws.root / "watch-batches.jsonl", ws.root / "watch-stderr.log"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen(cmd, env=ws.env, stdout=out, stderr=err)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode not in (0, -15):
        tail = "\n".join(err_path.read_text("utf-8", "replace").splitlines()[-15:])
        raise BenchmarkError(f"hanclip watch exited {process.returncode}:\n{tail}")


def inputs_for(
    work: Path, sizes: Sizes, env: dict[str, str]
) -> tuple[str, Workspace, list[Path], list[Path]]:
    """(where the bundle came from, the workspace on it, the library's photos, the writer's
    photos), made once per work directory."""
    count = int(sizes.seconds / sizes.copy_every_s) + 2
    width, height = sizes.photo_size
    if sizes.tiny:
        root = work / "short"
        bundle, origin = tiny_bundle(work / "tiny"), "tiny"
        photos = ensure_photos(
            root / f"photos-{width}x{height}", sizes.real_photos, sizes.photo_size
        )
    else:
        root = work
        inputs = prepare_inputs(work, sizes.real_photos, None)
        bundle, origin, photos = inputs.bundle, inputs.bundle_origin, list(inputs.photos)
    log(f"writer: {count} photos of {width}x{height} to copy in")
    incoming = root / f"incoming-{width}x{height}"
    sources = ensure_photos(incoming, count, sizes.photo_size, first_seed=INCOMING_SEED)
    return origin, Workspace(root, bundle, env, hanclip=command()), photos, sources


def run_benchmark(work: Path, sizes: Sizes) -> Results:
    from hanclip_model.device import usable_cores

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)
    env.update(PYTHONPATH=str(REPO), HANCLIP_DEVICE="cpu", PYTHONUNBUFFERED="1")
    with isolated_process(env), LoadSampler(usable_cores()) as load:
        origin, ws, photos, sources = inputs_for(work, sizes, env)
        base = build_library(ws, photos, sizes.photos)
        library_path = ws.fresh("load-library")
        shutil.copytree(base.path, library_path)  # the run adds photos: the base stays as it is
        library = Library(library_path, base.photos_folder, base.all_ids, base.real_ids)
        folder = ws.fresh("load-incoming")
        folder.mkdir()
        folder = folder.resolve()
        load.probe("before server")
        log("server: starting; watch: starting")
        with (
            running_server(["--library", str(library_path)], ws.env) as server,
            running_watch(ws, folder, library_path) as watch,
        ):
            alive = lambda: watch.poll() is None  # noqa: E731
            writer = Writer(server.url, library_path, folder, sources, sizes.copy_every_s, alive)
            scene = Scene(library, False, query_texts())
            run = asyncio.run(drive(server, scene, writer, sizes))
            output = list(server.output)
        load.probe("end")
    tally = run.tally
    return Results(
        library_photos=len(library.all_ids),
        real_photos=len(library.real_ids),
        clients=sizes.clients,
        seconds=sizes.seconds,
        bundle=f"{ws.bundle} ({origin})",
        cores=usable_cores(),
        load_average=load.summary(),
        timeline="asked" if scene.timeline else "skipped: the server has no /api/timeline",
        requests_made=tally.requests,
        errors=tally.error_count,
        error_messages=tuple(tally.messages),
        hang_ups=tally.hang_ups,
        endpoints=tally.figures(KEYS + WRITER_KEYS),
        commits=run.commits,
        memory=run.memory,
        server_fds_before=run.server_fds_before,
        server_fds_after=run.server_fds_after,
        server_error_lines=sum(any(s in line for s in SERVER_ERRORS) for line in output),
        server_cpu_s=run.server_cpu_s,
        client_cpu_s=run.client_cpu_s,
        clients_s=run.clients_s,
        work=str(work),
        wall_s=time.perf_counter() - started,
    )


def parse_args(argv: Sequence[str] | None):
    example = "python benchmarks/serve_load.py --clients 16 --seconds 60 --json load.json"
    parser = entry.parser(__doc__, example, work="kept; default: user cache")
    parser.add_argument("--short", action="store_true", help="few clients, seconds, photos")
    parser.add_argument("--clients", type=int, help="concurrent clients (16; --short 4)")
    parser.add_argument("--seconds", type=float, help="length of the run (60; --short 5)")
    parser.add_argument("--photos", type=int, help="library size (10000; --short 300)")
    parser.add_argument("--copy-every", type=float, dest="copy_every_s", help="seconds (2)")
    args = parser.parse_args(argv)
    sizes = SHORT if args.short else Sizes()
    given = {
        name: getattr(args, name)
        for name in ("clients", "seconds", "photos", "copy_every_s")
        if getattr(args, name) is not None
    }
    sizes = Sizes(**{**sizes.__dict__, **given})
    if sizes.clients < 1 or sizes.seconds <= 0 or sizes.copy_every_s <= 0:
        parser.error("--clients must be at least 1, --seconds and --copy-every above 0")
    if sizes.photos < sizes.real_photos:
        parser.error(f"--photos must be at least {sizes.real_photos}")
    if int(sizes.seconds / sizes.copy_every_s) + 2 > 200:
        parser.error("at most 200 photos copied in a run: raise --copy-every")
    return args, sizes


def main(argv: Sequence[str] | None = None) -> int:
    args, sizes = parse_args(argv)
    work = (args.work or default_work("serve-load")).resolve()
    return entry.finish(
        lambda: run_benchmark(work, sizes),
        args.json_path,
        title="hanclip serve under load (offline: random weights; clients on the same machine)",
        checks=checks,
        errors=(httpx.HTTPError, subprocess.TimeoutExpired),
    )


if __name__ == "__main__":
    sys.exit(main())
