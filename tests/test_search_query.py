"""Combined queries: the words parsed, and the search vector held to normalize(Σ w_i · q_i)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hanclip_library.library import open_library
from hanclip_library.query import QueryTerm, combine, parse_query
from hanclip_library.searcher import query_vector, terms_vector
from hanclip_model.errors import HanclipError


def _t(weight: float, text: str) -> QueryTerm:
    return QueryTerm(weight=weight, text=text)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["바다 위 노을"], [_t(1, "바다 위 노을")]),
        (["바다", "위", "노을"], [_t(1, "바다 위 노을")]),  # words in a row are one term
        (["바다", "+", "노을", "-", "사람"], [_t(1, "바다"), _t(1, "노을"), _t(-1, "사람")]),
        (["2:강아지", "-", "0.5:눈"], [_t(2, "강아지"), _t(-0.5, "눈")]),
        (["-", "사람", "+", ".5:눈 내린 숲"], [_t(-1, "사람"), _t(0.5, "눈 내린 숲")]),
        (["+", "바다"], [_t(1, "바다")]),
        (["-바다"], [_t(1, "-바다")]),  # a sign only counts as its own word
        (["2:강아지", "산책"], [_t(2, "강아지 산책")]),
    ],
)
def test_query_words_become_signed_weighted_terms(words, expected) -> None:
    assert list(parse_query(words)) == expected


def test_options_and_photos_join_the_same_sum() -> None:
    terms = parse_query(
        ["바다"], add=["2:노을"], sub=["사람"], images=["a.jpg"], sub_images=[Path("b.jpg")]
    )
    assert terms == (
        _t(1, "바다"),
        _t(2, "노을"),
        _t(-1, "사람"),
        QueryTerm(weight=1, image=Path("a.jpg")),
        QueryTerm(weight=-1, image=Path("b.jpg")),
    )
    assert parse_query([], images=["a.jpg"]) == (QueryTerm(weight=1, image=Path("a.jpg")),)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["바다", "+", "-", "노을"], "two operators"),
        (["바다", "+"], "ends with an operator"),
        (["-"], "ends with an operator"),
        (["바다", "2:노을"], "must start a term"),
        (["0:바다"], "is 0"),
        (["2:"], "no words after it"),
        ([], "give a query"),
    ],
)
def test_bad_query_syntax_is_an_error(words, message) -> None:
    with pytest.raises(HanclipError, match=message):
        parse_query(words)


def test_one_plain_term_is_its_own_vector_unchanged() -> None:
    vector = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    got = combine(vector[None], [1.0])
    assert got.dtype == np.float32 and got.tobytes() == vector.tobytes()


def test_a_sum_of_zero_length_is_an_error() -> None:
    q = np.array([[0.6, 0.8], [0.6, 0.8]], dtype=np.float32)
    with pytest.raises(HanclipError, match="cancel out"):
        combine(q, [1.0, -1.0])
    np.testing.assert_allclose(combine(q, [2.0, -1.0]), [0.6, 0.8], atol=1e-6)


def _normalise(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_combined_vector_is_the_formula(cli, tiny, photos, library) -> None:
    bundle = tiny.heads_bundle
    assert cli("index", photos, "--library", library, "--model", bundle).exit_code == 0
    cat, mountain = photos / "고양이.png", photos / "여행" / "산.jpg"
    with open_library(library, str(bundle), for_writing=False) as opened:
        model = opened.model

        def text(t: str) -> np.ndarray:
            return model.embed_texts([t])[0].astype(np.float64)

        def image(p: Path) -> np.ndarray:
            return model.project_images(model.raw_image_embeddings([str(p)]))[0]

        cases = [
            (["바다", "+", "노을", "-", "사람"], {}, text("바다") + text("노을") - text("사람")),
            (["2:강아지", "-", "0.5:눈"], {}, 2 * text("강아지") - 0.5 * text("눈")),
            ([], {"images": [cat], "sub_images": [mountain]}, image(cat) - image(mountain)),
            (
                ["바다"],
                {"images": [cat], "sub": ["1.5:사람"]},
                text("바다") + image(cat) - 1.5 * text("사람"),
            ),
        ]
        for words, options, expected in cases:
            got = terms_vector(opened, parse_query(words, **options))
            np.testing.assert_allclose(got, _normalise(expected), atol=1e-5)
            assert got.dtype == np.float32
        # A single plain query, or one photo, is exactly the vector search used before.
        plain = terms_vector(opened, parse_query(["바다 위 노을"]))
        np.testing.assert_array_equal(plain, query_vector(opened, "바다 위 노을", None))
        alone = terms_vector(opened, parse_query([], images=[cat]))
        np.testing.assert_array_equal(alone, query_vector(opened, None, cat))
        with pytest.raises(HanclipError, match="cancel out"):
            terms_vector(opened, parse_query(["바다", "-", "바다"]))
        ids, raw = opened.store.embeddings()
        photo_vectors = dict(zip(ids.tolist(), model.project_images(raw), strict=True))
        paths = {opened.store.records_by_ids([i])[i].path: i for i in ids.tolist()}
        combined = terms_vector(opened, parse_query(["바다", "-", "고양이"]))

    result = cli(
        "search",
        "바다",
        "-",
        "고양이",
        "-n",
        "8",
        "--json",
        "--library",
        library,
        "--model",
        bundle,
    )
    assert result.exit_code == 0, result.stderr
    hits = result.json()
    assert len(hits) == 8
    for hit in hits:
        expected = float(photo_vectors[paths[hit["path"]]] @ combined)
        assert hit["score"] == pytest.approx(expected, abs=1e-5)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_terms_that_cancel_out_are_a_one_line_error(cli, tiny, photos, library) -> None:
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    for argv in (["바다", "-", "바다"], ["바다", "--sub", "바다"], ["바다", "+", "-"]):
        result = cli("search", *argv, *common)
        assert result.exit_code == 2, argv
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("error: ")
