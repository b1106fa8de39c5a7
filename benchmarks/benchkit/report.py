"""The report every benchmark prints: its typed results rendered as they are, then its targets.

Scalar figures become aligned `label  value unit` lines (the label is the name, the unit its
suffix: see `benchkit.figures`), a nested dataclass its own indented section, a sequence of
dataclasses a table, and the checks a `Targets:` list of PASS/FAIL lines. A report is written
once here, so every benchmark reads alike and none can drop a figure its JSON holds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from benchkit.figures import Check, Spread, items

# Name suffix -> unit shown and the factor to it; the longest suffix that matches wins.
UNITS = (
    ("_per_s", "/s", 1.0),
    ("_bytes", "MiB", 1 / 1024**2),
    ("_ms", "ms", 1.0),
    ("_mb", "MB", 1.0),
    ("_gb", "GB", 1.0),
    ("seconds", "s", 1.0),
    ("_s", "s", 1.0),
)
SPREAD_RUNS_SHOWN = 12  # more runs than this: the summary alone (the JSON has every run)


def unit_of(name: str) -> tuple[str, str, float]:
    """(label, unit, factor) for a figure's name."""
    for suffix, unit, factor in UNITS:
        if name.endswith(suffix) and name != suffix:
            label = name[: -len(suffix)].rstrip("_") or name
            return label.replace("_", " "), unit, factor
    return name.replace("_", " "), "", 1.0


def duration(seconds: float) -> str:
    """Seconds in the unit a person reads best: s, min, h or days."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def number(value: float | int, unit: str = "", factor: float = 1.0) -> str:
    """A number as the report shows it, with its unit; near 1 (cosines, recalls) to 1e-7."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and factor == 1.0:
        text = f"{value:,}"
    else:
        value = float(value) * factor
        if unit == "s" and value >= 120:
            return duration(value)
        size = abs(value)
        if math.isnan(value) or size == 0:
            text = f"{value:g}"
        elif 0.999 <= size < 1:
            text = f"{value:.7f}"
        elif size >= 1000:
            text = f"{value:,.0f}"
        else:
            text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def shown(value: Any, unit: str = "", factor: float = 1.0) -> str:
    """Any figure's value as one line of text."""
    if value is None:
        return "n/a"
    if isinstance(value, Spread):
        runs, stats = "", ("p50", "min", "max")
        if value.count <= SPREAD_RUNS_SHOWN:
            runs = "  [" + " ".join(number(v, "", factor) for v in value.runs) + "]"
        else:
            stats = ("p50", "p90", "p99", "min", "max")
        summary = "  ".join(f"{s} {number(getattr(value, s), '', factor)}" for s in stats)
        return f"{summary}  n {value.count}{runs}" + (f" {unit}" if unit else "")
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{k}: {shown(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        inner = " ".join(shown(v, "", factor) for v in value)
        return f"[{inner}]" + (f" {unit}" if unit else "")
    if isinstance(value, int | float):
        return number(value, unit, factor)
    return str(value)


def _is_table(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(dataclasses.is_dataclass(v) and not isinstance(v, Spread) for v in value)
    )


def _is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, Spread | type)


SPREAD_COLUMNS = ("p50", "p90", "p99", "min", "max", "count")
TABLE_COLUMNS = 12  # wider rows are shown one section each


def _columns(row: Any) -> list[tuple[str, str, str | None]]:
    """(header, figure name, statistic or None) of each column: a `Spread` has one column
    per statistic; nested dataclasses are left to the JSON."""
    columns = []
    for name, value in items(row):
        if _is_section(value) or _is_table(value):
            continue
        label, unit, _ = unit_of(name)
        label = f"{label} ({unit})" if unit else label
        stats = SPREAD_COLUMNS if isinstance(value, Spread) else (None,)
        columns += [(f"{label} {stat}" if stat else label, name, stat) for stat in stats]
    return columns


def table(rows: Sequence[Any], indent: str) -> list[str]:
    """Rows of one dataclass as aligned columns."""
    columns = _columns(rows[0])
    header = [head for head, _, _ in columns]
    cells = []
    for row in rows:
        values = dict(items(row))
        cells.append(
            [
                shown(getattr(values[name], stat) if stat else values[name], "", unit_of(name)[2])
                for _, name, stat in columns
            ]
        )
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    left = [isinstance(getattr(rows[0], name), str) for _, name, _ in columns]

    def line(texts: Sequence[str]) -> str:
        parts = (
            t.ljust(w) if lt else t.rjust(w) for t, w, lt in zip(texts, widths, left, strict=True)
        )
        return (indent + "  ".join(parts)).rstrip()

    return [line(header), *(line(c) for c in cells)]


def block(figures: Any, indent: str = "") -> list[str]:
    """A dataclass's scalar figures as aligned lines, then its sections and tables."""
    rows, nested = [], []
    for name, value in items(figures):
        if _is_section(value) or _is_table(value):
            nested.append((name, value))
            continue
        label, unit, factor = unit_of(name)
        rows.append((label, shown(value, unit, factor)))
    width = max((len(label) for label, _ in rows), default=0)
    lines = [f"{indent}{label:<{width}}  {text}".rstrip() for label, text in rows]
    for name, value in nested:
        title, inner = name.replace("_", " "), indent + "  "
        if not _is_table(value):
            lines += ["", f"{indent}{title}", *block(value, inner)]
        elif len(_columns(value[0])) <= TABLE_COLUMNS:
            lines += ["", f"{indent}{title}", *table(value, inner)]
        else:
            for number, row in enumerate(value, start=1):
                lines += ["", f"{indent}{title} {number}", *block(row, inner)]
    return lines


def targets(checks: Sequence[Check]) -> list[str]:
    """`Targets: N of M met` and one line per check, its verdict first."""
    met = sum(bool(c.passed) for c in checks)
    width = max(len(c.label) for c in checks)
    lines = [f"Targets: {met} of {len(checks)} met"]
    for c in checks:
        unit = c.target.unit if c.target is not None else ""
        value = "n/a" if c.value is None else f"{c.value:.4g}{unit}"
        limit = str(c.target) if c.target is not None else "no target"
        lines.append(f"  {c.verdict():<16} {c.label:<{width}}  {value:>10}  {limit}")
    return lines


def render(title: str, results: Any, checks: Sequence[Check] = ()) -> str:
    """The whole report: the title, every figure, the targets."""
    lines = [title, "=" * len(title), *block(results)]
    if checks:
        lines += ["", *targets(checks)]
    return "\n".join(lines) + "\n"
