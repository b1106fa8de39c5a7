"""The report on stdout: one section per measurement, each target's verdict beside its figure,
and the list of targets last."""

from __future__ import annotations

from collections.abc import Sequence

from speedbench import targets
from speedbench.processes import median
from speedbench.results import (
    AccuracyResult,
    BenchmarkResults,
    CosineSummary,
    FastTextAccuracy,
    HnswRun,
    IndexResult,
)
from speedbench.settings import (
    GB,
    INDEX_BATCH,
    JPEG_QUALITY,
    MODEL_BATCHES,
    PHOTO_SIZE,
    SEED_PHOTOS,
)
from speedbench.targets import Check, Target, checks, ratios

Verdicts = dict[Target, Check]


def _line(label: str, value: str, note: str = "") -> str:
    return f"  {label:<46} {value:>14}  {note}".rstrip()


def _target_note(check: Check) -> str:
    t = check.target
    return f"target {t.op} {t.limit:g}{t.unit}  {check.verdict()}"


def _runs(values: Sequence[float], unit: str = "s") -> str:
    return "[" + " ".join(f"{v:.2f}" for v in values) + f"] {unit}"


def _optional(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _optional_runs(values: Sequence[float | None]) -> str:
    return "[" + " ".join("n/a" if v is None else f"{v:.2f}" for v in values) + "]"


def _cosines(summary: CosineSummary) -> str:
    return f"min {summary.min:.7f}, mean {summary.mean:.7f} (1 - min = {1 - summary.min:.1e})"


def header_section(results: BenchmarkResults) -> list[str]:
    env, load, bundle = results.environment, results.load_average, results.bundle
    free = ", ".join(f"{k}: {v:.2f}" for k, v in load.cores_available.items())
    return [
        "hanclip speed benchmark, offline: "
        + (
            "the given bundle"
            if results.one_time.bundle == "given"
            else "real-size architectures, random weights"
        ),
        "=" * 76,
        f"machine       {env.cores} cores usable, {env.cpu}, {env.platform}, "
        f"CUDA {'yes' if env.cuda else 'no'}",
        f"software      python {env.python}, torch {env.torch}, onnxruntime "
        f"{env.onnxruntime}, open_clip {env.open_clip}, sentence-transformers "
        f"{env.sentence_transformers}",
        f"bundle        {bundle.path}",
        f"              image {bundle.image_model}, text {bundle.text_model}",
        f"load average  start {list(load.at_start_1_5_15)}, during (1-min) min "
        f"{load.during_1min_min} / median {load.during_1min_median} / max "
        f"{load.during_1min_max}, end {list(load.at_end_1_5_15)} (includes this benchmark)",
        f"free cores    {free} of {env.cores} (CPU time {env.cores} busy loops got in 1 s)",
        f"runs          {results.sizes.runs} cold processes per timed command; medians shown",
        f"work dir      {results.work}; benchmark wall time {results.wall_s:.0f} s",
    ]


def one_time_section(results: BenchmarkResults) -> list[str]:
    t = results.one_time
    return [
        "One-time costs (not part of any ratio)",
        _line("random-weight bundle", f"{t.bundle_s:.1f} s", f"({t.bundle})"),
        _line(
            "12-MP JPEG generation",
            f"{t.photos_s:.1f} s",
            f"({t.photos_generated} generated, mean {t.photo_mean_mb:.2f} MB)",
        ),
        _line(f"first `hanclip index` ({SEED_PHOTOS} small photos)", f"{t.first_index_s:.1f} s"),
        _line(
            "  of which fast text export",
            f"{t.fast_text_export_s:.1f} s",
            "(first index - median start-up)",
        ),
    ]


def search_section(results: BenchmarkResults, verdicts: Verdicts) -> list[str]:
    s = results.search
    return [
        f"Search: {s.library_photos:,}-photo library, process start to exit "
        f"(results printed), {s.runs} runs",
        _line("hanclip search (median)", f"{s.ours_median_s:.3f} s", _runs(s.ours_wall_s)),
        _line("", "", _target_note(verdicts[targets.SEARCH_WALL_S])),
        _line("  its CPU time (median)", f"{median(s.ours_cpu_s):.3f} s"),
        _line("  other jobs' cores during each run", "", _optional_runs(s.others_cores)),
        _line(
            "  of which imports (one more run, -X importtime)",
            f"{s.imports_s:.3f} s",
            f"of {s.imports_run_wall_s:.3f} s in that run (the log adds a little)",
        ),
        _line(
            "naive: torch+ST+open_clip, numpy (median)",
            f"{s.naive_median_s:.3f} s",
            _runs(s.naive_wall_s),
        ),
        _line("naive / ours", f"{s.speedup:.1f}x", _target_note(verdicts[targets.SEARCH_SPEEDUP])),
    ]


def _index_lines(index: IndexResult) -> list[str]:
    return [
        _line(
            f"hanclip index --device {index.device}, whole command",
            f"{index.whole_median_s:.2f} s",
            f"{_runs(index.whole_wall_s)} = {index.whole_photos_per_s:.2f} photos/s",
        ),
        _line(
            "  embedding phase (library opened -> last commit)",
            f"{index.embedding_median_s:.2f} s",
            f"{_runs(index.embedding_phase_s)} = {index.photos_per_s:.2f} photos/s "
            "(used for the ratios)",
        ),
        _line(
            f"  steady state, after the first batch of {INDEX_BATCH}",
            _optional(index.steady_photos_per_s),
            "photos/s " + _optional_runs(index.steady_photos_per_s_runs)
            if index.steady_photos_per_s is not None
            else f"(needs --photos >= {3 * INDEX_BATCH})",
        ),
        _line(
            "  same command on an empty folder (start-up)",
            f"{index.startup_median_s:.2f} s",
            _runs(index.startup_wall_s),
        ),
        _line(
            "  whole - empty-folder start-up",
            f"{index.whole_median_s - index.startup_median_s:.2f} s",
            f"= {_optional(index.whole_minus_startup_photos_per_s)} photos/s (cross-check)",
        ),
        _line(
            "  cores busy (extra CPU / extra wall)",
            _optional(index.cores_busy),
            "below the core count: idle pipeline stages or other jobs' load",
        ),
        _line(
            "  other jobs' cores during each embedding phase",
            "",
            _optional_runs(index.others_cores)
            + " (/proc/stat busy time less this benchmark's and hanclip's)",
        ),
    ]


def index_section(results: BenchmarkResults, verdicts: Verdicts) -> list[str]:
    index, c = results.index, results.ceiling
    r = ratios(index, c)
    lines = [
        f"Index: {index.photos} JPEGs {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} q{JPEG_QUALITY} "
        f"(mean {results.one_time.photo_mean_mb:.2f} MB), fresh library, {index.runs} rounds of",
        "  ceiling, `hanclip index`, naive loop; each ratio is the median of per-round ratios",
        *_index_lines(index),
        _line("  peak RSS", f"{index.peak_rss_bytes / GB:.2f} GB"),
        "  per round, medians shown:",
        _line(
            f"decode, load_image draft to {c.image_size}px, 1 core",
            f"{c.decode_core_s_per_photo * 1000:.1f} ms",
            "core-s per photo",
        ),
        _line(
            f"model, ViT forward batch {c.model_batch}, {c.torch_threads} threads",
            f"{c.model_core_s_per_photo * 1000:.1f} ms",
            f"core-s per photo (process CPU time, best of {MODEL_BATCHES} batches; "
            f"wall {c.model_wall_s_per_photo * 1000:.1f} ms)",
        ),
        _line(
            "model, the same forwards on 1 thread",
            f"{c.model_1thread_core_s_per_photo * 1000:.1f} ms",
            "core-s per photo (no parallel overhead)",
        ),
        _line(
            "preprocess (open_clip, not in the ceiling)",
            f"{c.preprocess_core_s_per_photo * 1000:.1f} ms",
            "core-s per photo",
        ),
        _line(
            f"machine ceiling = {c.cores} / (decode + model)",
            f"{c.ceiling_photos_per_s:.2f}",
            f"photos/s {_runs(c.ceiling_runs, '')}",
        ),
        _line(
            "naive loop (full decode, 1 photo/forward)",
            f"{c.naive_photos_per_s:.2f}",
            f"photos/s {_runs(c.naive_runs, '')}after a warm-up photo, no start-up",
        ),
        _line(
            "ours / ceiling",
            f"{r.index_vs_ceiling:.2f}",
            _target_note(verdicts[targets.INDEX_VS_CEILING]),
        ),
        _line(
            "ours / naive",
            f"{r.index_vs_naive:.1f}x",
            _target_note(verdicts[targets.INDEX_VS_NAIVE]),
        ),
        _line(
            "steady state / ceiling",
            _optional(r.index_steady_vs_ceiling),
            "(information: the first batch's pipeline fill and hashing left out)",
        ),
        _line(
            "ours / strict ceiling (1-thread model core-s)",
            _optional(r.index_vs_strict_ceiling),
            f"(information; strict ceiling {c.strict_ceiling_photos_per_s:.2f} photos/s)",
        ),
        _line(
            "ours / ceiling at the cores other jobs left",
            _optional(r.index_vs_ceiling_given_others),
            "(information: ceiling x free cores / cores)",
        ),
        _line(
            "whole command: ours / ceiling, ours / naive",
            f"{r.index_whole_vs_ceiling:.2f}, {r.index_whole_vs_naive:.1f}x",
            "(information; start-up included)",
        ),
    ]
    if results.index_cuda is not None:
        lines += ["CUDA (information, no target)", *_index_lines(results.index_cuda)]
    return lines


def hnsw_section(results: BenchmarkResults, verdicts: Verdicts) -> list[str]:
    h = results.hnsw

    def row(name: str, run: HnswRun) -> str:
        return _line(
            name,
            f"recall {run.recall_at_10:.4f}",
            f"p50 {run.p50_ms:.2f} ms, p95 {run.p95_ms:.2f} ms, build {run.build_s:.0f} s",
        )

    return [
        f"HNSW: {h.vectors:,} x {h.dim} vectors, {h.queries:,} held-out queries, "
        f"M={h.M} ef_construction={h.ef_construction} ef_search={h.ef_search}",
        row(f"clustered ({h.clusters:,} Gaussian clusters)", h.clustered),
        _line("", "", _target_note(verdicts[targets.HNSW_RECALL])),
        _line("", "", _target_note(verdicts[targets.HNSW_P50_MS])),
        row("random unit vectors (worst case, no target)", h.random),
        _line(
            f"filtered: {h.filtered.passing:,} pass ({h.filtered.share:.1%}), "
            f"{h.filtered.strategy}",
            f"p50 {h.filtered.p50_ms:.2f} ms",
            f"p95 {h.filtered.p95_ms:.2f} ms, exactly k: {h.filtered.complete:.0%} of queries "
            "(SQLite date query + search_among)",
        ),
        _line("", "", _target_note(verdicts[targets.FILTERED_P50_MS])),
        "  Targets are judged on the clustered set: real CLIP embeddings are clustered, while",
        "  random 512-d unit vectors are nearly equidistant and defeat any graph index.",
    ]


def memory_section(results: BenchmarkResults, verdicts: Verdicts) -> list[str]:
    s, i = results.search, results.index
    return [
        "Memory: peak RSS of the process (wait4 rusage, max over runs)",
        _line(
            "hanclip search",
            f"{s.peak_rss_bytes / GB:.2f} GB",
            _target_note(verdicts[targets.SEARCH_RSS_GB]),
        ),
        _line(
            "hanclip index",
            f"{i.peak_rss_bytes / GB:.2f} GB",
            _target_note(verdicts[targets.INDEX_RSS_GB]),
        ),
        _line("naive search (information)", f"{s.naive_peak_rss_bytes / GB:.2f} GB"),
    ]


def accuracy_section(accuracy: AccuracyResult, verdicts: Verdicts) -> list[str]:
    text, draft = accuracy.fast_text, accuracy.draft_decode
    lines = [
        "Approximate paths vs the torch fp32 reference (cosine, same inputs)",
        _line(
            f"fast text (ONNX), {text.sentences} sentences, one at a time",
            "",
            _cosines(text.one_at_a_time),
        ),
        _line("fast text (ONNX), same sentences batched", "", _cosines(text.batched)),
        _line("", "", _target_note(verdicts[targets.TEXT_COSINE])),
        *_int8_lines(text, verdicts),
    ]
    if accuracy.heads is not None:
        lines += [
            _line("heads in numpy (BatchNorm folded), f1", "", _cosines(accuracy.heads.image)),
            _line("heads in numpy (BatchNorm folded), f2", "", _cosines(accuracy.heads.text)),
        ]
    lines += [
        _line(
            f"JPEG draft vs full decode, {draft.photos} photos", "", _cosines(draft.draft_vs_full)
        ),
        _line(
            "  scale: different photos (random weights)",
            "",
            f"mean {draft.different_photos_mean:.6f}",
        ),
    ]
    return lines


def _int8_lines(text: FastTextAccuracy, verdicts: Verdicts) -> list[str]:
    int8 = text.int8
    if int8.gate_cosine is None:
        return []  # the export did not try int8: nothing to report
    if not int8.kept:
        return [
            _line(
                "fast text int8 (ONNX dynamic quantisation)",
                "not kept",
                f"worst cosine with the fp32 export {int8.gate_cosine:.4f} < 0.99: never used",
            )
        ]
    speed = f"{int8.ms_per_query:.1f} vs {text.fp32_ms_per_query:.1f} ms per query (fp32)"
    return [
        _line("fast text int8, one at a time", "", _cosines(int8.one_at_a_time)),
        _line("", "", _target_note(verdicts[targets.TEXT_INT8_COSINE])),
        _line("  int8 speed, warm", "", speed),
    ]


def targets_section(all_checks: Sequence[Check]) -> list[str]:
    met = sum(bool(c.passed) for c in all_checks)
    lines = [f"Targets: {met} of {len(all_checks)} met"]
    for c in all_checks:
        t = c.target
        value = "n/a" if c.value is None else f"{c.value:.4g}{t.unit}"
        lines.append(f"  {c.verdict():<16} {t.label:<48} {value:>10} {t.op} {t.limit:g}{t.unit}")
    return lines


def format_report(results: BenchmarkResults) -> str:
    all_checks = checks(results)
    verdicts = {c.target: c for c in all_checks}
    sections = [
        header_section(results),
        one_time_section(results),
        search_section(results, verdicts),
        index_section(results, verdicts),
        hnsw_section(results, verdicts),
        memory_section(results, verdicts),
        accuracy_section(results.accuracy, verdicts),
        targets_section(all_checks),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"
