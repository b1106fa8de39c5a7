"""A match probability for a search score: p(match) = sigmoid(a·cos + b), fitted at the end
of training on pseudo pairs held out from it (PCME's lesson: a raw cosine is not a confidence).

What the probability means. A search compares one photo with one query; the question a user
has about a hit is "does this photo show what I asked for?". How often the answer is yes
before looking at the score (the base rate) is not a property of the model: one photo of a
library matches "우리 집 고양이 생일 케이크", hundreds match "고양이", and the share moves with
the library. So the probability is stated at even prior odds (base rate 1/2): p is the chance
that a (photo, query) pair with this cosine is a match when matching and non-matching pairs
are equally common, i.e. p/(1−p) is the likelihood ratio of the cosine, how many times more
often a match scores it than a non-match. For a query matching a share π of the library the
odds scale by π/(1−π): at π = 1 %, p = 0.99 becomes 0.5. A library-like 1 % (or 10 %) puts
the middle of the curve among the non-matches that score like matches, the very pairs pseudo
pairs cannot stand for (below); at even odds they are a small part of the non-matches.

The pairs. `held_out_rows` keeps a share of the English captions out of training (5 %, at
least a few hundred when there are enough captions, at most 10,000; none for tiny corpora,
which leave the bundle uncalibrated with the reason written in it). After training, each
held-out caption gives a match: its pseudo image v and pseudo Korean k, with the training
noise σ added as in training, through f1 and f2. Non-matches pair v_i with the k_j of
`NEGATIVES_PER_POSITIVE` other held-out rows drawn at random, each weighted 1/R, so matches and
non-matches weigh the same (the even odds above); many non-matches per match pin down the
upper tail of their scores, where the two classes meet.

Why the noise. A pseudo pair is a softmax-weighted mean of bank rows, smoother than any one
real embedding, so unnoised pseudo matches score higher than real photo/query matches: on the
synthetic world with 10k-40k rows per bank (128/96-d) by about 0.01 in cosine, which at the
fitted slope (a ≈ 100-150) is a factor of e in the odds. With the training noise σ (the
method's own model of how far a real embedding lies from a text-derived one) their median
and 1-5 % quantiles agree with the real matches' to 0.001-0.003. In sparse banks (2k rows: the
softmax averages fewer rows) σ is a little too much: pseudo matches then score about 0.01
below real ones.

What it is worth (`python benchmarks/calibration_reliability.py`: 6 synthetic worlds, 2k and
10k rows per bank x 3 seeds, 25,000 new test samples each meeting 20 non-matches, bins
whose rate is measured to ±0.02). Below 10 % and above 90 %, where nearly all pairs fall,
the probability is within 0.02 of the observed match rate. In between it is a rough guide,
not within 0.05, for two reasons no fit on pseudo pairs removes:

- At the instance level (the photo and the caption of the same sample; another photo of
  the same kind of scene is a non-match) the true curve is not a logistic one: those
  same-concept non-matches, one in n_concepts of the non-matches, crowd its middle. A
  sigmoid fitted on the real pairs themselves misses the middle by up to 0.10 in the
  10k-row worlds (within 0.05 in the 2k ones). And the middle is steep: at the fitted
  slopes (a = 90-135) 0.05 of probability at p = 1/2 is 0.0015-0.0023 in cosine, while the
  pseudo matches (softmax means of other samples, with σ) stand for real matches to
  0.001-0.008 in median cosine, seed by seed. The shipped curve is over-confident there,
  by 0.05-0.13 in the measured middle bins and up to 0.22 in the thinner ones. Hard
  negatives are what a pseudo pair cannot show: two captions of one concept get nearly the
  same pseudo pair, so such a pseudo non-match scores like a match, not just below one.
- At the concept level (the photo shows the kind of thing the caption describes; the
  product's question) a sigmoid fits: fitted on real pairs it is within 0.04 in every
  measured bin of all 6 worlds. But the shipped curve, fitted on pseudo pairs that score
  like instance matches, is under-confident there by 0.27-0.58 in the middle: how far apart
  two photos of one "kind of thing" lie is what no bank says (there are no labels, and the
  granularity is the query's: "고양이" or "우리 집 고양이 생일 케이크"). Earlier attempts,
  measured and reverted: pseudo pairs from single bank rows (the top one, or drawn from the
  τ softmax) instead of means, relabelling or dropping near-duplicate negatives, quantile
  thresholds; all missed by 0.07-0.7.

The fit is a weighted two-parameter logistic regression by Newton's method (IRLS) with step
halving, in numpy. It fails (and the bundle stays uncalibrated, saying why) when the scores
separate the classes perfectly (a would grow without bound), when it does not converge, or
when a ≤ 0 (a probability falling as the score rises would invert the ranking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hanclip_model.bundle import Calibration

HELD_OUT_SHARE = 0.05
MAX_HELD_OUT_ROWS = 10_000
# Held out when the corpus allows it without losing more than a tenth of its captions: fewer
# positives than this leave the fitted location (and so every probability) loose.
FEW_HUNDRED_ROWS = 300
MAX_HELD_OUT_SHARE = 0.10
# Below this many held-out rows the bundle is left uncalibrated.
MIN_HELD_OUT_ROWS = 100
NEGATIVES_PER_POSITIVE = 99
BASE_RATE = 0.5
# Random streams of the calibration, [seed, 0, purpose]: none of training's ([seed, epoch]
# shuffles, [seed, epoch, 1] noise).
HELD_OUT_STREAM, NEGATIVES_STREAM, NOISE_STREAM = 2, 3, 4
# Floats of the gathered text vectors held at once while scoring the non-matches (64 MB).
_CHUNK_FLOATS = 1 << 24
_MAX_NEWTON_STEPS = 100
DEFINITION = (
    "p(match) = sigmoid(a*cos + b): the chance that a photo matches a query scoring cos, "
    "at even prior odds (base rate 1/2)"
)


class CalibrationFailed(Exception):
    """The logistic fit found no usable (a, b); the message says why."""


def stream(seed: int, purpose: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, 0, purpose])


def held_out_count(n_captions: int) -> int:
    """How many captions to keep out of training for the calibration (0: too few)."""
    wanted = max(round(HELD_OUT_SHARE * n_captions), FEW_HUNDRED_ROWS)
    count = min(wanted, int(MAX_HELD_OUT_SHARE * n_captions), MAX_HELD_OUT_ROWS)
    return count if count >= MIN_HELD_OUT_ROWS else 0


def held_out_rows(n_captions: int, seed: int) -> np.ndarray:
    """The held-out caption rows, sorted: a random choice fixed by (seed, n_captions)."""
    count = held_out_count(n_captions)
    rng = np.random.default_rng(stream(seed, HELD_OUT_STREAM))
    return np.sort(rng.choice(n_captions, size=count, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class LabelledScores:
    """Cosines of pairs, whether each is a match, and its weight (even odds: see above)."""

    cosines: np.ndarray  # float64 [P]
    matches: np.ndarray  # bool [P]
    weights: np.ndarray  # float64 [P]


def sample_pairs(
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    negatives_per_positive: int,
    seed: int,
) -> LabelledScores:
    """Row i of both is a match; each row also meets `negatives_per_positive` other rows' text
    vectors drawn at random (with replacement), weighted so both classes weigh the same."""
    image_vectors = np.asarray(image_vectors, dtype=np.float32)
    text_vectors = np.asarray(text_vectors, dtype=np.float32)
    n = image_vectors.shape[0]
    if n < 2 or text_vectors.shape[0] != n:
        raise ValueError("need at least two paired rows, as many image as text vectors")
    rng = np.random.default_rng(stream(seed, NEGATIVES_STREAM))
    others = rng.integers(0, n - 1, size=(n, negatives_per_positive))
    others += others >= np.arange(n)[:, None]  # skip the row itself
    return _scored_pairs(image_vectors, text_vectors, np.arange(n), others)


def concept_pairs(
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    concepts: np.ndarray,
    negatives_per_positive: int,
    seed: int,
) -> LabelledScores:
    """Pairs labelled by concept, for measuring (the synthetic world knows its concepts): each
    row's image vector meets the text vector of another row of its concept, drawn at random
    (a match: the photo shows the kind of thing the text describes), and those of
    `negatives_per_positive` rows of other concepts (non-matches, each weighing 1/R, so both
    classes weigh the same). Rows alone in their concept have no match and are left out."""
    image_vectors = np.asarray(image_vectors, dtype=np.float32)
    text_vectors = np.asarray(text_vectors, dtype=np.float32)
    concepts = np.asarray(concepts)
    n = image_vectors.shape[0]
    if text_vectors.shape[0] != n or concepts.shape != (n,):
        raise ValueError("need as many image vectors, text vectors and concepts")
    rng = np.random.default_rng(stream(seed, NEGATIVES_STREAM))
    order = np.argsort(concepts, kind="stable")
    _, starts, sizes = np.unique(concepts[order], return_index=True, return_counts=True)
    if len(sizes) < 2:
        raise ValueError("need at least two concepts")
    group = np.empty(n, dtype=np.int64)  # each row's group, in the order of np.unique
    group[order] = np.repeat(np.arange(len(sizes)), sizes)
    position = np.empty(n, dtype=np.int64)  # each row's place in its group
    position[order] = np.arange(n) - np.repeat(starts, sizes)
    rows = np.flatnonzero(sizes[group] > 1)
    if rows.size == 0:
        raise ValueError("no concept holds two rows")
    # Another member of the row's group: a place among the others, skipping its own.
    other = rng.integers(0, sizes[group[rows]] - 1)
    other += other >= position[rows]
    partners = order[starts[group[rows]] + other]
    negatives = rng.integers(0, n, size=(rows.size, negatives_per_positive))
    while True:  # redraw the non-matches that share the row's concept
        same = concepts[negatives] == concepts[rows][:, None]
        if not same.any():
            break
        negatives[same] = rng.integers(0, n, size=int(same.sum()))
    return _scored_pairs(image_vectors[rows], text_vectors, partners, negatives)


def _scored_pairs(
    images: np.ndarray, texts: np.ndarray, partners: np.ndarray, others: np.ndarray
) -> LabelledScores:
    """images[i] against texts[partners[i]] (a match) and against the R texts others[i]
    (non-matches, each weighing 1/R, so both classes weigh the same), scored a chunk of rows
    at a time (the gathered text vectors of a chunk hold `_CHUNK_FLOATS` floats)."""
    n, per_row = others.shape
    positives = np.einsum("ij,ij->i", images, texts[partners])
    negatives = np.empty((n, per_row), dtype=np.float32)
    chunk = max(1, _CHUNK_FLOATS // (per_row * texts.shape[1]))
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        negatives[rows] = np.einsum("ij,ikj->ik", images[rows], texts[others[rows]])
    return LabelledScores(
        cosines=np.concatenate([positives, negatives.ravel()]).astype(np.float64),
        matches=np.concatenate([np.ones(n, bool), np.zeros(negatives.size, bool)]),
        weights=np.concatenate([np.ones(n), np.full(negatives.size, 1.0 / per_row)]),
    )


def _weighted_log_loss(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    # -log sigmoid(z) for a match, -log(1 - sigmoid(z)) otherwise, without overflow.
    return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) / np.sum(w))


def fit_logistic(scores: LabelledScores) -> Calibration:
    """Weighted maximum likelihood of p = sigmoid(a·cos + b) by Newton's method."""
    x, y, w = scores.cosines, scores.matches.astype(np.float64), scores.weights
    if scores.matches.all() or not scores.matches.any():
        raise CalibrationFailed("the pairs hold only one class")
    # In one dimension the likelihood has a maximum exactly when the classes' scores overlap;
    # otherwise a grows without bound (a step from p = 0 to p = 1 at one score).
    matched, other = x[scores.matches], x[~scores.matches]
    if matched.min() >= other.max() or matched.max() <= other.min():
        raise CalibrationFailed("the scores separate matches from non-matches perfectly")
    design = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.zeros(2)
    loss = _weighted_log_loss(design @ theta, y, w)
    for _ in range(_MAX_NEWTON_STEPS):
        p = Calibration(a=float(theta[0]), b=float(theta[1])).probability(x)
        gradient = design.T @ (w * (p - y))
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            raise CalibrationFailed("the fit met a singular Hessian") from None
        scale = 1.0
        while True:  # step halving: Newton may overshoot far from the optimum
            candidate = theta - scale * step
            new_loss = _weighted_log_loss(design @ candidate, y, w)
            if new_loss <= loss or scale < 1e-10:
                break
            scale /= 2
        theta, loss = candidate, new_loss
        if not np.all(np.isfinite(theta)):
            raise CalibrationFailed("the fit diverged")
        if np.max(np.abs(scale * step)) < 1e-9 * max(1.0, np.max(np.abs(theta))):
            break
    else:
        raise CalibrationFailed(f"the fit did not converge in {_MAX_NEWTON_STEPS} steps")
    a, b = float(theta[0]), float(theta[1])
    if a <= 0:
        raise CalibrationFailed(f"a higher score would mean a lower probability (a = {a:.3g})")
    return Calibration(a=a, b=b)


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of predicted probability: what was predicted and what was observed."""

    low: float
    high: float
    pairs: int
    weight: float  # the weight of its pairs (pairs, at the stated base rate)
    predicted: float  # weighted mean predicted probability
    observed: float  # weighted share of matches
    standard_error: float  # of `observed`, from what it holds
    # The standard error `observed` would have if `predicted` were exact: how well the bin
    # can test the calibration, whatever it happened to hold (a bin of three non-matches has
    # a standard error of 0 but tests nothing).
    calibrated_error: float


def reliability(
    probabilities: np.ndarray, matches: np.ndarray, weights: np.ndarray, bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width bins of predicted probability (empty ones left out): mean prediction
    against the observed match rate, with that rate's standard error (weighted: the
    variance of a weighted mean, Σw²(y−ȳ)²/(Σw)²) and the one it would have if the
    prediction were exact. The latter counts the matches and non-matches the bin would hold,
    λ = p̄·W/w̄_match and (1−p̄)·W/w̄_non-match: the log-odds of the observed rate then vary by
    1/λ_match + 1/λ_non-match, and the rate by p̄(1−p̄) times its square root."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    is_match = np.asarray(matches, dtype=bool)
    y = is_match.astype(np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    mean_weight = {
        label: float(weights[is_match == label].mean()) if (is_match == label).any() else 1.0
        for label in (True, False)
    }
    index = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    found = []
    for k in range(bins):
        members = index == k
        if not members.any():
            continue
        w, p, m = weights[members], probabilities[members], y[members]
        total = float(w.sum())
        predicted = float(np.dot(w, p) / total)
        observed = float(np.dot(w, m) / total)
        variance = float(np.sum(w**2 * (m - observed) ** 2) / total**2)
        expected_matches = predicted * total / mean_weight[True]
        expected_others = (1 - predicted) * total / mean_weight[False]
        calibrated = (
            predicted * (1 - predicted) * math.sqrt(1 / expected_matches + 1 / expected_others)
            if 0 < predicted < 1
            else 0.0
        )
        found.append(
            ReliabilityBin(
                low=k / bins,
                high=(k + 1) / bins,
                pairs=int(members.sum()),
                weight=total,
                predicted=predicted,
                observed=observed,
                standard_error=math.sqrt(variance),
                calibrated_error=calibrated,
            )
        )
    return found


@dataclass(frozen=True)
class CalibrationReport:
    """The outcome: a calibration and how it was made, or why there is none."""

    calibration: Calibration | None
    held_out_rows: int
    pairs: int = 0
    negatives_per_positive: int = NEGATIVES_PER_POSITIVE
    noise_std: float = 0.0
    log_loss: float | None = None
    reason: str | None = None  # why there is no calibration

    def as_json(self) -> dict[str, object]:
        """The bundle's `calibration` block (see hanclip_model.bundle)."""
        if self.calibration is None:
            return {"uncalibrated": self.reason, "held_out_rows": self.held_out_rows}
        return {
            "a": self.calibration.a,
            "b": self.calibration.b,
            "definition": DEFINITION,
            "base_rate": BASE_RATE,
            "pairs": self.pairs,
            "negatives_per_positive": self.negatives_per_positive,
            "held_out_rows": self.held_out_rows,
            "noise_std": self.noise_std,
            "log_loss": None if self.log_loss is None else round(self.log_loss, 6),
        }


def not_calibrated(n_captions: int) -> CalibrationReport:
    """The report of a run with too few captions to hold any out."""
    return CalibrationReport(
        calibration=None,
        held_out_rows=0,
        reason=(
            f"only {n_captions} English captions: a calibration holds out at least "
            f"{MIN_HELD_OUT_ROWS} of them, at most {MAX_HELD_OUT_SHARE:.0%} "
            f"({math.ceil(MIN_HELD_OUT_ROWS / MAX_HELD_OUT_SHARE)} captions or more)"
        ),
    )


def calibrate(
    image_vectors: np.ndarray, text_vectors: np.ndarray, *, seed: int, noise_std: float
) -> CalibrationReport:
    """Fit the calibration on projected held-out pseudo pairs (row i of both is a match).

    `noise_std` is recorded: the caller added that noise before projecting."""
    scores = sample_pairs(image_vectors, text_vectors, NEGATIVES_PER_POSITIVE, seed)
    made = {
        "held_out_rows": int(image_vectors.shape[0]),
        "pairs": int(scores.cosines.size),
        "noise_std": noise_std,
    }
    try:
        calibration = fit_logistic(scores)
    except CalibrationFailed as exc:
        return CalibrationReport(calibration=None, reason=f"the fit failed: {exc}", **made)
    z = calibration.a * scores.cosines + calibration.b
    log_loss = _weighted_log_loss(z, scores.matches.astype(np.float64), scores.weights)
    return CalibrationReport(calibration=calibration, log_loss=log_loss, **made)
