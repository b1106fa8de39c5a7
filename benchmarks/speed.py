"""hanclip's speed targets, every figure and every ratio measured in one offline run.

    python benchmarks/speed.py [--work DIR] [--quick] [--bundle DIR] [--json PATH]

Real-size architectures with random weights (open_clip `ViT-B-32` with no pretrained tag, a
MiniLM-L12-shaped BERT with a 250k-piece stand-in tokenizer, random heads): FLOPs and file
sizes are the real ones, only rankings mean nothing (`--bundle` measures a given bundle). It
times cold `hanclip search` processes on a 10,000-photo library against a naive script,
`hanclip index` photos/s on 12-MP JPEGs against the machine's ceiling and a naive loop, HNSW
recall@10 and query time at 100,000 vectors, peak RSS, and every approximate path against its
torch fp32 reference. The parts are in `speedbench`, what benchmarks share in `benchkit`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchkit import entry
from speedbench.settings import FULL, QUICK, Sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/speed.py --work /tmp/hanclip-speed --json speed.json"
    parser = entry.parser(__doc__, example, work="default: a temp dir")
    parser.add_argument("--photos", type=int, help="12-MP JPEGs to index (default 96)")
    parser.add_argument("--runs", type=int, help="cold runs of each timed command (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument(
        "--bundle", type=Path, help="benchmark this bundle instead of random real-size models"
    )
    # The naive contender runs in a fresh process through this same file.
    parser.add_argument("--naive-search", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    return entry.resized(QUICK if args.quick else FULL, args, "photos", "runs")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.naive_search:
        # Imported here, alone: the naive contender's process pays for no benchmark module.
        from speedbench.naive import naive_search

        naive_search(*args.naive_search)
        return 0
    from benchkit.workspace import work_directory
    from speedbench.run import Options, run_benchmark
    from speedbench.targets import checks

    with work_directory(args.work) as work:
        return entry.finish(
            lambda: run_benchmark(Options(work, sizes_from(args), args.bundle)),
            args.json_path,
            title="hanclip speed benchmark (offline)",
            checks=checks,
        )


if __name__ == "__main__":
    sys.exit(main())
