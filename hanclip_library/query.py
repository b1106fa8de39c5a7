"""Combined queries: `바다 + 노을 - 사람`, weights (`2:강아지`), photos mixed in.

The query words are parsed here, purely: `+` and `-` standing alone join terms, a term may
start with a weight `W:` (one shell word, `2:강아지` or `'0.5:눈 내린 숲'`), and words that
follow one another without an operator are one term, as if quoted. `--add`/`--sub` texts and
`--image`/`--sub-image` photos join the same sum. The search vector is
normalize(Σ w_i · q_i), each q_i the unit search vector of one term.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanclip_model.errors import HanclipError
from hanclip_model.texts import clean_text

# Below this length the terms cancelled out: the direction left is numerical noise.
MIN_SUM_NORM = 1e-6

# Text encoders read at most a few hundred tokens; beyond this the rest is never seen.
MAX_QUERY_CHARS = 1000
NO_TERMS = "give a query or --image PATH, e.g. hanclip search '바다 위 노을'"

_WEIGHTED = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.*)$", re.DOTALL)


class SearchInputError(HanclipError):
    """Words or a parameter a search cannot take. The message is in the words of the front
    end that read them (`request.Dialect`); `reason` (a key of the pages' UI strings), `param`
    (the HTTP parameter) and `value` let a page say the same in its own language."""

    def __init__(
        self, message: str, reason: str, param: str | None = "q", value: object = None
    ) -> None:
        super().__init__(message)
        self.reason, self.param = reason, param
        self.value = None if value is None else str(value)

    def problem(self) -> dict[str, str | None]:
        return {"reason": self.reason, "param": self.param, "value": self.value}


@dataclass(frozen=True)
class QueryTerm:
    """One text (`text`), one photo file (`image`) or one indexed photo by its library id
    (`photo_id`: its stored embedding, the file is not read) of the sum, with its signed
    weight."""

    weight: float
    text: str | None = None
    image: Path | None = None
    photo_id: int | None = None


def _weighted(word: str) -> tuple[float, str]:
    match = _WEIGHTED.match(word)
    if match is None:
        return 1.0, word
    weight = float(match.group(1))
    if weight == 0:
        raise SearchInputError(
            f"the weight in {word!r} is 0: leave the term out instead", "zero_weight", value=word
        )
    return weight, match.group(2)


def _text_term(sign: float, word: str) -> QueryTerm:
    weight, text = _weighted(word)
    if text != word and not text.strip():
        raise SearchInputError(
            f"{word!r} has a weight but no words after it, e.g. 2:강아지",
            "weight_without_words",
            value=word,
        )
    return QueryTerm(weight=sign * weight, text=text)


def parse_query(
    words: Sequence[str],
    *,
    add: Sequence[str] = (),
    sub: Sequence[str] = (),
    images: Sequence[Path] = (),
    sub_images: Sequence[Path] = (),
    photo_ids: Sequence[int] = (),
) -> tuple[QueryTerm, ...]:
    """The terms of a search, in the order given: the words, then --add, --sub, the photo
    files, then the indexed photos (by id)."""
    terms: list[QueryTerm] = []
    sign: float | None = None
    current: list[str] = []

    def close() -> None:
        if current:
            terms.append(_text_term(1.0 if sign is None else sign, " ".join(current)))
            current.clear()

    for word in words:
        if word in ("+", "-"):
            if current:
                close()
            elif sign is not None:
                raise SearchInputError(
                    f"two operators in a row before {word!r}: put a term between",
                    "two_operators",
                    value=word,
                )
            sign = 1.0 if word == "+" else -1.0
            continue
        if current and _WEIGHTED.match(word):
            raise SearchInputError(
                f"the weight in {word!r} must start a term: put + or - before it",
                "weight_inside_term",
                value=word,
            )
        current.append(word)
    if sign is not None and not current:
        raise SearchInputError(
            "the query ends with an operator: put a term after + or -", "ends_with_operator"
        )
    close()
    terms += [_text_term(1.0, text) for text in add]
    terms += [_text_term(-1.0, text) for text in sub]
    terms += [QueryTerm(weight=1.0, image=Path(path)) for path in images]
    terms += [QueryTerm(weight=-1.0, image=Path(path)) for path in sub_images]
    terms += [QueryTerm(weight=1.0, photo_id=photo_id) for photo_id in photo_ids]
    if not terms:
        raise SearchInputError(NO_TERMS, "nothing_to_find")
    return tuple(terms)


def normalise_query(text: str) -> str:
    """NFC (macOS and some IMEs send decomposed Hangul), trimmed, at most MAX_QUERY_CHARS;
    empty is an error."""
    query = clean_text(text)
    if query is None:
        raise SearchInputError(
            "the search query is empty: give some words, e.g. hanclip search '바다 위 노을'",
            "nothing_to_find",
        )
    return query[:MAX_QUERY_CHARS].rstrip()


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """normalize(Σ w_i · q_i) over the rows of `vectors`; one unweighted term is itself."""
    if len(weights) == 1 and weights[0] == 1.0:
        return vectors[0]
    total = np.asarray(weights, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    if norm < MIN_SUM_NORM:
        raise SearchInputError(
            "the query terms cancel out (e.g. '바다 - 바다'): nothing is left to search for",
            "terms_cancel_out",
        )
    return (total / norm).astype(np.float32)
