"""The match probability: the logistic fit, its reliability on the synthetic world, the bundle's
`calibration` block, and `search` / `serve` with calibrated and uncalibrated models."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from entrypoint import run_entry as _run_entry
from served import running_server

from hanclip_eval.tiny_models import write_bundle_dir
from hanclip_model import load_bundle
from hanclip_model.bundle import MANIFEST_NAME, Calibration, read_bundle
from hanclip_model.errors import BundleError
from trainer.calibration import (
    NEGATIVES_PER_POSITIVE,
    CalibrationFailed,
    LabelledScores,
    concept_pairs,
    fit_logistic,
    held_out_count,
    held_out_rows,
    reliability,
    sample_pairs,
)
from trainer.synthetic import SyntheticWorld, make_world
from trainer.train import TrainConfig, TrainResult, train_heads, write_trained_bundle

# Tensors this small gain nothing from two threads (see conftest.py).
pytestmark = pytest.mark.usefixtures("single_torch_thread")

# -- the fit ------------------------------------------------------------------------------


def _draws(a: float, b: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 0.6, n)
    return scores, rng.random(n) < Calibration(a, b).probability(scores)


def test_the_fit_recovers_a_known_logistic() -> None:
    scores, matches = _draws(40.0, -12.0, 200_000)
    fit = fit_logistic(LabelledScores(scores, matches, np.ones(scores.size)))
    assert fit.a == pytest.approx(40.0, rel=0.03)
    assert fit.b == pytest.approx(-12.0, rel=0.03)


def test_weights_stand_for_the_pairs_left_out() -> None:
    """Keeping one non-match in ten at weight 10 fits the same curve as keeping them all."""
    scores, matches = _draws(40.0, -12.0, 400_000, seed=1)
    kept = matches | (np.arange(scores.size) % 10 == 0)
    weights = np.where(matches, 1.0, 10.0)[kept]
    fit = fit_logistic(LabelledScores(scores[kept], matches[kept], weights))
    assert fit.a == pytest.approx(40.0, rel=0.05)
    assert fit.b == pytest.approx(-12.0, rel=0.05)


@pytest.mark.parametrize(
    ("scores", "matches", "words"),
    [
        ([0.1, 0.2, 0.8, 0.9], [False, False, True, True], "separate"),
        ([0.1, 0.2, 0.3], [False, False, False], "one class"),
    ],
)
def test_what_cannot_be_fitted_is_no_calibration(scores, matches, words) -> None:
    with pytest.raises(CalibrationFailed, match=words):
        fit_logistic(LabelledScores(np.array(scores), np.array(matches), np.ones(len(scores))))


def test_a_probability_falling_with_the_score_is_refused() -> None:
    scores, matches = _draws(-30.0, 9.0, 20_000)
    with pytest.raises(CalibrationFailed, match="lower probability"):
        fit_logistic(LabelledScores(scores, matches, np.ones(scores.size)))


def test_the_probability_rises_with_the_score_and_inverts() -> None:
    calibration = Calibration(a=120.0, b=-50.0)
    scores = np.linspace(-1.0, 1.0, 2001)
    p = calibration.probability(scores)
    assert np.all(np.diff(p) >= 0) and p[0] < 1e-50 and p[-1] == 1.0
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # nor overflow
        steep = Calibration(a=1e4, b=0.0).probability(scores)
    assert steep[0] == 0.0 and steep[-1] == 1.0
    for probability in (0.01, 0.5, 0.9):
        score = calibration.score_at(probability)
        assert float(calibration.probability(np.array([score]))[0]) == pytest.approx(probability)


def test_held_out_rows_are_a_fixed_share_of_the_captions() -> None:
    counts = {n: held_out_count(n) for n in (18, 999, 1000, 2000, 10_000, 1_000_000)}
    assert counts == {18: 0, 999: 0, 1000: 100, 2000: 200, 10_000: 500, 1_000_000: 10_000}
    rows = held_out_rows(2000, seed=0)
    assert len(rows) == 200 == len(np.unique(rows)) and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, held_out_rows(2000, seed=0))
    assert not np.array_equal(rows, held_out_rows(2000, seed=1))
    assert len(held_out_rows(18, seed=0)) == 0


def test_reliability_of_calibrated_draws_is_within_its_error() -> None:
    rng = np.random.default_rng(2)
    predicted = rng.random(100_000)
    matches = rng.random(predicted.size) < predicted
    bins = reliability(predicted, matches, np.ones(predicted.size))
    assert [b.low for b in bins] == pytest.approx([k / 10 for k in range(10)])
    for b in bins:
        assert abs(b.predicted - b.observed) <= 4 * b.calibrated_error


def test_concept_pairs_meet_their_concept_and_only_other_concepts() -> None:
    """A match is another row of the same concept; non-matches are rows of other concepts;
    a row alone in its concept is left out; both classes weigh the same."""
    rng = np.random.default_rng(3)
    concepts = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # concept 2 has one row
    n = concepts.size
    # Image rows are 1 and text row j is j + 1 (one coordinate, not normalised): the score
    # of a pair names the text row it met.
    images = np.ones((n, 1), dtype=np.float32)
    texts = (np.arange(n, dtype=np.float32) + 1)[:, None]
    pairs = concept_pairs(images, texts, concepts, 6, seed=rng.integers(100))
    met = np.rint(pairs.cosines).astype(int) - 1  # the text row each pair met
    rows = np.array([i for i in range(n) if i != 5])  # the row of concept 2 has no partner
    matches, others = met[pairs.matches], met[~pairs.matches].reshape(rows.size, 6)
    assert matches.size == rows.size
    assert np.all(matches != rows) and np.all(concepts[matches] == concepts[rows])
    assert np.all(concepts[others] != concepts[rows][:, None])
    assert 5 in others  # the lone row is still a non-match for the others
    assert pairs.weights[pairs.matches].sum() == pytest.approx(pairs.weights[~pairs.matches].sum())
    with pytest.raises(ValueError, match="two concepts"):
        concept_pairs(images[:3], texts[:3], np.zeros(3, int), 2, seed=0)
    with pytest.raises(ValueError, match="as many"):
        concept_pairs(images, texts, concepts[:-1], 2, seed=0)


def test_the_world_knows_the_concept_of_each_test_sample() -> None:
    """Samples of one concept look alike to the encoders; test_concepts says which those are."""
    world = make_world(200, 200, 200, 400, d_img=32, d_txt=24, n_concepts=5, seed=4)
    concepts = world.test_concepts
    assert concepts.shape == (400,) and concepts.dtype == np.int64
    assert set(np.unique(concepts)) == set(range(5))
    cosines = world.test_images @ world.test_images.T
    same = concepts[:, None] == concepts[None, :]
    off_diagonal = ~np.eye(400, dtype=bool)
    assert cosines[same & off_diagonal].mean() > cosines[~same].mean() + 0.2
    again = make_world(200, 200, 200, 400, d_img=32, d_txt=24, n_concepts=5, seed=4)
    np.testing.assert_array_equal(again.test_concepts, concepts)
    np.testing.assert_array_equal(again.test_images, world.test_images)


# -- the synthetic world: what the probability means, measured on real pairs -----------------

D_IMG, D_TXT = 128, 96
CONFIG = TrainConfig(epochs=4, batch_size=128, seed=0, device="cpu")
TEST_PAIRS = 5000
# Non-matches met by each match when measuring: each weighs 1/NEGATIVES, so matches and
# non-matches weigh the same, the even odds the probability is stated at.
NEGATIVES = 20
# A bin tests the calibration when its observed match rate is known to ±0.02 (one standard
# error, were the calibration exact): 0.05 is then 2.5 standard errors.
MEASURED = 0.02


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    # The banks of tests/test_train_synthetic.py (make_world draws the test pairs last).
    return make_world(2000, 2000, 2000, TEST_PAIRS, d_img=D_IMG, d_txt=D_TXT, seed=0)


@pytest.fixture(scope="module")
def trained(world: SyntheticWorld) -> TrainResult:
    return train_heads(world.banks, CONFIG)


def _project(trained: TrainResult, world: SyntheticWorld) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        images = trained.heads.project_image(torch.from_numpy(world.test_images)).numpy()
        korean = trained.heads.project_text(torch.from_numpy(world.test_korean)).numpy()
    return images, korean


def test_probabilities_match_the_observed_match_rate_of_real_pairs(
    world: SyntheticWorld, trained: TrainResult
) -> None:
    """Held-out (image, Korean) pairs of new samples, never seen in training nor in the fit:
    each photo with its own caption (a match) and with NEGATIVES others (non-matches,
    weighing 1/NEGATIVES each). In every bin of predicted probability measured to ±0.02 the
    mean prediction is within 0.05 of the observed match rate, and that rate rises from bin
    to bin. Here those are the bins below 10 % and above 80 %, 96 % of the pairs: the 10-80 %
    bins hold too few to be measured to ±0.02 at this size. Measured on 25,000 samples, the
    middle bins are over-confident by 0.05-0.22 (benchmarks/calibration_reliability.py, 6
    worlds; trainer/calibration.py says why): that is not asserted here, because it is not
    within 0.05."""
    report = trained.calibration
    assert report is not None and report.calibration is not None, report
    assert report.held_out_rows == 200
    assert report.pairs == 200 * (1 + NEGATIVES_PER_POSITIVE)
    calibration = report.calibration
    assert calibration.a > 0

    images, korean = _project(trained, world)
    pairs = sample_pairs(images, korean, NEGATIVES, seed=1)
    bins = reliability(calibration.probability(pairs.cosines), pairs.matches, pairs.weights)
    measured = [b for b in bins if b.calibrated_error <= MEASURED]
    assert {(b.low, b.high) for b in measured} >= {(0.0, 0.1), (0.9, 1.0)}
    assert sum(b.weight for b in measured) >= 0.95 * sum(b.weight for b in bins)
    for b in measured:
        assert abs(b.predicted - b.observed) <= 0.05, b
    observed = [b.observed for b in measured]
    assert observed == sorted(observed)


def test_a_tiny_corpus_is_left_uncalibrated_and_says_why(world: SyntheticWorld) -> None:
    banks = world.banks
    small = replace(
        banks, english_clip=banks.english_clip[:50], english_text=banks.english_text[:50]
    )
    result = train_heads(small, TrainConfig(epochs=1, batch_size=16, seed=0, device="cpu"))
    assert result.calibration is not None and result.calibration.calibration is None
    assert "only 50 English captions" in (result.calibration.reason or "")


# -- the bundle ------------------------------------------------------------------------------


def test_the_bundle_carries_the_calibration(
    world: SyntheticWorld, trained: TrainResult, tmp_path: Path
) -> None:
    manifest = write_trained_bundle(
        trained,
        tmp_path / "bundle",
        name="synthetic",
        image_model="ViT-B-32:openai",
        text_model="paraphrase-multilingual-MiniLM-L12-v2",
        cfg=CONFIG,
        banks_info=world.banks.sizes(),
    )
    block = json.loads(manifest.read_text(encoding="utf-8"))["calibration"]
    expected = trained.calibration.calibration  # type: ignore[union-attr]
    assert (block["a"], block["b"]) == (expected.a, expected.b)
    assert block["pairs"] == 200 * (1 + NEGATIVES_PER_POSITIVE)
    assert block["negatives_per_positive"] == NEGATIVES_PER_POSITIVE
    assert block["held_out_rows"] == 200 and block["base_rate"] == 0.5
    assert block["noise_std"] == CONFIG.noise_std

    assert read_bundle(manifest.parent).calibration == expected
    model = load_bundle(manifest.parent)
    scores = np.array([0.1, 0.3, 0.5])
    np.testing.assert_array_equal(model.match_probability(scores), expected.probability(scores))
    assert load_bundle("mclip").match_probability(scores) is None


def _manifest(directory: Path, calibration: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = {"format": 1, "image_model": "ViT-B-32:openai", "text_model": "m", "heads": None}
    if calibration is not None:
        data["calibration"] = calibration
    (directory / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"a": 0.0, "b": 1.0}, "'a' must be positive"),
        ({"a": -3.0, "b": 1.0}, "'a' must be positive"),
        ({"a": "40", "b": 1.0}, "'a' must be a number"),
        ({"a": True, "b": 1.0}, "'a' must be a number"),
        ({"a": 40.0}, "'b' must be a number"),
        ({"a": float("nan"), "b": 1.0}, "'a' must be finite"),
        ({"a": 40.0, "b": float("inf")}, "'b' must be finite"),
        ([40.0, 1.0], "must be an object"),
    ],
)
def test_a_bad_calibration_block_is_a_bundle_error(tmp_path: Path, block, words: str) -> None:
    with pytest.raises(BundleError, match=words):
        read_bundle(_manifest(tmp_path, block))


def test_no_block_or_a_reason_leaves_a_bundle_uncalibrated(tmp_path: Path) -> None:
    assert read_bundle(_manifest(tmp_path / "none", None)).calibration is None
    reason = {"uncalibrated": "only 18 English captions", "held_out_rows": 0}
    assert read_bundle(_manifest(tmp_path / "why", reason)).calibration is None
    good = read_bundle(_manifest(tmp_path / "good", {"a": 40, "b": -12.5}))
    assert good.calibration == Calibration(a=40.0, b=-12.5)


# -- search and serve ------------------------------------------------------------------------


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


@pytest.fixture
def calibrated_library(tiny, photos: Path, library: Path, cli, tmp_path: Path):
    """A library indexed with the tiny heads bundle, and a calibrated twin of that bundle
    (the same encoders and heads, so the same search space), its curve centred on the
    library's scores for '바다' so that the probabilities spread out."""
    bundle = write_bundle_dir(
        tmp_path / "calibrated",
        tiny.image_spec,
        tiny.text_plain,
        heads="heads.safetensors",
        name="tiny-calibrated",
    )
    shutil.copy(tiny.heads_bundle / "heads.safetensors", bundle / "heads.safetensors")
    common = ["--library", library, "--model", tiny.heads_bundle]
    assert cli("index", photos, *common).exit_code == 0
    scores = [hit["score"] for hit in cli("search", "바다", "--json", *common).json()]
    a = 400.0
    b = -a * float(np.median(scores))
    data = json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["calibration"] = {"a": a, "b": b, "pairs": 1000, "negatives_per_positive": 99}
    (bundle / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    return library, bundle, tiny.heads_bundle, (a, b)


def test_search_json_has_a_match_probability_only_when_calibrated(calibrated_library, cli) -> None:
    library, calibrated, plain, (a, b) = calibrated_library
    hits = cli("search", "바다", "--json", "--library", library, "--model", calibrated).json()
    plain_hits = cli("search", "바다", "--json", "--library", library, "--model", plain).json()
    assert len(hits) == len(plain_hits) == 8
    for hit, plain_hit in zip(hits, plain_hits, strict=True):
        assert list(hit) == [
            "rank", "path", "score", "match_probability",
            "taken_at", "width", "height", "offline", "date_source",
        ]  # fmt: skip
        assert {k: v for k, v in hit.items() if k != "match_probability"} == plain_hit
        assert hit["match_probability"] == pytest.approx(_sigmoid(a * hit["score"] + b), abs=1e-3)
    probabilities = [hit["match_probability"] for hit in hits]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] > 0.6 and probabilities[-1] < 0.4


def test_the_table_shows_a_match_column_only_when_calibrated(calibrated_library, cli) -> None:
    library, calibrated, plain, _ = calibrated_library
    table = cli("search", "바다", "-n", "3", "--library", library, "--model", calibrated)
    assert table.exit_code == 0, table.stderr
    assert "match" in table.stdout.splitlines()[0] and "%" in table.stdout
    plain_table = cli("search", "바다", "-n", "3", "--library", library, "--model", plain)
    header = plain_table.stdout.splitlines()[0]
    assert "match" not in header and "%" not in plain_table.stdout


def test_min_prob_filters_inside_the_search(calibrated_library, cli) -> None:
    library, calibrated, _, _ = calibrated_library
    common = ["--library", library, "--model", calibrated, "--json"]
    every = cli("search", "바다", *common).json()
    probabilities = [hit["match_probability"] for hit in every]
    threshold = (probabilities[2] + probabilities[3]) / 2  # three photos pass
    passing = cli("search", "바다", "--min-prob", str(threshold), *common).json()
    assert [hit["path"] for hit in passing] == [hit["path"] for hit in every[:3]]
    assert all(hit["match_probability"] >= threshold for hit in passing)
    two = cli("search", "바다", "--min-prob", str(threshold), "-n", "2", *common).json()
    assert [hit["path"] for hit in two] == [hit["path"] for hit in every[:2]]
    by_date = cli("search", "바다", "--min-prob", str(threshold), "--sort", "date", *common)
    assert {hit["path"] for hit in by_date.json()} == {hit["path"] for hit in passing}
    # With --min-score too, the stricter of the two holds.
    both = cli(
        "search", "바다", "--min-prob", str(threshold),
        "--min-score", str((every[1]["score"] + every[2]["score"]) / 2), *common,
    ).json()  # fmt: skip
    assert [hit["path"] for hit in both] == [hit["path"] for hit in every[:2]]


def test_fast_path_and_typer_agree(calibrated_library, monkeypatch, capsys) -> None:
    library, calibrated, plain, _ = calibrated_library
    common = ["--library", str(library), "--model", str(calibrated)]
    for argv in (
        ["바다", "--min-prob", "0.5", "--json", *common],
        ["바다", "-n", "4", *common],  # the table, with its match column
        ["바다", "--min-prob", "0.5", "--library", str(library), "--model", str(plain)],
        ["바다", "--min-prob", "1.5", *common],
        ["바다", "--min-prob", "nan", *common],
    ):
        fast = _run_entry(monkeypatch, capsys, ["search", *argv], fast=True)
        slow = _run_entry(monkeypatch, capsys, ["search", *argv], fast=False)
        assert fast == slow, argv


@pytest.mark.parametrize(
    ("value", "words"),
    [("0.5", "not calibrated"), ("1.5", "between 0 and 1"), ("0", "between 0 and 1")],
)
def test_min_prob_errors_are_one_line(calibrated_library, cli, value: str, words: str) -> None:
    library, calibrated, plain, _ = calibrated_library
    model = plain if words == "not calibrated" else calibrated
    result = cli("search", "바다", "--min-prob", value, "--library", library, "--model", model)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], lines
    if words == "not calibrated":
        assert "--min-score" in lines[0]


def test_the_server_gives_match_probabilities_as_search_does(
    calibrated_library, photos: Path, cli, _cache_dir: Path
) -> None:
    library, calibrated, _, _ = calibrated_library
    expected = cli(
        "search", "바다", "-n", "5", "--json", "--library", library, "--model", calibrated
    ).json()
    threshold = (expected[1]["match_probability"] + expected[2]["match_probability"]) / 2
    with running_server(library, photos, _cache_dir, ["--model", str(calibrated)]) as server:

        def get(**params) -> httpx.Response:
            return httpx.get(server.api("/api/search"), params=params, timeout=60)

        results = get(q="바다", n=5).json()["results"]
        urls = {"id", "thumbnail", "large", "original", "similar"}
        assert [{k: v for k, v in r.items() if k not in urls} for r in results] == expected
        assert all(set(r) == set(expected[0]) | urls for r in results)
        filtered = get(q="바다", n=5, min_prob=threshold).json()["results"]
        assert [r["path"] for r in filtered] == [hit["path"] for hit in expected[:2]]
        for bad in ("1.5", "0", "abc", "nan"):
            response = get(q="바다", min_prob=bad)
            assert response.status_code == 400 and "min_prob" in response.json()["error"]


def test_an_uncalibrated_server_refuses_min_prob(served) -> None:
    response = httpx.get(served.api("/api/search"), params={"q": "바다", "min_prob": "0.5"})
    assert response.status_code == 400
    assert "not calibrated" in response.json()["error"]
    results = httpx.get(served.api("/api/search"), params={"q": "바다"}).json()["results"]
    assert results and all("match_probability" not in r for r in results)
