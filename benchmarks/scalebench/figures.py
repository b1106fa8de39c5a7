"""The scale benchmark's figures (frozen dataclasses, the keys of `--json`) and its targets."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchkit.figures import Check, Spread, Target

# The cold search's target by library size: up to 100k photos 0.5 s, up to 1M 1 s.
COLD_TARGETS_S = ((100_000, 0.5), (1_000_000, 1.0))
# The no-op re-index's target, for exactly this many real files.
REINDEX_TARGET_FILES = 100_000
REINDEX_TARGET_S = 2.0
# Issue 24: a cold search with the text in photos within this factor of the same search by
# look alone (`--no-text`, the search before it), for libraries up to this size.
TEXT_RATIO_TARGET = 1.2
TEXT_TARGET_PHOTOS = 100_000
# Issue 26: the timeline's first page (the page `hanclip serve` opens on), 60 photos newest
# first, on the running server, p50 within this, for libraries up to this size.
TIMELINE_TARGET_MS = 30.0
TIMELINE_TARGET_PHOTOS = 100_000


@dataclass(frozen=True)
class TextFigures:
    """Cold searches on their own with the text in photos (`scalebench.texts`) and the same
    searches by look alone (`--no-text`), taken in turns: queries some photo's text holds,
    and queries no text holds."""

    text_rows: int  # photos with a reading with text
    write_s: float  # writing them through the checkout's PhotoText; 0: an earlier run did
    matching_text_s: Spread
    matching_look_s: Spread
    unmatched_text_s: Spread
    unmatched_look_s: Spread
    matching_text_hits: Spread  # of each timed matching search's hits, those found by text

    @property
    def matching_ratio(self) -> float:
        """Text included over look alone, p50 over p50, for queries that match text."""
        return self.matching_text_s.p50 / self.matching_look_s.p50

    @property
    def unmatched_ratio(self) -> float:
        return self.unmatched_text_s.p50 / self.unmatched_look_s.p50


@dataclass(frozen=True)
class SizeFigures:
    photos: int
    real_files: int
    dim: int
    library: str
    library_origin: str  # "copied from the fabricated library" or "reused"
    db_mb: float
    hnsw_mb: float
    first_index_s: float  # the first `index` of this library by the checkout (migrates, builds)
    cold_search_s: Spread
    cold_rss_mb: Spread
    warm_search_ms: Spread
    load_index_s: Spread
    sync_index_s: Spread
    id_read_s: Spread | None  # store.ids() + labels; None when the checkout lacks them
    reindex_s: Spread
    reindex_counts: dict[str, int] = field(default_factory=dict)
    # Cores other processes kept busy during each cold search and re-index (the machine may
    # be shared); None off Linux.
    cold_others_cores: Spread | None = None
    reindex_others_cores: Spread | None = None
    # The same cold search processes while the resident server a first search started runs
    # (None: the checkout started none).
    resident_search_s: Spread | None = None
    resident_rss_mb: Spread | None = None
    # The text in photos (None: the checkout has none).
    text: TextFigures | None = None
    # /api/timeline's first page on the running server, client wall time (None: the
    # checkout has no timeline).
    timeline_first_page_ms: Spread | None = None

    @property
    def freshness_s(self) -> float:
        """What sync_index spends beyond loading the index: the freshness check."""
        return self.sync_index_s.p50 - self.load_index_s.p50


def cold_target_s(photos: int) -> float | None:
    for limit, seconds in COLD_TARGETS_S:
        if photos <= limit:
            return seconds
    return None


def size_checks(figures: SizeFigures) -> list[Check]:
    """The cold searches' targets at this size, and the re-index's at 100,000 files; a
    figure with no target at this size is listed with none."""
    cold = cold_target_s(figures.photos)
    found = []
    kinds = [("on its own", "alone", figures.cold_search_s)]
    if figures.resident_search_s is not None:
        kinds.append(("resident server up", "resident", figures.resident_search_s))
    for kind, key, spread in kinds:
        label = f"cold search p50 at {figures.photos:,}, {kind}"
        key = f"cold_search_{key}_{figures.photos}"
        target = None if cold is None else Target(key, label, "<=", cold, " s")
        found.append(Check(label, spread.p50, target))
    label = f"no-op re-index of {figures.real_files:,} files"
    target = Target("reindex_s", label, "<", REINDEX_TARGET_S, " s")
    on_target = figures.real_files == REINDEX_TARGET_FILES
    found.append(Check(label, figures.reindex_s.p50, target if on_target else None))
    if figures.text is not None:
        for kind, ratio in (
            ("matching", figures.text.matching_ratio),
            ("unmatched", figures.text.unmatched_ratio),
        ):
            label = f"cold search with text / --no-text at {figures.photos:,}, {kind} query"
            key = f"text_ratio_{kind}_{figures.photos}"
            target = Target(key, label, "<=", TEXT_RATIO_TARGET, "x")
            applies = figures.photos <= TEXT_TARGET_PHOTOS
            found.append(Check(label, ratio, target if applies else None))
    if figures.timeline_first_page_ms is not None:
        label = f"timeline first page (60 photos) p50 at {figures.photos:,}"
        key = f"timeline_first_page_{figures.photos}"
        target = Target(key, label, "<=", TIMELINE_TARGET_MS, " ms")
        applies = figures.photos <= TIMELINE_TARGET_PHOTOS
        found.append(Check(label, figures.timeline_first_page_ms.p50, target if applies else None))
    return found


@dataclass(frozen=True)
class Report:
    checkout: str
    bundle: str
    cores: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    work: str
    runs: int
    sizes: tuple[SizeFigures, ...]
    wall_s: float


def checks(report: Report) -> list[Check]:
    return [check for size in report.sizes for check in size_checks(size)]
