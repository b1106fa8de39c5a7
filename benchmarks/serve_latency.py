"""`hanclip serve`'s API latency on a 10,000-photo library, measured in one offline run.

    python benchmarks/serve_latency.py [--work DIR] [--photos 10000] [--queries 100]

The server keeps the text model and the HNSW index loaded, so a query should answer in tens of
milliseconds (target: search p50 <= 50 ms), where each `hanclip search` process loads them
anew. With the real-size random-weight bundle of `speed.py`, on a library of a few indexed
12-MP JPEGs topped up with synthetic rows, it measures the server's start-up, then the warm
latency of each kind of request over one keep-alive connection (search, filtered broad and
narrow, second page, similar photos, a thumbnail made and then cached), every query text new,
and the cold CLI's median beside it. Bundle, photos and library are kept under `--work`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from benchkit import entry
from benchkit.figures import Check, Spread, Target
from benchkit.inputs import (
    PHOTO_SIZE,
    PHRASES,
    fill_library,
    korean_queries,
    linked_folder,
    synthetic_root,
)
from benchkit.processes import BenchmarkError, LoadSampler, LoadSummary, log
from benchkit.server import Server, running_server
from benchkit.workspace import EMBEDDING_ONLY, Workspace, check_index_counts, photo_rows

# The "tens of milliseconds".
SEARCH_P50 = Target("search_p50_ms", "server search p50", "<=", 50.0, " ms")
REAL_PHOTOS = 12  # indexed JPEGs: the thumbnails and the narrow filter's photos
PAGE = 30  # n of every search: the web page's grid
WARMUP_SEARCHES = 10
CLI_RUNS = 3

# Each text is used once: warm-up, the plain search, two filters and the second page.
MAX_QUERIES = (PHRASES - WARMUP_SEARCHES - 3) // 4

Call = tuple[str, dict[str, str | int]]  # a GET: path and query parameters


@dataclass(frozen=True)
class Latency:
    """One kind of request: the client's wall time per request."""

    key: str
    label: str
    ms: Spread


@dataclass(frozen=True)
class ServerFigures:
    announced_s: float  # spawn to the "serving ... at URL" line
    ready_s: float  # spawn to the first answer (/api/info)
    first_search_ms: float  # the first search after start, before any warm-up
    peak_rss_mb: float | None  # the server process's high-water mark (Linux)
    latencies: tuple[Latency, ...]  # warm, over one keep-alive connection

    def latency(self, key: str) -> Latency:
        return next(row for row in self.latencies if row.key == key)


@dataclass(frozen=True)
class Results:
    library_photos: int
    real_photos: int
    photo_size: tuple[int, int]
    bundle: str
    cores: int
    load_average: LoadSummary
    server: ServerFigures
    cli_search_s: Spread  # cold `hanclip search` processes, spawn to exit
    work: str
    wall_s: float

    @property
    def synthetic_photos(self) -> int:
        return self.library_photos - self.real_photos

    @property
    def search_p50_ms(self) -> float:
        return self.server.latency("search").ms.p50

    @property
    def cli_over_server_p50(self) -> float:
        """Cold CLI median over the warm server's search p50."""
        return self.cli_search_s.p50 * 1000 / self.search_p50_ms


def checks(results: Results) -> list[Check]:
    return [Check.of(SEARCH_P50, results.search_p50_ms)]


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
        ms = Spread.of([timed_get(client, call) * 1000 for call in scenario.calls])
        latencies.append(Latency(scenario.key, scenario.label, ms))
        log(f"server: {scenario.label}: p50 {ms.p50:.1f} ms")
    return first_ms, tuple(latencies)


def measure_server(server: Server, plan: Plan) -> ServerFigures:
    """Everything in `plan`, over one keep-alive connection."""
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
        client.get("/api/info").raise_for_status()  # waits until the server answers
        ready_s = server.since_spawn()
        first_ms, latencies = measure_requests(client, plan)
    return ServerFigures(server.announced_s, ready_s, first_ms, server.peak_rss_mb(), latencies)


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


def build_library(ws: Workspace, photos: Sequence[Path], total: int) -> Library:
    """The real photos indexed by `hanclip index`, synthetic rows up to `total`; kept in the
    work directory and reused when it holds `total` photos."""
    path, folder = ws.root / f"serve-library-{total}", ws.root / "serve-photos"
    if photo_rows(path / "library.db") == total and folder.is_dir():
        log(f"library: reusing {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)
        log(f"library: indexing {len(photos)} photos (exports the fast text encoder once)")
        run, _ = ws.index(linked_folder(folder, photos), path, options=EMBEDDING_ONLY)
        check_index_counts(run, len(photos))
        log(f"library: adding synthetic rows up to {total:,} photos")
        fill_library(path, total)
    return read_library(path, folder.resolve())


def measure_cli(ws: Workspace, library: Path, texts: Sequence[str]) -> Spread:
    """Cold `hanclip search` processes, one per text: their wall times."""
    walls = []
    for text in texts:
        run = ws.search(text, library)
        if not json.loads(run.stdout):
            raise BenchmarkError(f"hanclip search {text!r} found nothing")
        walls.append(run.wall_s)
        log(f"cli: `hanclip search` {run.wall_s:.2f} s")
    return Spread.of(walls)


def filters_for(library: Library) -> tuple[Filter, ...]:
    """A broad filter (the synthetic rows: nearly every photo passes) and a narrow one (the
    real photos' folder: a handful pass)."""
    broad = {"after": "2023", "in": str(synthetic_root(library.path))}
    narrow = {"in": str(library.photos_folder)}
    return (
        Filter("filtered_broad", "after=2023 in=<the synthetic rows' folder>", broad),
        Filter("filtered_narrow", f"in=<the {len(library.real_ids)} real photos>", narrow),
    )


def run_benchmark(work: Path, photos: int, queries: int) -> Results:
    from benchkit.inputs import prepare_inputs
    from benchkit.workspace import isolated_env, isolated_process

    from hanclip_library.thumbnails import THUMBNAILS_DIR
    from hanclip_model.device import usable_cores

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)  # caches under the work directory; no hub is asked
    with isolated_process(env), LoadSampler(usable_cores()) as load:
        inputs = prepare_inputs(work, min(REAL_PHOTOS, photos), None)
        ws = Workspace(work, inputs.bundle, env)
        library = build_library(ws, inputs.photos, photos)
        plan = make_plan(queries, library.all_ids, library.real_ids, filters_for(library))
        cli_texts = korean_queries(CLI_RUNS + 1, seed=1)
        log("library: one search to bring the HNSW index file in line")
        ws.search(cli_texts[0], library.path)
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
        cli_search_s=cli,
        work=str(work),
        wall_s=time.perf_counter() - started,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/serve_latency.py --json serve.json"
    parser = entry.parser(__doc__, example, work="kept; default: user cache")
    parser.add_argument("--photos", type=int, default=10_000, help="library size (10000)")
    parser.add_argument("--queries", type=int, default=100, help="requests of each kind (100)")
    args = parser.parse_args(argv)
    if args.photos < 2 or not 1 <= args.queries <= MAX_QUERIES:
        parser.error(f"--photos must be at least 2, --queries 1 to {MAX_QUERIES}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from benchkit.workspace import default_work

    args = parse_args(argv)
    work = (args.work or default_work("serve-latency")).resolve()
    return entry.finish(
        lambda: run_benchmark(work, args.photos, args.queries),
        args.json_path,
        title="hanclip serve latency (offline: real-size architectures, random weights)",
        checks=checks,
        errors=(httpx.HTTPError,),
    )


if __name__ == "__main__":
    sys.exit(main())
