"""Retrieval and classification metrics on hand-checked cases, ties counted against the model."""

from __future__ import annotations

import numpy as np
import pytest

from hanclip_eval.metrics import (
    accuracy,
    classification_report,
    macro_f1,
    r_precision,
    recall_at_k,
    retrieval_report,
)


def test_recall_with_several_relevant_items_per_query():
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.9, 0.3, 0.2, 0.4]])
    relevant = np.array([[0, 0, 1, 0, 1], [1, 1, 0, 0, 0]], dtype=bool)
    # Query 0's best relevant item is third; query 1's is first.
    assert recall_at_k(sim, relevant, ks=(1, 2, 3, 5)) == {1: 0.5, 2: 0.5, 3: 1.0, 5: 1.0}


def test_recall_with_one_relevant_item_per_query():
    sim = np.array([[0.9, 0.1, 0.2], [0.3, 0.1, 0.2], [0.1, 0.5, 0.7]])
    # Query 1 finds its item third; queries 0 and 2 first.
    assert recall_at_k(sim, np.eye(3, dtype=bool), ks=(1, 2, 3)) == {1: 2 / 3, 2: 2 / 3, 3: 1.0}


def test_ties_count_against_the_query():
    relevant = np.array([[0, 1, 0]], dtype=bool)
    assert recall_at_k(np.full((1, 3), 0.5), relevant, ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}
    # Only non-relevant items count as tied above; two tied relevant items do not push out
    # each other.
    tied_relevant = np.array([[0.5, 0.5, 0.1]])
    assert recall_at_k(tied_relevant, np.array([[1, 1, 0]], dtype=bool), ks=(1,)) == {1: 1.0}
    # A collapsed model (every score equal) finds nothing before the last place.
    collapsed = recall_at_k(np.zeros((4, 4)), np.eye(4, dtype=bool), ks=(1, 3, 4))
    assert collapsed == {1: 0.0, 3: 0.0, 4: 1.0}


def test_k_larger_than_the_number_of_items():
    sim = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    relevant = np.array([[1, 0, 0], [0, 1, 0]], dtype=bool)
    assert recall_at_k(sim, relevant) == {1: 0.0, 5: 1.0, 10: 1.0}


def test_a_query_without_relevant_item_is_an_error():
    with pytest.raises(ValueError, match="query 1 has no relevant item"):
        recall_at_k(np.zeros((2, 2)), np.array([[1, 0], [0, 0]], dtype=bool))
    with pytest.raises(ValueError, match="query 1 has no relevant item"):
        r_precision(np.zeros((2, 2)), np.array([[1, 0], [0, 0]], dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[np.nan, 0.0]]), np.array([[1, 0]], dtype=bool))


def test_r_precision_with_one_relevant_item():
    sim = np.array([[0.9, 0.5, 0.1], [0.2, 0.9, 0.1], [0.7, 0.7, 0.1]])
    relevant = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
    # Query 2 ties its relevant item with a non-relevant one: the tie goes against it.
    assert r_precision(sim, relevant) == pytest.approx(1 / 3)


def test_r_precision_with_three_relevant_items():
    relevant = np.array([[1, 0, 1, 0, 1, 0]], dtype=bool)
    assert r_precision(np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]]), relevant) == pytest.approx(2 / 3)
    tied = np.array([[1, 1, 1, 0, 0, 0]], dtype=bool)
    # Top 3 = the 0.9 item plus two of four tied at 0.5, of which two are non-relevant.
    assert r_precision(np.array([[0.9, 0.5, 0.5, 0.5, 0.5, 0.1]]), tied) == pytest.approx(1 / 3)
    # Only one non-relevant item among those tied: one relevant tied item still gets in.
    assert r_precision(np.array([[0.9, 0.5, 0.5, 0.5, 0.1, 0.1]]), tied) == pytest.approx(2 / 3)


def _brute_force(sim: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...]):
    """Sort each row with non-relevant items first among equals, then read the metrics off."""
    recalls = dict.fromkeys(ks, 0.0)
    precisions = []
    for scores, rel in zip(sim, relevant, strict=True):
        order = np.lexsort((rel, -scores))
        ranked = rel[order]
        first_hit = int(np.argmax(ranked))
        for k in ks:
            recalls[k] += first_hit < k
        precisions.append(ranked[: rel.sum()].mean())
    return {k: v / len(sim) for k, v in recalls.items()}, float(np.mean(precisions))


def test_metrics_match_a_brute_force_sort_on_tie_heavy_scores():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, size=(200, 9)).astype(np.float32)
    relevant = rng.random((200, 9)) < 0.3
    relevant[np.arange(200), rng.integers(0, 9, size=200)] = True
    expected_recall, expected_rprec = _brute_force(sim, relevant, (1, 2, 5))
    assert recall_at_k(sim, relevant, ks=(1, 2, 5)) == pytest.approx(expected_recall)
    assert r_precision(sim, relevant) == pytest.approx(expected_rprec)


def test_accuracy_and_macro_f1_on_a_hand_computed_confusion():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 3, 2])
    assert accuracy(y_true, y_pred) == pytest.approx(5 / 7)
    # F1: class 0 = 2·2/(3+2) = 0.8, class 1 = 2·2/(2+3) = 0.8, class 2 = 2·1/(2+1) = 2/3,
    # class 3 (predicted, never true) = 0; classes 4.. appear nowhere and are left out.
    expected = (0.8 + 0.8 + 2 / 3 + 0) / 4
    assert macro_f1(y_true, y_pred) == pytest.approx(expected)
    assert macro_f1(y_true, y_pred, n_classes=10) == pytest.approx(expected)
    assert macro_f1(np.array([1, 1]), np.array([1, 1])) == 1.0
    with pytest.raises(ValueError, match="must lie in"):
        macro_f1(y_true, y_pred, n_classes=3)


def _unit(*rows: list[float]) -> np.ndarray:
    matrix = np.array(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_retrieval_report_on_a_hand_made_set():
    images = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    # Captions 0-1 belong to image 0, caption 2 to image 1, captions 3-4 to image 2.
    # Caption 1 points at image 1 and caption 3 at image 0: both are misplaced.
    texts = _unit([1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1])
    caption_image = np.array([0, 0, 1, 2, 2])
    report = retrieval_report(images, texts, caption_image)
    # Image→text: image 0 ties caption 0 (its own) with caption 3 → rank 2; image 1 ties its
    # caption 2 with caption 1 → rank 2; image 2 finds caption 4 first.
    # R-Precision: image 0 keeps 1 of 2 slots, image 1 0 of 1, image 2 1 of 2.
    # Text→image: captions 1 and 3 score 1 on a wrong image and tie 0 with another.
    assert report == pytest.approx(
        {
            "i2t_r1": 1 / 3,
            "i2t_r5": 1.0,
            "i2t_r10": 1.0,
            "t2i_r1": 3 / 5,
            "t2i_r5": 1.0,
            "t2i_r10": 1.0,
            "rsum": 100 * (1 / 3 + 1 + 1 + 3 / 5 + 1 + 1),
            "i2t_rprec": (1 / 2 + 0 + 1 / 2) / 3,
            "t2i_rprec": 3 / 5,
            "n_images": 3,
            "n_captions": 5,
        }
    )
    assert list(report) == [
        "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
        "rsum", "i2t_rprec", "t2i_rprec", "n_images", "n_captions",
    ]  # fmt: skip


def test_retrieval_report_chunked_equals_unchunked_and_the_plain_metrics():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(37, 8))
    caption_image = np.concatenate([np.arange(37), rng.integers(0, 37, size=64)])
    texts = images[caption_image] + rng.normal(scale=1.5, size=(len(caption_image), 8))
    whole = retrieval_report(images, texts, caption_image, chunk_size=10_000)
    for chunk_size in (1, 7, 36):
        assert retrieval_report(images, texts, caption_image, chunk_size=chunk_size) == (
            pytest.approx(whole)
        )
    unit_images = images / np.linalg.norm(images, axis=1, keepdims=True)
    unit_texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    sim = unit_images @ unit_texts.T
    relevant = caption_image[None, :] == np.arange(37)[:, None]
    assert whole["i2t_r5"] == pytest.approx(recall_at_k(sim, relevant)[5])
    assert whole["t2i_r1"] == pytest.approx(recall_at_k(sim.T, relevant.T)[1])
    assert whole["i2t_rprec"] == pytest.approx(r_precision(sim, relevant))
    assert 0 < whole["t2i_r1"] < 1


def test_retrieval_report_rejects_an_image_without_captions():
    with pytest.raises(ValueError, match="image 1 has no caption"):
        retrieval_report(np.eye(3), np.eye(3)[:2], np.array([0, 2]))


def test_classification_report_and_its_tie_rule():
    classes = _unit([1, 0], [0, 1])
    images = _unit([1, 0.1], [0.2, 1], [1, 1], [1, 1])
    # The last two images lie exactly between both classes: each tie counts as a mistake.
    report = classification_report(images, classes, np.array([0, 1, 0, 1]), chunk_size=3)
    assert report["accuracy"] == pytest.approx(0.5)
    # Predictions 0, 1, 1, 0: both classes have TP 1, 2 true, 2 predicted → F1 0.5.
    assert report["macro_f1"] == pytest.approx(0.5)
    assert (report["n_images"], report["n_classes"]) == (4, 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        classification_report(images, classes, np.array([0, 1, 2, 0]))
