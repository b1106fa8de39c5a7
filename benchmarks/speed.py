"""hanclip's speed targets, every figure and every ratio measured in one offline run.

Real-size architectures with random weights (open_clip `ViT-B-32` with no pretrained tag, a
paraphrase-multilingual-MiniLM-L12-v2-shaped BERT with its 250k vocabulary and a stand-in
XLM-R-style Unigram tokenizer of the same size, random heads), so
FLOPs and file sizes are the real ones and only the rankings mean nothing. One run measures:

* search: wall time of a `hanclip search` process, start to exit, on a 10,000-photo library,
  against a naive fresh process (torch + sentence-transformers + open_clip, numpy search);
* index: photos/s of `hanclip index` on generated 12-megapixel JPEGs, against the machine's
  ceiling, cores / (decode + model core-seconds per photo), and a naive sequential loop;
* HNSW (the product's settings): recall@10 against exact search and p50 query time at
  100,000 vectors, random unit vectors and clustered ones;
* peak RSS of the `index` and `search` processes;
* every approximate path against its torch fp32 reference (cosine): the ONNX text encoder,
  the numpy heads, JPEG draft decoding.

    python benchmarks/speed.py [--work DIR] [--photos 96] [--runs 3] [--quick] [--json PATH]

`--bundle DIR` benchmarks an existing bundle (real weights, say) instead of random ones.
The measurements live in the package `speedbench` beside this script, the parts every
benchmark shares in `benchkit`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
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
    sizes = QUICK if args.quick else FULL
    if args.photos is not None:
        sizes = replace(sizes, photos=max(1, args.photos))
    if args.runs is not None:
        sizes = replace(sizes, runs=max(1, args.runs))
    return sizes


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
