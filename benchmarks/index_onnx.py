"""`hanclip index` with an exported bundle (ONNX Runtime, no torch) against torch, one run.

    python benchmarks/index_onnx.py --work /tmp/onnxbench [--quantize-images] [--quick]

Two bundles name the same real-size random models (ViT-B/32 with fixed seeded weights, so it
can be exported; a MiniLM-L12-shaped text model; heads): one after `hanclip export`, one
without encoders, run with HANCLIP_FAST_IMAGE=0 (torch); only the image side differs. It
measures a whole `hanclip index` of one photo (start-up; target: exported <= 1.5 s) and what
it imported; photos/s of the image encoder stage in this process (target: ONNX/torch >= 1.1x)
and of whole `index` processes, steady rate included; the worst cosine ONNX vs torch; with
`--quantize-images`, the int8 graph (kept or refused) timed alike; each process's peak RSS.
Models, photos and the export are kept in `--work`; the parts are in `onnxbench`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchkit import entry


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/index_onnx.py --work /tmp/onnxbench --quantize-images"
    parser = entry.parser(__doc__, example, work="kept; default: a temp dir")
    parser.add_argument("--photos", type=int, help="~2-MP JPEGs to index (default 64)")
    parser.add_argument("--runs", type=int, help="timed processes per backend (default 3)")
    parser.add_argument(
        "--quantize-images", action="store_true", help="also measure the int8 image graph"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke test")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from benchkit.workspace import work_directory
    from onnxbench.figures import FULL, QUICK, checks
    from onnxbench.run import run_benchmark

    sizes = entry.resized(QUICK if args.quick else FULL, args, "photos", "runs")
    with work_directory(args.work) as work:
        return entry.finish(
            lambda: run_benchmark(work, sizes, quantize=args.quantize_images),
            args.json_path,
            title="hanclip index: ONNX Runtime (exported bundle) vs torch (HANCLIP_FAST_IMAGE=0)",
            checks=checks,
        )


if __name__ == "__main__":
    sys.exit(main())
