"""benchmarks/calibration_reliability.py: its arithmetic, its report, and one small run.

No figure of the calibration is asserted here beyond what the file itself computes: the
measured misses live in the benchmark's output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from benchscripts import load_script

from trainer.calibration import ReliabilityBin

# Tensors this small gain nothing from two threads (see conftest.py).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


bench = load_script("calibration_reliability.py", "calibration_reliability")


def _bin(low: float, predicted: float, observed: float, error: float) -> Any:
    return ReliabilityBin(low, low + 0.1, 100, 100.0, predicted, observed, error, error)


def test_the_worst_miss_counts_only_the_measured_bins() -> None:
    fit = bench.FitFigure(
        rows=2000,
        seed=0,
        level="instance",
        fitted_on=bench.SHIPPED,
        a=100.0,
        b=-30.0,
        bins=(
            _bin(0.0, 0.01, 0.012, 0.001),
            _bin(0.3, 0.35, 0.10, 0.05),  # far off, but its rate is known only to ±0.05
            _bin(0.9, 0.96, 0.92, 0.01),
        ),
    )
    assert fit.worst == pytest.approx(0.04)
    assert fit.within
    assert fit.midpoint == pytest.approx(0.3)
    # p = ½ moves by a/4 per unit of cosine: 0.05 of probability is 0.002 at a = 100.
    assert fit.cosine_for_tolerance == pytest.approx(0.002)
    missed = bench.FitFigure(
        2000, 0, "concept", bench.BEST, 100.0, -30.0, (_bin(0.5, 0.6, 0.5, 0.02),)
    )
    assert missed.worst == pytest.approx(0.1) and not missed.within


def test_a_small_run_reports_both_fits_at_both_levels(tmp_path: Path, capsys) -> None:
    out = tmp_path / "figures.json"
    argv = ["--rows", "2000", "--seeds", "0", "--test", "4000", "--negatives", "5"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    report = capsys.readouterr().out
    assert re.search(
        r"\n   rows  seed   test  recall image to korean +train \(s\)\n  2,000 +0  4,000 ", report
    )
    summary = report.split("\nsummary\n")[1]
    for level in bench.LEVELS:
        for fitted_on in (bench.SHIPPED, bench.BEST):
            assert re.search(rf"{level} +{re.escape(fitted_on)} +[01] +1 ", summary)

    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["tolerance"] == 0.05 and data["measured"] == 0.02
    (world,) = data["worlds"]
    assert (world["rows"], world["seed"], world["test"]) == (2000, 0, 4000)
    assert 0 < world["recall_image_to_korean"] <= 1
    assert all((f["rows"], f["seed"]) == (2000, 0) for f in data["fits"])
    fits = {(f["level"], f["fitted_on"]): f for f in data["fits"]}
    assert set(fits) == {(lv, on) for lv in bench.LEVELS for on in (bench.SHIPPED, bench.BEST)}
    # The shipped calibration is one curve, measured at both levels.
    shipped = [fits[(lv, bench.SHIPPED)] for lv in bench.LEVELS]
    assert shipped[0]["a"] == shipped[1]["a"] > 0 and shipped[0]["b"] == shipped[1]["b"]
    for fit in fits.values():
        measured = [b for b in fit["bins"] if b["calibrated_error"] <= 0.02]
        assert measured, fit  # the outer bins always hold enough pairs
        worst = max(abs(b["predicted"] - b["observed"]) for b in measured)
        assert fit["worst"] == pytest.approx(worst)
        assert fit["within"] == (worst <= 0.05)
        predicted = [b["predicted"] for b in fit["bins"]]
        assert predicted == sorted(predicted)


def test_arguments_out_of_range_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--rows", "500"])
    assert stopped.value.code == 2
    assert "--rows 1000" in capsys.readouterr().err
