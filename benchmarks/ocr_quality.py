"""Text in photos: how well each recognition pipeline reads Korean, and what it costs.

Generates a Korean test set (`ocrbench.testset`): Hangul and mixed Korean/English/number
texts (receipts, signs, chats, menus, tickets) rendered with the Nanum fonts at 16-48 px as
screenshots (plain backgrounds) and as photographed scenes (textured backgrounds, a few
degrees of rotation, perspective, blur, JPEG noise), mixed among text-free photos; queries are
the texts' Hangul words of one to four syllables and pairs of neighbouring words. Every
pipeline reads every image (`ocrbench.measure`), and per pipeline and kind of image it
prints: the character error rate, recall@1 and @10 of the queries (photos ranked by the
stated text match of `ocrbench.measure`, among that kind and the text-free photos), the
text-free photos any query returned, seconds per photo with and without text, and photos
that failed. The first look (RapidOCR's shipped detector) is measured alone at several input
sides: its cost and its misses. A ViT-B/32 image embedding (random weights, real FLOPs) is
timed as the cost a text-free photo should stay within.

Pipelines: `tesseract` and `tesseract+detect` (the product's, `hanclip_library.ocr_engines`:
screens read as pages, scenes line by line), and the alternatives they were chosen over:
`tesseract+look-page` (the same first look, then every photo read as a page), Tesseract in
other page modes (`tesseract-psm3`: automatic layout, `tesseract-psm11`: sparse text) and
RapidOCR as its wheel ships (its recogniser has no Hangul; its Korean recogniser is fetched
from a model hub on first use, which this benchmark does not do).

The pass's cost in `index` (`ocrbench.cost`): photo-like JPEGs, one in ten with a sign, are
indexed by the console script into two fresh libraries, with `--no-ocr` and with the default
engine, on the real-size random ViT-B/32 bundle (`--cost-tiny`: the tests' tiny bundle, whose
embedding costs far less than a real one's, so its ratio is pessimistic).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit import entry
from benchkit.figures import Check, Target
from benchkit.workspace import work_directory
from ocrbench import cost, measure, testset

from hanclip_library import ocr_engines

# The product's side first (--quick measures it alone), then the others it was chosen among.
SIDES = (ocr_engines.LOOK_SIDE, 320, 480, 640)


@dataclass(frozen=True)
class KindFigure:
    """One pipeline on one kind of image."""

    pipeline: str
    kind: str
    photos: int
    cer: float | None  # None for text-free photos
    queries: int
    recall_at_1: float | None
    recall_at_10: float | None
    seconds_per_photo: float
    failed: int


@dataclass(frozen=True)
class QueryKindFigure:
    """Recall@10 by the kind of query, per pipeline and kind of image."""

    pipeline: str
    kind: str
    query: str  # "1-syllable" ... "4-syllable", "pair"
    queries: int
    recall_at_10: float


@dataclass(frozen=True)
class PipelineFigure:
    pipeline: str
    text_free_photos_matched: int  # returned by at least one query
    text_free_matches: int  # (query, text-free photo) pairs returned
    seconds_with_text: float  # per photo
    seconds_without_text: float


@dataclass(frozen=True)
class Results:
    photos: int
    text_free: int
    queries: int
    fonts: str
    embedding_ms_per_photo: float | None  # ViT-B/32, random weights, torch, in batches
    pipelines: tuple[PipelineFigure, ...]
    kinds: tuple[KindFigure, ...]
    by_query: tuple[QueryKindFigure, ...]
    first_look: tuple[measure.LookFigure, ...]
    index_cost: cost.CostFigure | None  # None when not asked for (--cost-photos 0)


def score(pipeline: str, samples, queries, readings) -> tuple[list, list, PipelineFigure]:
    free = [i for i, s in enumerate(samples) if s.kind == testset.NO_TEXT]
    kinds, by_query = [], []
    for kind in testset.KINDS:
        own = [i for i, s in enumerate(samples) if s.kind == kind]
        among = own if kind == testset.NO_TEXT else own + free
        scores = measure.query_scores(queries, readings, among) if kind != testset.NO_TEXT else None
        cer = None
        if kind != testset.NO_TEXT:
            cer = sum(
                measure.character_error_rate(samples[i].text, readings[i].text) for i in own
            ) / len(own)
            for query_kind in sorted({q.kind for q in queries}):
                chosen = [q for q in queries if q.kind == query_kind]
                part = measure.query_scores(chosen, readings, among)
                if part is not None:
                    by_query.append(
                        QueryKindFigure(pipeline, kind, query_kind, part.queries, part.recall_at_10)
                    )
        kinds.append(
            KindFigure(
                pipeline,
                kind,
                len(own),
                cer,
                scores.queries if scores else 0,
                scores.recall_at_1 if scores else None,
                scores.recall_at_10 if scores else None,
                sum(readings[i].seconds for i in own) / len(own),
                sum(1 for i in own if readings[i].failed),
            )
        )
    texted = [i for i, s in enumerate(samples) if s.kind != testset.NO_TEXT]
    photos, pairs = measure.false_matches(queries, readings, samples)
    overall = PipelineFigure(
        pipeline,
        photos,
        pairs,
        sum(readings[i].seconds for i in texted) / len(texted),
        sum(readings[i].seconds for i in free) / len(free),
    )
    return kinds, by_query, overall


@dataclass(frozen=True)
class CostPlan:
    photos: int  # 0: not measured
    size: tuple[int, int]
    tiny: bool


def run(
    work: Path,
    photos: int,
    pipelines: Sequence[str],
    sides: Sequence[int],
    seed: int,
    plan: CostPlan,
):
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    text_free = max(2, photos // 3)
    samples = testset.write_test_set(work / f"testset-{seed}", photos, text_free, seed)
    queries = testset.make_queries(samples)
    kinds, by_query, overall = [], [], []
    for name in pipelines:
        progress(f"reading {len(samples)} images with {name}")
        engine = measure.open_candidate(name)
        readings = measure.read_all(engine, samples, progress)
        k, q, o = score(name, samples, queries, readings)
        kinds += k
        by_query += q
        overall.append(o)
    progress("first look alone")
    looks = tuple(measure.measure_first_look(side, samples) for side in sides)
    progress("a ViT-B/32 image embedding")
    embedding = measure.embedding_ms_per_photo()
    index_cost = None
    if plan.photos:
        progress(f"index of {plan.photos} photos with and without the text pass")
        index_cost = cost.measure_cost(work, plan.photos, plan.size, plan.tiny)
    return Results(
        photos,
        text_free,
        len(queries),
        ", ".join(sorted({s.font for s in samples if s.font})),
        embedding,
        tuple(overall),
        tuple(kinds),
        tuple(by_query),
        looks,
        index_cost,
    )


SCREENSHOT_RECALL = Target("screenshot_recall_at_10", "screenshots: recall@10", ">=", 0.95)
PHOTO_RECALL = Target("photo_recall_at_10", "photo-like: recall@10", ">=", 0.7)
NO_FALSE_MATCH = Target("text_free_matched", "text-free photos matched", "<=", 0)
FREE_COST = Target("text_free_cost", "text-free photo cost / embedding", "<=", 1.0)
INDEX_COST = Target(
    "index_cost", "index with the text pass / without (1 in 10 with text)", "<=", 2.0
)


def checks(results: Results) -> list[Check]:
    found = []
    for pipeline in results.pipelines:
        name = pipeline.pipeline
        recall = {k.kind: k.recall_at_10 for k in results.kinds if k.pipeline == name}
        for target, kind in ((SCREENSHOT_RECALL, testset.SCREENSHOT), (PHOTO_RECALL, "photo")):
            found.append(Check(f"{name}: {target.label}", recall.get(kind), target))
        found.append(
            Check(
                f"{name}: {NO_FALSE_MATCH.label}", pipeline.text_free_photos_matched, NO_FALSE_MATCH
            )
        )
        embedding = results.embedding_ms_per_photo
        ratio = None if embedding is None else pipeline.seconds_without_text * 1000 / embedding
        found.append(Check(f"{name}: {FREE_COST.label}", ratio, FREE_COST))
    if results.index_cost is not None:
        found.append(Check(INDEX_COST.label, results.index_cost.ratio, INDEX_COST))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    example = "python benchmarks/ocr_quality.py --photos 60 --engines tesseract,tesseract+detect"
    parser = entry.parser(__doc__, example, work="a temporary folder, removed afterwards")
    parser.add_argument("--photos", type=int, default=60, help="images with text (default 60)")
    parser.add_argument(
        "--engines",
        default=",".join(measure.CANDIDATES),
        help=f"pipelines to compare (default: all: {','.join(measure.CANDIDATES)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="12 images with text, the product's pipelines, one first-look side",
    )
    parser.add_argument(
        "--cost-photos",
        type=int,
        default=None,
        help="photos for the index cost, 1 in 10 with text (default 40, --quick 10; 0: none)",
    )
    parser.add_argument(
        "--cost-size", default="4000x3000", help="their size, WxH (default 12 MP: 4000x3000)"
    )
    parser.add_argument(
        "--cost-tiny",
        action="store_true",
        help="the tests' tiny bundle for the index cost (pessimistic: its embedding is cheap)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pipelines = [name for name in args.engines.split(",") if name]
    unknown = [name for name in pipelines if name not in measure.CANDIDATES]
    if unknown or not pipelines:
        parser.error(f"--engines: unknown {unknown} (known: {', '.join(measure.CANDIDATES)})")
    if args.photos < 2:
        parser.error("--photos must be at least 2")
    photos, sides = args.photos, SIDES
    if args.quick:
        photos, sides = 12, SIDES[:1]
        pipelines = [name for name in pipelines if name in measure.PRODUCT] or pipelines

    try:
        width, height = (int(side) for side in args.cost_size.lower().split("x"))
    except ValueError:
        parser.error(f"--cost-size: WxH, not {args.cost_size!r}")
    default_cost = 10 if args.quick else 40
    plan = CostPlan(
        default_cost if args.cost_photos is None else args.cost_photos,
        (width, height),
        args.cost_tiny,
    )

    def measured() -> Results:
        with work_directory(args.work) as work:
            return run(work, photos, pipelines, sides, args.seed, plan)

    return entry.finish(
        measured,
        args.json_path,
        title="text in photos: Korean recognition quality and cost per pipeline",
        checks=checks,
        errors=(FileNotFoundError, measure.ocr_engines.EngineUnavailable),
    )


if __name__ == "__main__":
    sys.exit(main())
