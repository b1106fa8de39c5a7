"""benchmarks/ocr_quality.py: its scoring rules, and one quick run with the real engines.

No recognition figure is asserted beyond what the run itself computes: the measured quality
lives in the benchmark's output. Skipped like tests/test_ocr_engines.py (HANCLIP_REQUIRE_OCR
makes a missing engine a failure).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from benchscripts import load_script

from hanclip_library import ocr_engines
from hanclip_library.text_engines import EngineUnavailable

bench = load_script("ocr_quality.py", "ocr_quality")
from ocrbench import measure, testset  # noqa: E402  (the script put ocrbench on the path)


def test_the_text_match_ranks_by_words_then_confidence() -> None:
    readings = [
        measure.Reading("스타벅스 영수증", 0.7, 0.1, None),
        measure.Reading("스타 벅스", 0.9, 0.1, None),  # a space inside a word costs nothing
        measure.Reading("", 0.0, 0.1, None),
        measure.Reading("영수증 스타벅스 4,500원", 0.8, 0.1, None),
    ]
    assert measure.ranked(("스타벅스", "영수증"), readings, range(4)) == [3, 0, 1]
    assert measure.recall_at([3, 0, 1], frozenset({0, 3}), 1) == 1.0
    assert measure.recall_at([1, 0], frozenset({0, 3}), 10) == 0.5
    assert measure.character_error_rate("서울역 2번\n출구", "서울억 2번 출구") == pytest.approx(
        1 / 7
    )


def test_queries_are_words_of_one_to_four_syllables_and_pairs() -> None:
    sample = testset.Sample(Path("a.png"), testset.SCREENSHOT, "서울역 2번 출구", "f", 20)
    other = testset.Sample(Path("b.png"), testset.SCREENSHOT, "서울역 앞", "f", 20)
    queries = {q.words: q for q in testset.make_queries([sample, other])}
    assert set(queries) == {
        ("서울역",),
        ("출구",),
        ("앞",),
        ("서울역", "2번"),
        ("2번", "출구"),
        ("서울역", "앞"),
    }
    assert queries[("서울역",)].relevant == {0, 1} and queries[("출구",)].kind == "2-syllable"


def _missing() -> str | None:
    try:
        ocr_engines.open_engine("tesseract+detect", "kor+eng", fetch=None)
        testset.fonts()
    except (EngineUnavailable, FileNotFoundError) as exc:
        return str(exc)
    return None


def test_a_quick_run_reports_every_kind(tmp_path: Path, capsys) -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("HANCLIP_REQUIRE_OCR"):
            raise RuntimeError(f"HANCLIP_REQUIRE_OCR is set, but {missing}")
        pytest.skip(missing)
    out = tmp_path / "figures.json"
    argv = ["--quick", "--engines", "tesseract+detect", "--work", str(tmp_path), "--json", str(out)]
    argv += ["--cost-photos", "0"]  # measured alone below
    assert bench.main(argv) == 0
    report = capsys.readouterr().out
    assert "Targets:" in report and "tesseract+detect: screenshots: recall@10" in report
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["photos"] == 12 and data["text_free"] == 4 and data["queries"] > 0
    kinds = {(k["pipeline"], k["kind"]) for k in data["kinds"]}
    assert kinds == {("tesseract+detect", kind) for kind in testset.KINDS}
    for kind in data["kinds"]:
        if kind["kind"] != testset.NO_TEXT:
            assert kind["cer"] >= 0 and 0 <= kind["recall_at_10"] <= 1
    (look,) = data["first_look"]
    assert look["side"] == bench.SIDES[0] and look["ms_per_photo"] > 0


def test_the_index_cost_is_measured_with_and_without_the_text_pass(tmp_path: Path) -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("HANCLIP_REQUIRE_OCR"):
            raise RuntimeError(f"HANCLIP_REQUIRE_OCR is set, but {missing}")
        pytest.skip(missing)
    from ocrbench import cost

    figure = cost.measure_cost(tmp_path, 10, (320, 240), tiny=True)
    assert (figure.photos, figure.with_text, figure.bundle) == (10, 1, "tiny")
    assert figure.index_no_ocr_s > 0 and figure.index_ocr_s > 0
    assert figure.ratio == pytest.approx(figure.index_ocr_s / figure.index_no_ocr_s)
    check = bench.checks(bench.Results(1, 1, 0, "", None, (), (), (), (), figure))[-1]
    assert check.target is bench.INDEX_COST and check.value == figure.ratio


def test_unknown_engines_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--engines", "paddle"])
    assert stopped.value.code == 2 and "paddle" in capsys.readouterr().err
