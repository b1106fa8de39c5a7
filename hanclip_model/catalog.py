"""What each built-in model is worth and what it costs: published Korean figures, the costs
measured here, and the one rule that picks the default model from both.

Published figures are text->image retrieval in Korean, as their sources report them (per
cent): XTD10-ko R@10 (open_clip's `multilingual_mscoco_captions`, 1k images) and
Crossmodal-3600-ko, the mean of R@1, R@5 and R@10. Nothing here is measured by hanclip.

Measured costs come from `benchmarks/model_costs.py` (real-size architectures with random
weights on this machine's CPU), which writes `measured_costs.json` beside this module; a
missing or unreadable file means no measured column, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPEN_CLIP_RESULTS = (
    "open_clip docs/openclip_multilingual_retrieval_results.csv "
    "(https://github.com/mlfoundations/open_clip)"
)
IMMICH_SEARCHING = (
    "Immich docs, Searching: CLIP models (https://docs.immich.app/features/searching)"
)
XTD10 = "xtd10"
CROSSMODAL3600 = "crossmodal3600"
DATASET_LABELS = {
    XTD10: "XTD10-ko text->image R@10",
    CROSSMODAL3600: "Crossmodal-3600-ko text->image mean R@1/5/10",
}
MEASURED_PATH = Path(__file__).with_name("measured_costs.json")


@dataclass(frozen=True)
class PublishedFigure:
    """One published Korean figure (per cent) and where it was published."""

    dataset: str  # XTD10 or CROSSMODAL3600
    value: float
    source: str
    recalls: tuple[float, ...] = ()  # R@1, R@5, R@10 behind a mean, where published

    @property
    def label(self) -> str:
        return DATASET_LABELS[self.dataset]

    def as_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "metric": self.label,
            "value": self.value,
            "recalls": list(self.recalls) or None,
            "source": self.source,
        }


@dataclass(frozen=True)
class CatalogEntry:
    """A built-in's published Korean figures; `note` says why there are none, where so."""

    name: str
    figures: tuple[PublishedFigure, ...]
    note: str | None = None

    def figure(self, dataset: str) -> PublishedFigure | None:
        return next((f for f in self.figures if f.dataset == dataset), None)

    @property
    def rank_key(self) -> tuple[float, float] | None:
        """What "the best published Korean figure" compares: Crossmodal-3600's mean (every
        new built-in has one), then XTD10's R@10; None without a Crossmodal-3600 figure."""
        xm = self.figure(CROSSMODAL3600)
        if xm is None:
            return None
        xtd = self.figure(XTD10)
        return (xm.value, xtd.value if xtd is not None else float("-inf"))


def _xm(mean: float, source: str, *recalls: float) -> PublishedFigure:
    return PublishedFigure(CROSSMODAL3600, mean, source, tuple(recalls))


def _xtd(r10: float) -> PublishedFigure:
    return PublishedFigure(XTD10, r10, OPEN_CLIP_RESULTS)


CATALOG: dict[str, CatalogEntry] = {
    "mclip": CatalogEntry(
        "mclip",
        (),
        note="none published: the sentence-transformers model card of "
        "clip-ViT-B-32-multilingual-v1 reports no per-language retrieval; the Multilingual-CLIP "
        "(M-CLIP) cards report Korean XTD10 only for M-CLIP's own text towers (e.g. XLM-R-Large "
        "ViT-B/32: R@10 82.1), not this one; open_clip's multilingual table does not include "
        "it; Babel-ImageNet (Geigle et al. 2023) evaluates it on zero-shot classification",
    ),
    "xlmr-b32": CatalogEntry(
        "xlmr-b32", (_xtd(84.1), _xm(65.44, OPEN_CLIP_RESULTS, 43.5, 71.7, 81.1))
    ),
    "siglip2-b32": CatalogEntry("siglip2-b32", (_xm(67.54, IMMICH_SEARCHING),)),
    "siglip2-b16": CatalogEntry("siglip2-b16", (_xm(70.3, IMMICH_SEARCHING),)),
    "nllb-siglip-base": CatalogEntry(
        "nllb-siglip-base", (_xtd(94.0), _xm(73.19, OPEN_CLIP_RESULTS, 54.1, 79.3, 86.1))
    ),
    "nllb-siglip-large": CatalogEntry(
        "nllb-siglip-large", (_xtd(95.4), _xm(77.2, OPEN_CLIP_RESULTS, 59.4, 83.1, 89.1))
    ),
}


def published(name: str) -> CatalogEntry | None:
    """The catalog entry of a built-in; None for any other model (a trained bundle)."""
    return CATALOG.get(name)


@dataclass(frozen=True)
class MeasuredCost:
    """What one built-in cost on the benchmark's machine (`benchmarks/model_costs.py`)."""

    index_photos_per_s: float  # image tower, batches of 32 preprocessed photos
    query_ms: float  # one short Korean query, warm
    cold_search_s: float  # a fresh process: load the text side, encode one query
    index_peak_mib: float
    search_peak_mib: float
    download_mb: float  # parameters x bytes per parameter, both towers

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MeasuredCost:
        return cls(**{name: float(data[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class MeasuredCosts:
    machine: str  # where they were measured, in words
    costs: dict[str, MeasuredCost]


def read_measured(path: Path = MEASURED_PATH) -> MeasuredCosts | None:
    """The measured costs the benchmark wrote; None when there are none to read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        costs = {name: MeasuredCost.from_json(row) for name, row in data["models"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return MeasuredCosts(str(data.get("machine") or "unknown machine"), costs)


# -- the default model -------------------------------------------------------------------------

BASELINE = "mclip"  # today's default: OpenAI ViT-B/32 images, the cost the rule compares with
MAX_INDEX_COST = 1.3  # x the baseline's index time per photo
MAX_QUERY_MS = 50.0  # query encoding on this CPU, strictly under


@dataclass(frozen=True)
class DefaultPick:
    """The rule's choice and, for each built-in, why it was or was not eligible."""

    model: str
    reasons: dict[str, str]

    @property
    def rule(self) -> str:
        return (
            f"the built-in with the best published Korean figure ({DATASET_LABELS[CROSSMODAL3600]}"
            f", then {DATASET_LABELS[XTD10]}) among those whose measured index cost is at most "
            f"{MAX_INDEX_COST:g}x {BASELINE}'s ViT-B/32 and whose query encoding stays under "
            f"{MAX_QUERY_MS:g} ms; {BASELINE} when none qualifies"
        )


def pick_default(
    catalog: dict[str, CatalogEntry], measured: MeasuredCosts | None, baseline: str = BASELINE
) -> DefaultPick:
    """Apply the rule (`DefaultPick.rule`) to published figures and measured costs."""
    reasons: dict[str, str] = {}
    base = measured.costs.get(baseline) if measured is not None else None
    if base is None:
        return DefaultPick(baseline, {baseline: "no measured costs: the baseline stays"})
    best: tuple[tuple[float, float], str] | None = None
    for name, entry in catalog.items():
        cost = measured.costs.get(name)
        if cost is None:
            reasons[name] = "not measured"
            continue
        ratio = base.index_photos_per_s / cost.index_photos_per_s
        if ratio > MAX_INDEX_COST:
            reasons[name] = f"index cost {ratio:.2f}x > {MAX_INDEX_COST:g}x"
        elif cost.query_ms >= MAX_QUERY_MS:
            reasons[name] = f"query {cost.query_ms:.1f} ms >= {MAX_QUERY_MS:g} ms"
        elif entry.rank_key is None:
            reasons[name] = f"eligible (index {ratio:.2f}x), no published Korean figure"
        else:
            reasons[name] = f"eligible (index {ratio:.2f}x, query {cost.query_ms:.1f} ms)"
            if best is None or entry.rank_key > best[0]:
                best = (entry.rank_key, name)
    return DefaultPick(best[1] if best is not None else baseline, reasons)
