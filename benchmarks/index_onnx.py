"""`hanclip index` with an exported bundle (ONNX Runtime, no torch) against torch, one run.

Real-size architectures with random weights, so FLOPs, file sizes and import costs are the
real ones and only the vectors mean nothing: open_clip ViT-B/32 saved with fixed seeded
weights in open_clip's `local-dir:` layout (a model with no pretrained tag has new weights at
every load, and cannot be exported), a paraphrase-multilingual-MiniLM-L12-v2-shaped BERT with
a 250k-piece Unigram stand-in tokenizer, random heads. Two bundles name the same models: one
after `hanclip export` (carries `encoders/image` and `encoders/text`), one without encoders,
run with `HANCLIP_FAST_IMAGE=0` (the torch path). The export also puts the text encoder's ONNX
export in the work directory's cache, which the plain bundle's runs use: only the image side
differs. One run measures:

1. start-up: wall time of a whole `hanclip index` process (spawn to exit) on a folder holding
   one ~2-MP JPEG, a new library each run, for both bundles (median of `--runs`, every run
   shown; one untimed run of each first). Target: exported <= 1.5 s. One more exported run
   under `python -X importtime` tells whether torch, open_clip and onnxruntime were imported.
2. photos/s, ONNX vs torch: (i) the encoder stage, in this process: batches of 32
   preprocessed 224x224 photos through `FastImageEncoder.embed_pixels` and open_clip
   `ClipEncoder.embed_pixels`, both on the usable cores, one warm-up then interleaved timed
   batches, the best of each; the target (ONNX/torch >= 1.1x) applies to this figure. (ii)
   end to end: `hanclip index` processes on `--photos` ~2-MP JPEGs (decoding, hashing and the
   library are costs both pay alike), as photos / wall time (start-up included) and steady:
   the photos committed from the first batch's commit to the last over the time between them
   (read from the library while it runs; needs two batches of 32, so 64 photos or more). The
   worst cosine ONNX vs torch over the benchmark photos (same pixels) is shown too.
3. `--quantize-images`: `quantize_image_encoder` on a copy of the export (it keeps the int8
   graph only at cosine >= 0.99 against fp32 on its verification images: KEPT or REFUSED),
   its photos/s in the same encoder-stage loop, its worst cosine against fp32 on the
   verification images and on the benchmark photos (a refused graph is quantised again beside
   it so that its speed is still shown).
4. the peak RSS of every `hanclip index` process (wait4 in a small launcher).

Every ratio comes from figures measured in this run. The machine may be shared: the load
average and the cores a busy loop could get are reported with the figures. Models, photos and
the export are kept in `--work` and reused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

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

    sizes = QUICK if args.quick else FULL
    if args.photos is not None:
        sizes = replace(sizes, photos=max(1, args.photos))
    if args.runs is not None:
        sizes = replace(sizes, runs=max(1, args.runs))
    with work_directory(args.work) as work:
        return entry.finish(
            lambda: run_benchmark(work, sizes, quantize=args.quantize_images),
            args.json_path,
            title="hanclip index: ONNX Runtime (exported bundle) vs torch (HANCLIP_FAST_IMAGE=0)",
            checks=checks,
        )


if __name__ == "__main__":
    sys.exit(main())
