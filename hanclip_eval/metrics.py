"""Retrieval and zero-shot classification metrics: numpy arrays in, plain numbers out.

Every tie is broken against the model. A model whose vectors collapse to one point must not
score well just because equal scores happened to be ordered in its favour:
- Ranking: an item ranks below every item with a strictly greater score and below every
  non-relevant item with an equal score. A query's rank is that of its best relevant item.
- R-Precision: among items tied at the cut-off, non-relevant ones take the top-R slots first.
- Classification: the true class is predicted only when it scores strictly above every other
  class; otherwise the prediction is the best-scoring wrong class.

Scores in the reports are cosine similarities: rows are L2-normalised here, so raw
embeddings can be passed as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    return tuple(int(k) for k in ks)


def _check_scores(sim: np.ndarray, relevant: np.ndarray) -> None:
    if sim.ndim != 2 or relevant.shape != sim.shape:
        raise ValueError(
            f"sim and relevant must both be [queries, items], got {list(sim.shape)} "
            f"and {list(relevant.shape)}"
        )
    if sim.shape[0] == 0:
        raise ValueError("no queries")
    if np.isnan(sim).any():
        raise ValueError("similarity scores contain NaN")
    without = np.flatnonzero(~relevant.any(axis=1))
    if without.size:
        raise ValueError(
            f"query {without[0]} has no relevant item ({without.size} queries without one)"
        )


def _pessimistic_ranks(sim: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """0-based rank of each query's best relevant item, every tie counted against it.

    The best relevant item has only non-relevant items strictly above it, so its rank is the
    number of non-relevant items scoring at least as high as it.
    """
    best_relevant = np.where(relevant, sim, -np.inf).max(axis=1)
    return ((sim >= best_relevant[:, None]) & ~relevant).sum(axis=1)


def _precision_at_r(sim: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per query: the fraction of the top R items that are relevant, R = its relevant count.

    With t the R-th highest score, every item above t is in the top R; the slots left go to
    items scoring exactly t, non-relevant ones first.
    """
    n_relevant = relevant.sum(axis=1)
    cut = sim.shape[1] - n_relevant  # ascending position of the R-th highest score
    threshold = np.take_along_axis(np.partition(sim, np.unique(cut), axis=1), cut[:, None], 1)
    above = sim > threshold
    at = sim == threshold
    slots_at_threshold = n_relevant - above.sum(axis=1)
    relevant_at_threshold = np.maximum(0, slots_at_threshold - (at & ~relevant).sum(axis=1))
    return ((above & relevant).sum(axis=1) + relevant_at_threshold) / n_relevant


def recall_at_k(
    sim: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[int, float]:
    """Fraction of queries with a relevant item in their top K, for each K in `ks`.

    sim [Q, C] scores, relevant [Q, C] bool; every query needs a relevant item. K may exceed C.
    """
    ks = _check_ks(ks)
    relevant = np.asarray(relevant, dtype=bool)
    sim = np.asarray(sim)
    _check_scores(sim, relevant)
    ranks = _pessimistic_ranks(sim, relevant)
    return {k: float(np.mean(ranks < k)) for k in ks}


def r_precision(sim: np.ndarray, relevant: np.ndarray) -> float:
    """Mean over queries of (relevant items in the top R) / R, R = the query's relevant count."""
    relevant = np.asarray(relevant, dtype=bool)
    sim = np.asarray(sim)
    _check_scores(sim, relevant)
    return float(np.mean(_precision_at_r(sim, relevant)))


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty and of one length, got {list(y_true.shape)} "
            f"and {list(y_pred.shape)}"
        )
    return y_true, y_pred


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _check_labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes that occur in y_true or y_pred.

    A class neither true nor predicted anywhere is left out (as scikit-learn does by
    default), so a subset of a dataset is not penalised for classes it does not contain.
    Precision or recall of 0/0 counts as 0. `n_classes`, when given, only checks that every
    label lies in [0, n_classes).
    """
    y_true, y_pred = _check_labels(y_true, y_pred)
    if not (np.issubdtype(y_true.dtype, np.integer) and np.issubdtype(y_pred.dtype, np.integer)):
        raise ValueError("labels must be integers")
    lowest = min(y_true.min(), y_pred.min())
    highest = max(y_true.max(), y_pred.max())
    if lowest < 0 or (n_classes is not None and highest >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes or 'n_classes'}), got {lowest}..{highest}"
        )
    size = int(highest) + 1
    true_count = np.bincount(y_true, minlength=size)
    pred_count = np.bincount(y_pred, minlength=size)
    true_positive = np.bincount(y_true[y_true == y_pred], minlength=size)
    present = (true_count + pred_count) > 0
    # F1 = 2PR/(P+R) = 2TP/(true + predicted); it is 0 whenever TP is, covering the 0/0 cases.
    f1 = 2 * true_positive[present] / (true_count[present] + pred_count[present])
    return float(np.mean(f1))


def _unit_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty [N, D] array, got {list(vectors.shape)}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _unit_pair(
    image_vectors: np.ndarray, other_vectors: np.ndarray, other: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both sets L2-normalised, after checking that they have the same width."""
    images = _unit_rows(image_vectors, "image_vectors")
    others = _unit_rows(other_vectors, f"{other}_vectors")
    if images.shape[1] != others.shape[1]:
        raise ValueError(
            f"image and {other} vectors differ in width: {images.shape[1]} vs {others.shape[1]}"
        )
    return images, others


def _stream_direction(
    queries: np.ndarray,
    items: np.ndarray,
    relevant_rows: Callable[[int, int], np.ndarray],
    ks: tuple[int, ...],
    chunk_size: int,
) -> tuple[dict[int, float], float]:
    """Recall@K and R-Precision of queries against items, one chunk of queries at a time."""
    hits = dict.fromkeys(ks, 0)
    precision_sum = 0.0
    for start in range(0, queries.shape[0], chunk_size):
        stop = min(start + chunk_size, queries.shape[0])
        sim = queries[start:stop] @ items.T
        relevant = relevant_rows(start, stop)
        ranks = _pessimistic_ranks(sim, relevant)
        for k in ks:
            hits[k] += int(np.sum(ranks < k))
        precision_sum += float(np.sum(_precision_at_r(sim, relevant)))
    n = queries.shape[0]
    return {k: hits[k] / n for k in ks}, precision_sum / n


def retrieval_report(
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    caption_image: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    chunk_size: int = 512,
) -> dict[str, float | int]:
    """Image→text and text→image Recall@K, RSUM and R-Precision on one image/caption set.

    caption_image [M] holds the image index of each caption. Image→text: a hit when any of
    the image's captions is in the top K; text→image: each caption has one correct image.
    Keys: i2t_r{k} and t2i_r{k} (fractions), rsum (sum of all recalls in percent, at most
    600 for three ks), i2t_rprec, t2i_rprec, n_images, n_captions. Only one [chunk_size,
    M or N] block of similarities exists at a time.
    """
    ks = _check_ks(ks)
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    images, texts = _unit_pair(image_vectors, text_vectors, "text")
    caption_image = np.asarray(caption_image)
    n_images = images.shape[0]
    if caption_image.shape != (texts.shape[0],) or not np.issubdtype(
        caption_image.dtype, np.integer
    ):
        raise ValueError(f"caption_image must be [{texts.shape[0]}] integers, one per caption")
    if caption_image.min() < 0 or caption_image.max() >= n_images:
        raise ValueError(f"caption_image values must lie in [0, {n_images})")
    uncaptioned = np.flatnonzero(np.bincount(caption_image, minlength=n_images) == 0)
    if uncaptioned.size:
        raise ValueError(
            f"image {uncaptioned[0]} has no caption ({uncaptioned.size} images without one)"
        )

    def captions_of(start: int, stop: int) -> np.ndarray:
        return caption_image[None, :] == np.arange(start, stop)[:, None]

    def image_of(start: int, stop: int) -> np.ndarray:
        return caption_image[start:stop, None] == np.arange(n_images)[None, :]

    i2t, i2t_rprec = _stream_direction(images, texts, captions_of, ks, chunk_size)
    t2i, t2i_rprec = _stream_direction(texts, images, image_of, ks, chunk_size)
    report: dict[str, float | int] = {f"i2t_r{k}": i2t[k] for k in ks}
    report.update({f"t2i_r{k}": t2i[k] for k in ks})
    report["rsum"] = 100 * (sum(i2t.values()) + sum(t2i.values()))
    report.update(
        i2t_rprec=i2t_rprec, t2i_rprec=t2i_rprec, n_images=n_images, n_captions=texts.shape[0]
    )
    return report


def _pessimistic_predictions(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Argmax class per row, except that a tie between the true class and another goes to
    the other: the true class is predicted only when it strictly beats every other class."""
    rows = np.arange(scores.shape[0])
    true_scores = scores[rows, labels]
    wrong = scores.copy()
    wrong[rows, labels] = -np.inf
    best_wrong = wrong.argmax(axis=1)
    return np.where(wrong[rows, best_wrong] >= true_scores, best_wrong, labels)


def classification_report(
    image_vectors: np.ndarray,
    class_vectors: np.ndarray,
    labels: np.ndarray,
    *,
    chunk_size: int = 4096,
) -> dict[str, float | int]:
    """Zero-shot classification by the most similar class vector.

    Keys: accuracy, macro_f1 (over the classes present in the labels or predictions),
    n_images, n_classes.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    images, classes = _unit_pair(image_vectors, class_vectors, "class")
    labels = np.asarray(labels)
    n_classes = classes.shape[0]
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be [{images.shape[0]}] integers, one per image")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes})")
    predictions = np.concatenate(
        [
            _pessimistic_predictions(
                images[start : start + chunk_size] @ classes.T, labels[start : start + chunk_size]
            )
            for start in range(0, images.shape[0], chunk_size)
        ]
    )
    return {
        "accuracy": accuracy(labels, predictions),
        "macro_f1": macro_f1(labels, predictions, n_classes),
        "n_images": images.shape[0],
        "n_classes": n_classes,
    }
