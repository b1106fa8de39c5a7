"""What every benchmark script shares: its common flags and the tail of its `main`.

`finish` prints the figures as the report (progress goes to stderr), writes them as JSON with
`--json PATH`, and exits 0 whether or not the targets are met (a missed target is a figure;
a script whose target is a limit it must hold says `fail_on_miss`), 1 when a measurement
could not be made (`BenchmarkError`, or the errors a script adds).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from benchkit.figures import Check, to_json
from benchkit.processes import BenchmarkError
from benchkit.report import render

Results = TypeVar("Results")
Sizes = TypeVar("Sizes")


def parser(doc: str, example: str, *, work: str | None = None) -> argparse.ArgumentParser:
    """A parser described by the script's docstring, with `--json PATH` and, when `work`
    says what it defaults to, `--work DIR`."""
    made = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=f"example: {example}")
    if work is not None:
        made.add_argument("--work", type=Path, help=f"work directory ({work})")
    made.add_argument("--json", type=Path, dest="json_path", help="also write figures here")
    return made


def resized(sizes: Sizes, args: argparse.Namespace, *names: str) -> Sizes:
    """`sizes` with each field of `names` that the command line gave (at least 1)."""
    given = {name: getattr(args, name) for name in names}
    return replace(sizes, **{k: max(1, v) for k, v in given.items() if v is not None})


def finish(
    measure: Callable[[], Results],
    json_path: Path | None,
    *,
    title: str,
    checks: Callable[[Results], Sequence[Check]] = lambda results: (),
    errors: tuple[type[Exception], ...] = (),
    fail_on_miss: bool = False,
) -> int:
    """Measure, print the report, write the JSON; 1 when a measurement could not be made
    (or, with `fail_on_miss`, when a target was missed)."""
    try:
        results = measure()
    except (BenchmarkError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    found = checks(results)
    print(render(title, results, found), end="")
    if json_path is not None:
        json_path.write_text(to_json(results, found), encoding="utf-8")
    return 1 if fail_on_miss and any(c.passed is False for c in found) else 0
