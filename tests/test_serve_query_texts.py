"""`serve` embeds its queries' texts on a thread of their own (service.QueryTexts): the texts
asked while the encoder is busy go into one run, the last ones are kept, and a text that
cannot be embedded fails only the searches that asked for it."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

from hanclip_cli.serve.service import MAX_BATCH, QueryTexts

WAIT_S = 10.0


def vector(text: str) -> np.ndarray:
    """A vector that tells which text it was made from."""
    return np.array([len(text), sum(map(ord, text))], dtype=np.float32)


class Encoder:
    """A text encoder whose runs are recorded; the first run waits until `release`."""

    def __init__(self, *, hold_first: bool = False, fails_on: str | None = None) -> None:
        self.runs: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fails_on = fails_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.runs.append(list(texts))
        self.started.set()
        assert self.release.wait(WAIT_S)
        if self.fails_on in texts:
            raise ValueError(f"cannot embed {self.fails_on!r}")
        return np.stack([vector(text) for text in texts])


@pytest.fixture
def held():
    encoder = Encoder(hold_first=True)
    texts = QueryTexts(encoder)
    yield encoder, texts
    encoder.release.set()
    texts.close()


def test_texts_asked_while_the_encoder_runs_go_into_its_next_run(held) -> None:
    encoder, texts = held
    first = texts.vectors(["바다"])
    assert encoder.started.wait(WAIT_S)
    waiting = [texts.vectors([f"노을 {n}"]) for n in range(5)]
    encoder.release.set()
    assert list(first.result(WAIT_S)) == ["바다"]
    for n, answer in enumerate(waiting):
        found = answer.result(WAIT_S)
        np.testing.assert_array_equal(found[f"노을 {n}"], vector(f"노을 {n}"))
    assert encoder.runs == [["바다"], [f"노을 {n}" for n in range(5)]]


def test_a_run_holds_at_most_max_batch_texts(held) -> None:
    encoder, texts = held
    texts.vectors(["first"])
    assert encoder.started.wait(WAIT_S)
    answers = [texts.vectors([f"text {n}"]) for n in range(MAX_BATCH + 3)]
    encoder.release.set()
    for answer in answers:
        answer.result(WAIT_S)
    assert [len(run) for run in encoder.runs] == [1, MAX_BATCH, 3]


def test_a_text_asked_again_is_not_embedded_again() -> None:
    encoder = Encoder()
    texts = QueryTexts(encoder)
    try:
        once = texts.vectors(["바다 위 노을", "고양이"]).result(WAIT_S)
        again = texts.vectors(["고양이", "바다 위 노을"])
        assert again.done()  # answered at once, from what is kept
        assert {k: v.tolist() for k, v in again.result().items()} == {
            k: v.tolist() for k, v in once.items()
        }
        texts.vectors(["고양이", "강아지"]).result(WAIT_S)
    finally:
        texts.close()
    assert encoder.runs == [["바다 위 노을", "고양이"], ["강아지"]]


def test_only_the_last_texts_are_kept() -> None:
    encoder = Encoder()
    texts = QueryTexts(encoder, kept=2)
    try:
        for text in ("a", "b", "c"):
            texts.vectors([text]).result(WAIT_S)
        texts.vectors(["a"]).result(WAIT_S)  # pushed out by c: embedded again
        assert texts.vectors(["c"]).done()
    finally:
        texts.close()
    assert encoder.runs == [["a"], ["b"], ["c"], ["a"]]


def test_a_text_that_fails_fails_only_its_own_search() -> None:
    encoder = Encoder(hold_first=True, fails_on="bad")
    texts = QueryTexts(encoder)
    try:
        texts.vectors(["warm"])
        assert encoder.started.wait(WAIT_S)
        bad, good = texts.vectors(["bad"]), texts.vectors(["good"])
        encoder.release.set()
        with pytest.raises(ValueError, match="cannot embed 'bad'"):
            bad.result(WAIT_S)
        assert list(good.result(WAIT_S)) == ["good"]
        # The thread lives on: the next text is embedded.
        assert list(texts.vectors(["next"]).result(WAIT_S)) == ["next"]
    finally:
        texts.close()
    assert ["bad", "good"] in encoder.runs and ["good"] in encoder.runs


def test_a_search_given_up_on_is_not_embedded_for(held) -> None:
    encoder, texts = held
    texts.vectors(["first"])
    assert encoder.started.wait(WAIT_S)
    gone = texts.vectors(["gone"])
    assert gone.cancel()  # its client hung up while it waited
    kept = texts.vectors(["kept"])
    encoder.release.set()
    assert list(kept.result(WAIT_S)) == ["kept"]
    with pytest.raises(CancelledError):
        gone.result(0)
    assert encoder.runs == [["first"], ["kept"]]


def test_close_stops_the_thread() -> None:
    texts = QueryTexts(Encoder())
    texts.vectors(["바다"]).result(WAIT_S)
    texts.close()
    assert not any(thread.name.startswith("hanclip-texts") for thread in threading.enumerate())
