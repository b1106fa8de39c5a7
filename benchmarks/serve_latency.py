"""`hanclip serve`'s API latency on a 10,000-photo library, measured in one offline run.

The issue's claim: the server keeps the text model loaded and the HNSW index in memory, so a
query answers in tens of milliseconds, where each `hanclip search` process loads them anew.
One run measures, with real-size random-weight models (the bundle of `benchmarks/speed.py`:
ViT-B/32 and a MiniLM-L12-size text model with a 250k-piece Unigram tokenizer):

* start-up: `hanclip serve --port 0` from spawn to its URL line and to its first answer;
* warm latency, the client's wall time per request over one keep-alive connection, p50, p90,
  p99, min and max: `GET /api/search?q=...&n=30`, the same filtered by date and folder (a
  broad filter that keeps the synthetic rows, a narrow one that keeps the real photos), a
  second page (`offset=30`), `/api/photos/ID/similar?n=30`, and a real photo's thumbnail
  made the first time and then from the cache. Every query text is new (generated Korean
  phrases), so no cache can answer one;
* the cold CLI: the median wall time of `hanclip search` processes on the same library, and
  its ratio to the server's p50.

The library: a few generated 12-MP JPEGs (phone-size, so a first thumbnail costs what it
costs on a phone photo) indexed with `hanclip index`, topped up with synthetic rows (random
embeddings, paths under /synthetic) to `--photos`. The bundle, the photos, the library and
the fast text encoder's export are kept under `--work` (default: a folder in the user cache)
and reused by the next run: the first run spends a minute or two making them.

The report goes to stdout (progress to stderr), ending with the target `server search p50
<= 50 ms`; the process exits 0 whether or not the target is met, and non-zero only when a
measurement could not be made.

    python benchmarks/serve_latency.py [--work DIR] [--photos 10000] [--queries 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import numpy as np
from speedbench.processes import BenchmarkError, LoadSampler, log, median
from speedbench.results import LoadSummary
from speedbench.settings import PHOTO_SIZE
from speedbench.workspace import Workspace

from hanclip_eval.server_process import ServerDidNotStart, spawned_server

SEARCH_P50_TARGET_MS = 50.0  # the "tens of milliseconds"
REAL_PHOTOS = 12  # indexed JPEGs: the thumbnails and the narrow filter's photos
PAGE = 30  # n of every search: the web page's grid
WARMUP_SEARCHES = 10
CLI_RUNS = 3
SYNTHETIC_ROOT = "/synthetic"  # where `fill_library` puts its rows
SERVER_START_TIMEOUT_S = 300.0

# Query texts are "<when> <where> <what>": 8 x 10 x 15 = 1,200 distinct phrases.
WHEN = ("여름", "겨울", "밤", "아침", "비 오는 날", "생일", "주말", "가을 저녁")
WHERE = (
    "해변에서",
    "공원에서",
    "산 위에서",
    "한강에서",
    "제주도에서",
    "카페에서",
    "시장에서",
    "눈 덮인 길에서",
    "기차역에서",
    "한옥 마을에서",
)
WHAT = (
    "고양이",
    "강아지",
    "아이들",
    "할머니",
    "가족 사진",
    "친구들",
    "자전거",
    "기차",
    "노을",
    "눈사람",
    "벚꽃",
    "단풍",
    "커피 한 잔",
    "생일 케이크",
    "불꽃놀이",
)

PHRASES = len(WHEN) * len(WHERE) * len(WHAT)
# Each text is used once: warm-up, the plain search, two filters and the second page.
MAX_QUERIES = (PHRASES - WARMUP_SEARCHES - 3) // 4

Call = tuple[str, dict[str, str | int]]  # a GET: path and query parameters


def korean_queries(count: int, seed: int = 0) -> list[str]:
    """`count` distinct Korean query texts, the same ones for the same seed; a shorter list
    is the start of a longer one."""
    phrases = [f"{when} {where} {what}" for when in WHEN for where in WHERE for what in WHAT]
    if count > len(phrases):
        raise ValueError(f"{count} queries asked, {len(phrases)} distinct ones available")
    random.Random(seed).shuffle(phrases)
    return phrases[:count]


# -- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """One kind of request: the client's wall time per request, in milliseconds."""

    key: str
    label: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    samples_ms: tuple[float, ...]

    @classmethod
    def of(cls, key: str, label: str, seconds: Sequence[float]) -> Latency:
        ms = np.asarray(seconds, dtype=np.float64) * 1000
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        return cls(key, label, len(ms), p50, p90, p99, float(ms.min()), float(ms.max()), tuple(ms))


@dataclass(frozen=True)
class ServerFigures:
    announced_s: float  # spawn to the "serving ... at URL" line
    ready_s: float  # spawn to the first answer (/api/info)
    first_search_ms: float  # the first search after start, before any warm-up
    peak_rss_mb: float | None  # the server process's high-water mark (Linux)
    latencies: tuple[Latency, ...]

    def latency(self, key: str) -> Latency:
        return next(row for row in self.latencies if row.key == key)


@dataclass(frozen=True)
class CliFigures:
    wall_s: tuple[float, ...]  # cold `hanclip search` processes, spawn to exit
    median_s: float


@dataclass(frozen=True)
class Results:
    library_photos: int
    real_photos: int
    photo_size: tuple[int, int]
    bundle: str
    cores: int
    load_average: LoadSummary
    server: ServerFigures
    cli: CliFigures
    work: str
    wall_s: float

    @property
    def search_p50_ms(self) -> float:
        return self.server.latency("search").p50_ms

    @property
    def cli_over_server(self) -> float:
        return self.cli.median_s * 1000 / self.search_p50_ms

    @property
    def passes(self) -> bool:
        return self.search_p50_ms <= SEARCH_P50_TARGET_MS


# -- the requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Plan:
    """Every request of one run, in order: warm-up (its first call is timed alone, as the
    first search after start), then each scenario's calls."""

    warmup: tuple[Call, ...]
    scenarios: tuple[Scenario, ...]


@dataclass(frozen=True)
class Filter:
    key: str
    label: str
    params: dict[str, str]


def searches(texts: Sequence[str], page: int, **params: str | int) -> tuple[Call, ...]:
    return tuple(("/api/search", {"q": text, "n": page, **params}) for text in texts)


def similar(photo_ids: Sequence[int], page: int) -> tuple[Call, ...]:
    return tuple((f"/api/photos/{i}/similar", {"n": page}) for i in photo_ids)


def make_plan(
    queries: int,
    photo_ids: Sequence[int],
    thumbnail_ids: Sequence[int],
    filters: Sequence[Filter],
    page: int = PAGE,
    seed: int = 0,
) -> Plan:
    """`queries` requests of each kind, `page` results each; every text and every similar
    photo is used once."""
    text_kinds = 2 + len(filters)  # plain, each filter, second page
    warm_texts = WARMUP_SEARCHES + len(filters) + 1
    texts = iter(korean_queries(warm_texts + text_kinds * queries, seed))

    def take(count: int) -> list[str]:
        return [next(texts) for _ in range(count)]

    rng = np.random.default_rng(seed)
    photos = [int(i) for i in rng.permutation(np.asarray(photo_ids))[: queries + 1]]
    warmup = (
        *searches(take(WARMUP_SEARCHES), page),
        *(call for f in filters for call in searches(take(1), page, **f.params)),
        *searches(take(1), page, offset=page),
        *similar(photos[:1], page),
    )
    thumbnails = tuple((f"/api/photos/{i}/thumbnail", {}) for i in thumbnail_ids)
    plain = Scenario("search", f"search ?q=...&n={page}", searches(take(queries), page))
    filtered = tuple(
        Scenario(f.key, f"search, filtered {f.label}", searches(take(queries), page, **f.params))
        for f in filters
    )
    second = searches(take(queries), page, offset=page)
    scenarios = (
        plain,
        *filtered,
        Scenario("second_page", f"search, second page offset={page}", second),
        Scenario("similar", f"similar photos ?n={page}", similar(photos[1:], page)),
        # The same calls twice: the thumbnail cache is empty at start, full the second time.
        Scenario("thumbnail_first", "thumbnail, made the first time", thumbnails),
        Scenario("thumbnail_cached", "thumbnail, from the cache", thumbnails),
    )
    return Plan(warmup, scenarios)


def check_response(response: httpx.Response, call: Call) -> None:
    """A 200 with a JPEG, or with results that the call's folder filter kept."""
    response.raise_for_status()
    path, params = call
    if path.endswith("/thumbnail"):
        if response.headers.get("content-type") != "image/jpeg" or not response.content:
            raise BenchmarkError(f"{path}: no JPEG in the answer")
        return
    results = response.json()["results"]
    if not results:
        raise BenchmarkError(f"{path} {params}: no results")
    folder = params.get("in")
    if folder and not all(r["path"].startswith(f"{folder}/") for r in results):
        raise BenchmarkError(f"{path} {params}: a result outside {folder}")


def timed_get(client: httpx.Client, call: Call) -> float:
    """Seconds from sending the request to the last byte of the answer."""
    path, params = call
    start = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = time.perf_counter() - start
    check_response(response, call)
    return elapsed


def measure_requests(client: httpx.Client, plan: Plan) -> tuple[float, tuple[Latency, ...]]:
    """The first search's milliseconds, then every scenario's latencies."""
    first_ms = timed_get(client, plan.warmup[0]) * 1000
    for call in plan.warmup[1:]:
        timed_get(client, call)
    latencies = []
    for scenario in filter(lambda s: s.calls, plan.scenarios):  # a tiny library has no photo
        seconds = [timed_get(client, call) for call in scenario.calls]
        latencies.append(Latency.of(scenario.key, scenario.label, seconds))
        log(f"server: {scenario.label}: p50 {latencies[-1].p50_ms:.1f} ms")
    return first_ms, tuple(latencies)


# -- the server process ------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    spawned: float  # perf_counter at spawn
    announced_s: float

    def since_spawn(self) -> float:
        return time.perf_counter() - self.spawned

    def peak_rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None  # not Linux
        kb = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")), None
        )
        return None if kb is None else int(kb) / 1024


@contextmanager
def running_server(
    args: Sequence[str], env: dict[str, str], timeout_s: float = SERVER_START_TIMEOUT_S
) -> Iterator[Server]:
    """`hanclip serve --port 0 ARGS...` until the block ends."""
    try:
        with spawned_server(args, env=env, timeout_s=timeout_s) as spawned:
            yield Server(spawned.url, spawned.process.pid, spawned.spawned_at, spawned.started_s)
    except ServerDidNotStart as exc:
        raise BenchmarkError(str(exc)) from None


def measure_server(server: Server, plan: Plan) -> ServerFigures:
    """Everything in `plan`, over one keep-alive connection."""
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
        client.get("/api/info").raise_for_status()  # waits until the server answers
        ready_s = server.since_spawn()
        first_ms, latencies = measure_requests(client, plan)
    return ServerFigures(server.announced_s, ready_s, first_ms, server.peak_rss_mb(), latencies)


# -- the library and the CLI -------------------------------------------------------------


@dataclass(frozen=True)
class Library:
    path: Path
    photos_folder: Path  # the real photos, all of them directly in it
    all_ids: tuple[int, ...]
    real_ids: tuple[int, ...]


def read_library(path: Path, photos_folder: Path) -> Library:
    from hanclip_library.store import PhotoStore

    store = PhotoStore(path, create=False)
    try:
        all_ids = tuple(int(i) for i in store.ids())
        real = sorted(record.id for record in store.records_under([photos_folder]).values())
    finally:
        store.close()
    return Library(path, photos_folder, all_ids, tuple(real))


def library_count(path: Path) -> int:
    from hanclip_library.store import DB_NAME, PhotoStore

    if not (path / DB_NAME).is_file():
        return 0
    store = PhotoStore(path, create=False)
    try:
        return store.count()
    finally:
        store.close()


def build_library(ws: Workspace, photos: Sequence[Path], total: int) -> Library:
    """The real photos indexed by `hanclip index`, synthetic rows up to `total`; kept in the
    work directory and reused when it holds `total` photos."""
    from speedbench.inputs import fill_library, linked_folder
    from speedbench.workspace import check_index_counts

    path, folder = ws.root / f"serve-library-{total}", ws.root / "serve-photos"
    if library_count(path) == total and folder.is_dir():
        log(f"library: reusing {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)
        log(f"library: indexing {len(photos)} photos (exports the fast text encoder once)")
        run, _ = ws.index(linked_folder(folder, photos), path)
        check_index_counts(run, len(photos))
        log(f"library: adding synthetic rows up to {total:,} photos")
        fill_library(path, total)
    return read_library(path, folder.resolve())


def sync_index_file(ws: Workspace, library: Path, text: str) -> None:
    """One search, as after a user's `hanclip index`: the HNSW file takes the new rows."""
    log("library: one search to bring the HNSW index file in line")
    ws.search(text, library)


def measure_cli(ws: Workspace, library: Path, texts: Sequence[str]) -> CliFigures:
    """Cold `hanclip search` processes, one per text."""
    walls = []
    for text in texts:
        run = ws.search(text, library)
        if not json.loads(run.stdout):
            raise BenchmarkError(f"hanclip search {text!r} found nothing")
        walls.append(run.wall_s)
        log(f"cli: `hanclip search` {run.wall_s:.2f} s")
    return CliFigures(tuple(walls), median(walls))


# -- the report --------------------------------------------------------------------------


def _row(label: str, *cells: str) -> str:
    return f"  {label:<46}" + "".join(f"{cell:>8}" for cell in cells)


def format_report(results: Results) -> str:
    server, cli, load = results.server, results.cli, results.load_average
    real, synthetic = results.real_photos, results.library_photos - results.real_photos
    width, height = results.photo_size
    rss = "n/a" if server.peak_rss_mb is None else f"{server.peak_rss_mb:,.0f} MB"
    lines = [
        "hanclip serve latency, offline: real-size architectures, random weights",
        "=" * 94,
        f"library       {results.library_photos:,} photos: {real} indexed {width}x{height} "
        f"JPEGs + {synthetic:,} synthetic rows",
        f"bundle        {results.bundle}",
        f"machine       {results.cores} cores usable; load average (1-min) start "
        f"{load.at_start_1_5_15[0]}, during min {load.during_1min_min} / median "
        f"{load.during_1min_median} / max {load.during_1min_max}, end {load.at_end_1_5_15[0]}",
        f"free cores    {', '.join(f'{k}: {v:.2f}' for k, v in load.cores_available.items())}"
        f" of {results.cores} (CPU time busy loops got in 1 s)",
        f"work dir      {results.work}; benchmark wall time {results.wall_s:.0f} s",
        "",
        f"Server (`hanclip serve --port 0`): URL printed {server.announced_s:.2f} s after "
        f"spawn, first answer at {server.ready_s:.2f} s; peak RSS {rss}",
        f"  first search after start (before any warm-up): {server.first_search_ms:.1f} ms",
        "",
        "Warm server, client wall time per request (one keep-alive connection, ms):",
        _row("request", "n", "p50", "p90", "p99", "min", "max"),
    ]
    for row in server.latencies:
        figures = (row.p50_ms, row.p90_ms, row.p99_ms, row.min_ms, row.max_ms)
        lines.append(_row(row.label, str(row.count), *(f"{v:.1f}" for v in figures)))
    runs = " ".join(f"{v:.2f}" for v in cli.wall_s)
    lines += [
        "",
        f"Cold CLI: `hanclip search` process, spawn to exit, median of {len(cli.wall_s)}: "
        f"{cli.median_s:.2f} s [{runs}]",
        f"  cold CLI / warm server search p50: {results.cli_over_server:.0f}x",
        "",
        "Target:",
        f"  server search p50 <= {SEARCH_P50_TARGET_MS:g} ms  "
        f"{'PASS' if results.passes else 'FAIL'}  (measured {results.search_p50_ms:.1f} ms)",
    ]
    return "\n".join(lines) + "\n"


def figures_json(results: Results) -> str:
    """The figures under their field names; latencies keyed by scenario."""
    data = asdict(results)
    data["server"]["latencies"] = {row.key: asdict(row) for row in results.server.latencies}
    data["cli_over_server_p50"] = results.cli_over_server
    data["target"] = {
        "search_p50_ms": results.search_p50_ms,
        "limit_ms": SEARCH_P50_TARGET_MS,
        "pass": results.passes,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# -- one run -----------------------------------------------------------------------------


def default_work() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hanclip-bench", appauthor=False)) / "serve-latency"


def filters_for(library: Library) -> tuple[Filter, ...]:
    """A broad filter (the synthetic rows: nearly every photo passes) and a narrow one (the
    real photos' folder: a handful pass)."""
    broad = {"after": "2023", "in": SYNTHETIC_ROOT}
    narrow = {"in": str(library.photos_folder)}
    return (
        Filter("filtered_broad", f"after=2023 in={SYNTHETIC_ROOT}", broad),
        Filter("filtered_narrow", f"in=<the {len(library.real_ids)} real photos>", narrow),
    )


def run_benchmark(work: Path, photos: int, queries: int) -> Results:
    from speedbench.run import Options, prepare_inputs
    from speedbench.settings import FULL
    from speedbench.workspace import ISOLATED_KEYS, isolated_env

    from hanclip_library.thumbnails import THUMBNAILS_DIR
    from hanclip_model.device import usable_cores

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)  # caches under the work directory; no hub is asked
    os.environ.update({key: env[key] for key in ISOLATED_KEYS})  # our own model loads too
    real = min(REAL_PHOTOS, photos)
    with LoadSampler(usable_cores()) as load:
        inputs = prepare_inputs(Options(work, replace(FULL, photos=real), None))
        ws = Workspace(work, inputs.bundle, env)
        library = build_library(ws, inputs.photos, photos)
        plan = make_plan(queries, library.all_ids, library.real_ids, filters_for(library))
        cli_texts = korean_queries(CLI_RUNS + 1, seed=1)
        sync_index_file(ws, library.path, cli_texts[0])
        shutil.rmtree(library.path / THUMBNAILS_DIR, ignore_errors=True)  # made the first time
        load.probe("before server")
        log("server: starting")
        with running_server(["--library", str(library.path)], env) as server:
            figures = measure_server(server, plan)
        cli = measure_cli(ws, library.path, cli_texts[1:])
        load.probe("end")
    return Results(
        library_photos=len(library.all_ids),
        real_photos=len(library.real_ids),
        photo_size=PHOTO_SIZE,
        bundle=f"{inputs.bundle} ({inputs.bundle_origin})",
        cores=usable_cores(),
        load_average=load.summary(),
        server=figures,
        cli=cli,
        work=str(work),
        wall_s=time.perf_counter() - started,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python benchmarks/serve_latency.py --json serve.json",
    )
    parser.add_argument("--work", type=Path, help="work directory, kept (default: user cache)")
    parser.add_argument("--photos", type=int, default=10_000, help="library size (10000)")
    parser.add_argument("--queries", type=int, default=100, help="requests of each kind (100)")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write figures here")
    args = parser.parse_args(argv)
    if args.photos < 2 or not 1 <= args.queries <= MAX_QUERIES:
        parser.error(f"--photos must be at least 2, --queries 1 to {MAX_QUERIES}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = (args.work or default_work()).resolve()
    try:
        results = run_benchmark(work, args.photos, args.queries)
    except (BenchmarkError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(results), end="")
    if args.json_path is not None:
        args.json_path.write_text(figures_json(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
