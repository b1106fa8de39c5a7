"""`hanclip bench`: every model on the same data in one run, one row per model.

Retrieval and zero-shot classification use the full, standard protocols (every image and
caption of the split, captions grouped per image, class names aligned with the folders);
latency times what a search pays per query (Korean text to search vector) and how fast each
model embeds photos, on this machine, in this run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hanclip_eval.baselines import Embedder
from hanclip_eval.datasets import DATASETS, ClassificationSet, RetrievalSet, build_prompts
from hanclip_eval.metrics import classification_report, retrieval_report
from hanclip_model.errors import BundleError, HanclipError
from hanclip_model.heads import l2_normalize

LATENCY = "latency"  # no dataset: each model's speed, measured on this machine
BENCH_DATASETS = (*DATASETS, LATENCY)
EmbedderFactory = Callable[[], Embedder]
# (model, stage, items done now, items in the stage)
Progress = Callable[[str, str, int, int], None]

LATENCY_QUERIES = (
    "바다 위 노을",
    "누워있는 고양이",
    "공원에서 뛰노는 강아지",
    "눈 덮인 산",
    "밤의 도시 야경",
    "생일 케이크와 촛불",
    "해변에서 노는 아이들",
    "비 오는 날의 거리",
    "벚꽃이 핀 공원",
    "가족 여행 단체 사진",
    "맛있는 김치찌개",
    "자전거를 타는 사람",
    "창가에 앉은 고양이",
    "캠핑장의 모닥불",
    "한강 다리 위 풍경",
    "눈사람을 만드는 아이",
    "결혼식 신랑 신부",
    "바닷가 등대",
    "단풍이 든 숲길",
    "커피 한 잔과 책",
)


@dataclass
class BenchRow:
    """One model's figures, or why it could not be measured."""

    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def check_bench_dataset(name: str) -> None:
    """A one-line `HanclipError` unless `bench` knows the dataset `name`."""
    if name not in BENCH_DATASETS:
        raise HanclipError(f"unknown dataset {name!r}: choose one of {', '.join(BENCH_DATASETS)}")


def _embed_batches(
    embed: Callable[[Sequence], np.ndarray],
    items: Sequence,
    batch_size: int,
    report: Callable[[int], None] | None,
) -> np.ndarray:
    chunks = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        chunks.append(embed(batch))
        if report:
            report(len(batch))
    return np.concatenate(chunks, axis=0)


def _measure(name: str, run: Callable[[], dict[str, float]]) -> BenchRow:
    """Run one model; a model that cannot load is reported, not fatal (a broken dataset is)."""
    started = time.perf_counter()
    try:
        metrics = run()
    except BundleError as exc:
        return BenchRow(name, error=str(exc), seconds=time.perf_counter() - started)
    return BenchRow(name, metrics, seconds=time.perf_counter() - started)


def _reporter(progress: Progress | None, model: str, stage: str, total: int):
    if progress is None:
        return None
    progress(model, stage, 0, total)
    return lambda done: progress(model, stage, done, total)


def bench_retrieval(
    dataset: RetrievalSet,
    models: dict[str, EmbedderFactory],
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> list[BenchRow]:
    """Image→text and text→image R@1/5/10, RSUM and R-Precision for every model."""
    rows = []
    for name, factory in models.items():

        def run(name: str = name, factory: EmbedderFactory = factory) -> dict[str, float]:
            embedder = factory()
            images = _embed_batches(
                embedder.embed_images,
                dataset.image_paths,
                batch_size,
                _reporter(progress, name, "images", len(dataset.image_paths)),
            )
            texts = _embed_batches(
                embedder.embed_texts,
                dataset.captions,
                batch_size,
                _reporter(progress, name, "captions", len(dataset.captions)),
            )
            return retrieval_report(images, texts, dataset.caption_image)

        rows.append(_measure(name, run))
    return rows


def class_vectors(embedder: Embedder, prompts: list[list[str]]) -> np.ndarray:
    """One vector per class: the normalised mean of its prompt embeddings."""
    flat = [p for class_prompts in prompts for p in class_prompts]
    vectors = embedder.embed_texts(flat)
    per_class = len(prompts[0])
    return l2_normalize(vectors.reshape(len(prompts), per_class, -1).mean(axis=1))


def bench_classification(
    dataset: ClassificationSet,
    models: dict[str, EmbedderFactory],
    templates: Sequence[str],
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> list[BenchRow]:
    """Zero-shot accuracy and macro-F1 with Korean class names in `templates`."""
    prompts = build_prompts(dataset.class_names_ko, list(templates))
    rows = []
    for name, factory in models.items():

        def run(name: str = name, factory: EmbedderFactory = factory) -> dict[str, float]:
            embedder = factory()
            classes = class_vectors(embedder, prompts)
            images = _embed_batches(
                embedder.embed_images,
                dataset.images,
                batch_size,
                _reporter(progress, name, "images", len(dataset.images)),
            )
            return classification_report(images, classes, dataset.labels)

        rows.append(_measure(name, run))
    return rows


def synthetic_photos(count: int, size: tuple[int, int] = (640, 480), seed: int = 0):
    """Noise photos for timing the image tower (decoding is not what is timed here)."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(count)
    ]


def bench_latency(
    models: dict[str, EmbedderFactory],
    *,
    queries: Sequence[str] = LATENCY_QUERIES,
    rounds: int = 3,
    warmup: int = 3,
    image_count: int = 64,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> list[BenchRow]:
    """Per-query ms (p50, p95) from Korean text to search vector, and photos/s embedded.

    Each query is encoded alone, as `search` does; the first `warmup` queries are not
    counted (lazy loading and one-off allocations). Photos are in memory already, so the
    throughput is the image model's, not the JPEG decoder's.
    """
    photos = synthetic_photos(image_count)
    rows = []
    for name, factory in models.items():

        def run(name: str = name, factory: EmbedderFactory = factory) -> dict[str, float]:
            embedder = factory()
            for query in queries[:warmup]:
                embedder.embed_texts([query])
            report = _reporter(progress, name, "queries", rounds * len(queries))
            timings = []
            for _ in range(rounds):
                for query in queries:
                    started = time.perf_counter()
                    embedder.embed_texts([query])
                    timings.append(time.perf_counter() - started)
                    if report:
                        report(1)
            embedder.embed_images(photos[:2])
            started = time.perf_counter()
            _embed_batches(
                embedder.embed_images,
                photos,
                batch_size,
                _reporter(progress, name, "photos", len(photos)),
            )
            elapsed = time.perf_counter() - started
            ms = np.array(timings) * 1000
            return {
                "query_p50_ms": float(np.percentile(ms, 50)),
                "query_p95_ms": float(np.percentile(ms, 95)),
                "images_per_s": len(photos) / elapsed,
                "n_queries": len(timings),
            }

        rows.append(_measure(name, run))
    return rows


RANDOM_MODEL_NAMES = ("hanclip", "mclip", "clip-translate", "koclip")


def random_weight_models(
    workdir: Path, names: Sequence[str], device: str | None = None
) -> dict[str, EmbedderFactory]:
    """The real architectures with random weights: same cost, no download, meaningless output.

    A name that is not a baseline gets HanCLIP's architecture: ViT-B/32, a MiniLM-L12 shaped
    text encoder and the two heads. Models are built inside the factory, so building time
    never counts as query time.
    """
    from hanclip_eval.baselines import ClipTranslateEmbedder, KoclipEmbedder, Translator
    from hanclip_eval.random_models import (
        DISTILBERT_MULTILINGUAL,
        MINILM_L12,
        random_clip_vit_b32,
        random_dual_encoder,
        random_minilm,
        random_nllb_600m,
    )
    from hanclip_model.encoders import quiet_transformers

    def hanclip() -> Embedder:
        text = random_minilm(workdir / "minilm", shape=MINILM_L12, tokenizer="unigram")
        return _random_bundle(workdir / "hanclip", "hanclip", text, with_heads=True, device=device)

    def mclip() -> Embedder:
        text = random_minilm(workdir / "distilbert", shape=DISTILBERT_MULTILINGUAL, dense_out=512)
        return _random_bundle(workdir / "mclip", "mclip", text, with_heads=False, device=device)

    def clip_translate() -> Embedder:
        model, tokenizer = random_nllb_600m(device=device)
        # Random weights never emit </s>: generate as many tokens as the query has.
        translator = Translator.from_model(model, tokenizer, device=device, length_ratio=1.0)
        return ClipTranslateEmbedder(random_clip_vit_b32(device), translator)

    def koclip() -> Embedder:
        return KoclipEmbedder(str(random_dual_encoder(workdir / "koclip")), device=device)

    quiet_transformers()  # saving the random models would draw transformers' own bars
    builders = {"mclip": mclip, "clip-translate": clip_translate, "koclip": koclip}
    return {name: builders.get(name, hanclip) for name in names or RANDOM_MODEL_NAMES}


def _random_bundle(
    directory: Path, name: str, text_model: Path, *, with_heads: bool, device: str | None
) -> Embedder:
    from hanclip_eval.random_models import RANDOM_CLIP_SPEC
    from hanclip_model.bundle import HEADS_NAME, write_bundle
    from hanclip_model.model import load_bundle
    from trainer.heads import HanclipHeads

    directory.mkdir(parents=True, exist_ok=True)
    if with_heads:
        HanclipHeads(image_dim=512, text_dim=384, out_dim=512).eval().save(directory / HEADS_NAME)
    write_bundle(
        directory,
        name=name,
        image_model=RANDOM_CLIP_SPEC,
        text_model=str(text_model),
        heads=HEADS_NAME if with_heads else None,
    )
    return load_bundle(directory, device=device)
