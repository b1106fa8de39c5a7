"""hanclip at scale (issue 16): cold and warm search, the index's freshness check and load, and
a no-op re-index, on fabricated libraries of 100k and 1M photos.

    python benchmarks/scale.py --work /tmp/hanclip-scale [--code CHECKOUT] [--quick]

Each library is fabricated once in plain SQL at schema 4 (`scalebench.library`) and copied for
the measured checkout (`--code`, default this repository, run as `python -m hanclip_cli` with
PYTHONPATH=CHECKOUT), whose first `hanclip index` migrates it and builds the HNSW index. Per
size (`scalebench.measure`): cold `hanclip search -n 10` processes, spawn to exit, on their own
and with the resident server up; warm /api/search requests on a running `hanclip serve`;
`load_index` and `sync_index` (the freshness check) in fresh processes; the cold searches'
peak RSS; a no-op re-index of the real files. Every row has a file (the rows beyond the real
files: empty ones, outside any indexed root), so no search skips a gone photo. For a checkout
that reads the text in photos (issue 24): its `index` runs with `--no-ocr`, one photo in ten
gets a reading with text (`scalebench.texts`, written by its own PhotoText after it migrated
the library), and cold searches with text are timed against the same searches with
`--no-text` (by look alone, the search before it), with queries that match text and ones
that do not. On the same running server, the timeline's first page (`/api/timeline?n=60`,
the page `serve` opens on, issue 26). Targets: cold search p50 <= 0.5 s up to 100k photos,
<= 1 s up to 1M; no-op re-index of 100,000 files < 2 s; with text within 1.2x of --no-text
up to 100k photos; the timeline's first page p50 <= 30 ms up to 100k photos.
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
from benchkit.workspace import default_work
from scalebench.checkout import Checkout, seed_dim
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
    ws = checkout.workspace(work, bundle)
    load_start = os.getloadavg()
    dim = seed_dim(ws, no_ocr=checkout.has_text)
    log(f"checkout {checkout.label}; bundle {bundle}; raw dimension {dim}")
    texts = korean_queries(len(args.sizes) * 2 * (args.runs + 1), seed=16)
    figures = []
    for number, size in enumerate(args.sizes):
        queries = texts[number * 2 * (args.runs + 1) : (number + 1) * 2 * (args.runs + 1)]
        figures.append(
            measure_size(
                ws, checkout, size, queries, real_files=args.real_files, dim=dim, fresh=args.fresh
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
