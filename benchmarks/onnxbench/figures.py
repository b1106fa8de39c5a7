"""The figures of `benchmarks/index_onnx.py` (frozen dataclasses, the keys of `--json`), its
sizes and its targets."""

from __future__ import annotations

from dataclasses import dataclass

from benchkit.environment import Environment
from benchkit.figures import Check, Spread, Target
from benchkit.processes import LoadSummary, median

# The exported bundle, one photo, a whole `hanclip index` process.
STARTUP = Target("startup_s", "exported start-up, median", "<=", 1.5, " s")
# ONNX / torch photos/s of the encoder stage (the end-to-end ratios are for information).
ENCODER_RATIO = Target("encoder_ratio", "encoder stage ONNX/torch", ">=", 1.1, "x")


@dataclass(frozen=True)
class Sizes:
    photos: int  # JPEGs of `photo_size` for the end-to-end runs and the cosines
    runs: int  # timed runs of each process, per backend
    photo_size: tuple[int, int] = (1632, 1224)  # about 2 megapixels
    batch: int = 32  # the encoder stage's batch: `hanclip index`'s default --batch-size
    repeats: int = 5  # timed batches per encoder (after one warm-up); the best counts
    warmup: bool = True  # one untimed process of each backend before the timed ones


FULL = Sizes(photos=64, runs=3)
QUICK = Sizes(photos=4, runs=1, photo_size=(640, 480), batch=8, repeats=2, warmup=False)


@dataclass(frozen=True)
class Processes:
    """Whole `hanclip index` processes of one backend, a fresh library each. The steady rate
    is read from the library while it runs (each batch of photos is one commit): photos
    committed between the first commit and the last, over the time between them, so neither
    the start-up nor the first forward counts."""

    wall_s: Spread
    peak_rss_mb: Spread
    steady_photos_per_s_runs: tuple[float | None, ...]  # None: under two batches

    @property
    def steady_photos_per_s(self) -> float | None:
        seen = [v for v in self.steady_photos_per_s_runs if v is not None]
        return median(seen) if seen else None


@dataclass(frozen=True)
class Startup:
    """`hanclip index` of a folder holding one photo."""

    onnx: Processes
    torch: Processes
    onnx_imports_torch: bool  # one more exported run, under `python -X importtime`
    onnx_imports_onnxruntime: bool
    onnx_imports_open_clip: bool

    @property
    def speedup(self) -> float:
        """Torch median over ONNX median."""
        return self.torch.wall_s.p50 / self.onnx.wall_s.p50


@dataclass(frozen=True)
class EncoderStage:
    """Preprocessed batches through the image tower alone, in this process."""

    batch: int
    repeats: int
    threads: int  # torch's intra-op threads and ONNX Runtime's: the usable cores
    onnx_batch_s: tuple[float, ...]
    torch_batch_s: tuple[float, ...]
    min_cosine_photos: float  # ONNX vs torch, every benchmark photo, same pixels

    @property
    def onnx_photos_per_s(self) -> float:
        """Batch over the best batch time."""
        return self.batch / min(self.onnx_batch_s)

    @property
    def torch_photos_per_s(self) -> float:
        return self.batch / min(self.torch_batch_s)

    @property
    def ratio(self) -> float:
        return self.onnx_photos_per_s / self.torch_photos_per_s


@dataclass(frozen=True)
class EndToEnd:
    """`hanclip index` of the photos."""

    photos: int
    megapixels: float
    batch: int  # `hanclip index`'s default --batch-size: photos per commit
    onnx: Processes
    torch: Processes

    @property
    def onnx_photos_per_s(self) -> float:
        """Photos over the median wall time: start-up included."""
        return self.photos / self.onnx.wall_s.p50

    @property
    def torch_photos_per_s(self) -> float:
        return self.photos / self.torch.wall_s.p50

    @property
    def ratio(self) -> float:
        return self.onnx_photos_per_s / self.torch_photos_per_s

    @property
    def steady_ratio(self) -> float | None:
        onnx, torch = self.onnx.steady_photos_per_s, self.torch.steady_photos_per_s
        return onnx / torch if onnx and torch else None


@dataclass(frozen=True)
class Int8:
    """`quantize_image_encoder` on a copy of the export; timed like the encoder stage."""

    kept: bool
    verify_min_cosine: float  # int8 vs fp32 on the verification images (what decides)
    min_cosine_photos: float  # int8 vs fp32 on the benchmark photos
    batch_s: tuple[float, ...]
    photos_per_s: float
    ratio_vs_fp32: float  # int8 / ONNX fp32 photos/s, same loop
    ratio_vs_torch: float
    message: str  # the refusal, when refused


@dataclass(frozen=True)
class Results:
    environment: Environment
    sizes: Sizes
    image_spec: str
    export_s: float
    export_already: bool
    export_min_cosine: float | None
    startup: Startup
    encoder: EncoderStage
    end_to_end: EndToEnd
    int8: Int8 | None  # None: --quantize-images not given
    load_average: LoadSummary
    work: str
    wall_s: float


def checks(results: Results) -> list[Check]:
    return [
        Check.of(STARTUP, results.startup.onnx.wall_s.p50),
        Check.of(ENCODER_RATIO, results.encoder.ratio),
    ]
