"""The piece-table tokenizer gives exactly the full Unigram tokenizer's ids, and says so."""

from __future__ import annotations

import json
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from hanclip_eval.random_models import standin_unigram_tokenizer, standin_wordpiece_tokenizer
from hanclip_model.fast_text import pieces as qt
from hanclip_model.fast_text.pieces import (
    CHECK_TEXTS,
    PIECES_NAME,
    SKELETON_NAME,
    PieceTableTokenizer,
    piece_table_agrees,
    write_piece_table,
)

MAX_LENGTH = 24
PAD_ID = 1


@pytest.fixture(scope="module")
def xlmr_json() -> str:
    """The XLM-R-style stand-in (Unigram, NFKC, Metaspace, <s> ... </s>), 30,000 pieces."""
    return standin_unigram_tokenizer(vocab_size=30_000).backend_tokenizer.to_str()


def _full(tokenizer_json: str) -> Tokenizer:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length=MAX_LENGTH, strategy="longest_first")
    tokenizer.enable_padding(direction="right", pad_id=PAD_ID)
    return tokenizer


def _table(directory: Path) -> PieceTableTokenizer:
    return PieceTableTokenizer(
        directory, max_length=MAX_LENGTH, pad_id=PAD_ID, padding_side="right"
    )


def _random_texts(count: int, seed: int) -> list[str]:
    """Korean, English, digits, punctuation, unknown characters and literal specials."""
    rng = random.Random(seed)
    alphabet = (
        [chr(c) for c in range(0xAC00, 0xAC00 + 400)]
        + list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,!?-_'\"#@")
        + ["🌃", "丼", "ꙮ", "Ⅻ", "ﬁ", "ｗ", "\u3000"]
    )
    words = ["<s>", "</s>", "<mask>", "<unk>", "<pad>", "바다", "노을", "cat", "the"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 9)):
            if rng.random() < 0.15:
                parts.append(rng.choice(words))
            else:
                parts.append("".join(rng.choices(alphabet, k=rng.randint(1, 7))))
        texts.append(rng.choice([" ", "  ", "\t", ""]).join(parts))
    return texts


def _ids(encodings) -> list[tuple[list[int], list[int]]]:
    return [(list(e.ids), list(e.attention_mask)) for e in encodings]


def test_piece_table_matches_the_full_tokenizer(xlmr_json, tmp_path) -> None:
    assert write_piece_table(xlmr_json, tmp_path, min_vocab=1000)
    full, table = _full(xlmr_json), _table(tmp_path)
    texts = list(CHECK_TEXTS) + _random_texts(300, seed=0)
    for text in texts:  # one at a time: unpadded, truncated to MAX_LENGTH
        assert _ids(table.encode_batch([text])) == _ids(full.encode_batch([text])), text
    for start in range(0, len(texts), 37):  # padded batches of mixed lengths
        batch = texts[start : start + 37]
        assert _ids(table.encode_batch(batch)) == _ids(full.encode_batch(batch))
    assert piece_table_agrees(full, table)


def test_the_table_is_read_from_other_threads_at_once(xlmr_json, tmp_path) -> None:
    """A server opens the tokenizer on one thread and embeds its queries on others (the
    table is a SQLite file, and each call sets the vocabulary it segments with): calls from
    many threads at once each get exactly the full tokenizer's ids."""
    assert write_piece_table(xlmr_json, tmp_path, min_vocab=1000)
    full, table = _full(xlmr_json), _table(tmp_path)
    batches = [_random_texts(5, seed=seed) for seed in range(24)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda batch: _ids(table.encode_batch(batch)), batches))
    assert got == [_ids(full.encode_batch(batch)) for batch in batches]


def test_the_skeleton_holds_no_vocabulary(xlmr_json, tmp_path) -> None:
    write_piece_table(xlmr_json, tmp_path, min_vocab=1000)
    skeleton = json.loads((tmp_path / SKELETON_NAME).read_text(encoding="utf-8"))
    assert len(skeleton["model"]["vocab"]) <= 3  # <unk>, the lowest-scoring piece (+ <s>...)
    with sqlite3.connect(tmp_path / PIECES_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM pieces").fetchone()[0] == 30_000
    assert (tmp_path / SKELETON_NAME).stat().st_size < 20_000


def test_byte_fallback_pieces_stay_reachable(tmp_path) -> None:
    """With byte_fallback, an unknown character becomes its UTF-8 byte pieces."""
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"<0x{b:02X}>", -20.0) for b in range(256)]
    pieces += [("▁바다", -3.0), ("▁", -4.0), ("바", -6.0), ("다", -6.0), ("a", -7.0), ("▁a", -6.5)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=True))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer_json = backend.to_str()
    assert write_piece_table(tokenizer_json, tmp_path, min_vocab=10)
    full, table = _full(tokenizer_json), _table(tmp_path)
    for text in ["바다 a", "바다 🌃 丼a", "ꙮ", *CHECK_TEXTS]:
        assert _ids(table.encode_batch([text])) == _ids(full.encode_batch([text])), text
    assert any(3 < i < 260 for i in full.encode("🌃").ids)  # bytes, not <unk>, really used


def test_only_large_unigram_vocabularies_get_a_table(xlmr_json, tmp_path) -> None:
    wordpiece = standin_wordpiece_tokenizer().backend_tokenizer.to_str()
    assert not write_piece_table(wordpiece, tmp_path, min_vocab=10)
    assert not write_piece_table(xlmr_json, tmp_path)  # 30,000 < PIECE_TABLE_MIN_VOCAB
    assert not (tmp_path / PIECES_NAME).exists() and not (tmp_path / SKELETON_NAME).exists()
    assert qt.PIECE_TABLE_MIN_VOCAB > 30_000


def test_a_table_that_disagrees_is_detected(xlmr_json, tmp_path) -> None:
    """The export's check can fail: a changed score changes a segmentation."""
    write_piece_table(xlmr_json, tmp_path, min_vocab=1000)
    full = _full(xlmr_json)
    with sqlite3.connect(tmp_path / PIECES_NAME) as db:  # make "바" alone beat "▁바다"-style words
        db.execute("UPDATE pieces SET score = 50.0 WHERE piece IN ('▁', '바', '다')")
    assert not piece_table_agrees(full, _table(tmp_path))


def test_export_uses_the_table_and_matches_sentence_transformers(tmp_path, monkeypatch) -> None:
    """A Unigram text model exports with a piece table, and queries embed as the torch
    model does."""
    from sentence_transformers import SentenceTransformer

    from hanclip_eval.random_models import BertShape, random_minilm
    from hanclip_model.fast_text.export import export_text_encoder
    from hanclip_model.fast_text.runtime import FastTextConfig, FastTextEncoder

    monkeypatch.setattr(qt, "PIECE_TABLE_MIN_VOCAB", 1000)
    shape = BertShape(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=None)
    model_dir = random_minilm(tmp_path / "model", shape=shape, tokenizer="unigram")
    export = export_text_encoder(str(model_dir), tmp_path / "export")
    assert FastTextConfig.read(export).piece_table
    encoder = FastTextEncoder.load(export)
    assert isinstance(encoder._tokenizer, PieceTableTokenizer)
    texts = ["바다 위 노을", "a cat by the window 🌃", " ".join(["해변 노을"] * 200)]
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    cosines = (encoder.embed(texts) * reference).sum(axis=1)
    assert np.all(cosines > 0.9999), cosines
    # The one-query way to open it (no weight pre-packing) computes the same thing.
    unpacked = FastTextEncoder.load(export, prepack=False)
    np.testing.assert_allclose(unpacked.embed(texts), encoder.embed(texts), atol=1e-5)


@pytest.mark.parametrize("damage", ["pieces", "skeleton", "missing"])
def test_a_damaged_table_is_a_clear_error(xlmr_json, tmp_path, damage) -> None:
    write_piece_table(xlmr_json, tmp_path, min_vocab=1000)
    if damage == "pieces":
        (tmp_path / PIECES_NAME).write_bytes(b"not a database" * 100)
    elif damage == "skeleton":
        (tmp_path / SKELETON_NAME).write_text('{"model": {}}', encoding="utf-8")
    else:
        (tmp_path / PIECES_NAME).unlink()
    with pytest.raises(ValueError, match="unreadable piece table"):
        _table(tmp_path)
