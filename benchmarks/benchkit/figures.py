"""What a benchmark's figures are made of, and their `--json` form.

A benchmark's results are frozen dataclasses. Their fields are the measured figures and their
properties the figures derived from them (a ratio, a median): both are figures, both go into
the JSON under their names and into the report (`benchkit.report`). A name's suffix gives its
unit (`_s`, `_ms`, `_mb`, `_bytes`, `_per_s`). Repeated timings are a `Spread`; a target is a
`Target`, and its verdict on one run a `Check`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spread:
    """Several runs of one figure, in the order they were measured."""

    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not len(values):
            raise ValueError("no run to summarise")
        return cls(tuple(float(v) for v in values))

    def _percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.runs, dtype=np.float64), q))

    @property
    def count(self) -> int:
        return len(self.runs)

    @property
    def p50(self) -> float:
        """The median."""
        return self._percentile(50)

    @property
    def p90(self) -> float:
        return self._percentile(90)

    @property
    def p99(self) -> float:
        return self._percentile(99)

    @property
    def min(self) -> float:
        return float(min(self.runs))

    @property
    def max(self) -> float:
        return float(max(self.runs))


@dataclass(frozen=True)
class Target:
    key: str  # the target's name under "checks" in the --json file
    label: str
    op: str  # "<=", "<" or ">="
    limit: float
    unit: str = ""

    def met_by(self, value: float) -> bool:
        if self.op == "<":
            return value < self.limit
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}{self.unit}"


@dataclass(frozen=True)
class Check:
    """One target against its measured value; `target` None: no target applies (the value
    is shown, judged by nothing)."""

    label: str
    value: float | None  # None: not measured in this run
    target: Target | None

    @classmethod
    def of(cls, target: Target, value: float | None) -> Check:
        return cls(target.label, value, target)

    @property
    def passed(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.target.met_by(self.value)

    def verdict(self) -> str:
        """PASS, FAIL with the gap in per cent of the limit, or n/a."""
        if self.passed is None or self.target is None or self.value is None:
            return "n/a"
        if self.passed:
            return "PASS"
        gap = abs(self.value - self.target.limit) / self.target.limit
        word = "short" if self.target.op == ">=" else "over"
        return f"FAIL ({gap:.0%} {word})" if gap >= 0.01 else f"FAIL ({gap:.1%} {word})"


def items(figures: Any) -> Iterator[tuple[str, Any]]:
    """A dataclass's fields, then its properties, as (name, value)."""
    for field in dataclasses.fields(figures):
        yield field.name, getattr(figures, field.name)
    for name, member in vars(type(figures)).items():
        if isinstance(member, property):
            yield name, getattr(figures, name)


def plain(value: Any) -> Any:
    """`value` as JSON holds it: dataclasses (with their properties) as objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: plain(v) for name, v in items(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_json(results: Any, checks: Sequence[Check] = ()) -> str:
    """The `--json` file: every figure under its name, and each target's measured value
    and verdict under its key."""
    data = plain(results)
    keyed = [c for c in checks if c.target is not None]
    if keyed:
        data["checks"] = {c.target.key: c.value for c in keyed}
        data["passed"] = {c.target.key: c.passed for c in keyed}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
