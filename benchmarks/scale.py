"""hanclip at scale (issue 16): cold and warm search, the index's freshness check and load, and
a no-op re-index, on fabricated libraries of 100k and 1M photos.

Per size, a library is fabricated with plain SQL at schema 4 (kept in `--work`, keyed on the
size and a format number): random clustered unit embeddings of the bundle's raw dimension
(512 for the default real-size random-weight bundle of `benchmarks/speed.py`), the first
100,000 rows real small JPEG files on disk (one folder tree, 100 subfolders, each file
distinct, rows with its real size, mtime_ns and sha256), the rest rows under a folder that
exists nowhere and is never indexed. The measured checkout (`--code`, default this repository;
run as `python -m hanclip_cli` with PYTHONPATH=CHECKOUT) works on its own copy of it, kept in
the work directory per checkout path and HEAD (`--fresh` copies it anew): its first
`hanclip index` of the real files migrates the library and builds the HNSW index (the report
gives its time); then, per size:

1. cold search: fresh `hanclip search QUERY --json -n 10` processes, spawn to exit, `--runs`
   distinct Korean queries, after one untimed search (OS page cache warm): p50, min, max;
2. warm search: GET /api/search?q=QUERY&n=10 on a running `hanclip serve` of the library,
   client wall time, distinct queries, after one untimed request;
3. the freshness check: `sync_index(directory, store, model, write=False)` and
   `load_index(directory)`, each timed in a fresh process of the checkout, and their
   difference; also the id read of the check before issue 16 (`store.ids()` + labels);
4. index load time: `load_index`, median of 3 fresh processes;
5. peak RSS of the cold search processes;
6. no-op re-index: `hanclip index REALROOT --json` with nothing changed, median of 3, checked
   to report nothing added, updated, moved, removed or failed.

Targets, PASS/FAIL: cold search p50 <= 0.5 s up to 100k photos, <= 1 s up to 1M; no-op
re-index of 100,000 files < 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from benchkit import entry
from benchkit.inputs import build_random_bundle, korean_queries, tiny_bundle
from benchkit.processes import log
from benchkit.workspace import default_work, isolated_env
from scalebench.checkout import Checkout, Runner, seed_dim
from scalebench.figures import Report, checks
from scalebench.library import REAL_FILES
from scalebench.measure import RUNS, measure_size

REPO = Path(__file__).resolve().parents[1]
QUICK_SIZES = (2_000, 5_000)
QUICK_REAL_FILES = 1_000
QUICK_RUNS = 3


def run_benchmark(args: argparse.Namespace) -> Report:
    started = time.perf_counter()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    checkout = Checkout.at(args.code)
    if args.bundle is not None:
        bundle = args.bundle.resolve()
    elif args.quick:
        log("bundle: the tiny test bundle (once per work directory)")
        bundle = tiny_bundle(work / "tiny-bundle")
    else:
        log("bundle: real-size random weights (once per work directory)")
        bundle = build_random_bundle(work / "bundle")
    runner = Runner(checkout, bundle, checkout.env(isolated_env(work)))
    load_start = os.getloadavg()
    dim = seed_dim(work, runner)
    log(f"checkout {checkout.label}; bundle {bundle}; raw dimension {dim}")
    texts = korean_queries(len(args.sizes) * 2 * (args.runs + 1), seed=16)
    figures = []
    for number, size in enumerate(args.sizes):
        queries = texts[number * 2 * (args.runs + 1) : (number + 1) * 2 * (args.runs + 1)]
        figures.append(
            measure_size(
                work,
                runner,
                size,
                queries,
                real_files=args.real_files,
                dim=dim,
                fresh=args.fresh,
            )
        )
    return Report(
        checkout=checkout.label,
        bundle=str(bundle),
        cores=len(os.sched_getaffinity(0)),
        load_start=tuple(round(v, 2) for v in load_start),
        load_end=tuple(round(v, 2) for v in os.getloadavg()),
        work=str(work),
        runs=args.runs,
        sizes=tuple(figures),
        wall_s=time.perf_counter() - started,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/scale.py --work /tmp/scale-work --json scale.json"
    parser = entry.parser(__doc__, example, work="kept; default: user cache")
    parser.add_argument("--sizes", type=int, nargs="+", help="library sizes (100000 1000000)")
    parser.add_argument(
        "--code", type=Path, default=REPO, help="the hanclip checkout measured (this repository)"
    )
    parser.add_argument("--runs", type=int, help=f"cold and warm searches each ({RUNS})")
    parser.add_argument("--bundle", type=Path, help="a bundle to use instead of the random one")
    parser.add_argument(
        "--fresh", action="store_true", help="copy the fabricated libraries anew for this checkout"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {' and '.join(map(str, QUICK_SIZES))}, {QUICK_REAL_FILES} real files, "
        f"the tiny bundle, {QUICK_RUNS} runs",
    )
    args = parser.parse_args(argv)
    args.sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else (100_000, 1_000_000)))
    args.runs = args.runs or (QUICK_RUNS if args.quick else RUNS)
    args.real_files = QUICK_REAL_FILES if args.quick else REAL_FILES
    if min(args.sizes) < 2 or args.runs < 1:
        parser.error("sizes must be at least 2, --runs at least 1")
    args.work = (args.work or default_work("scale")).resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return entry.finish(
        lambda: run_benchmark(args),
        args.json_path,
        title="hanclip at scale: fabricated libraries, the measured checkout run from outside",
        checks=checks,
        errors=(httpx.HTTPError, OSError, ValueError, KeyError),
    )


if __name__ == "__main__":
    sys.exit(main())
