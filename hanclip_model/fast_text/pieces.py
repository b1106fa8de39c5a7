"""Tokenizing a query without building a 250,000-piece vocabulary first.

`tokenizers` builds a Unigram model's trie from the whole vocabulary when it loads: for the
multilingual MiniLM's XLM-R vocabulary (250,002 pieces) that takes longer than everything
else a cold `hanclip search` does (benchmarks/speed.py measures a cold search). A Unigram
segmentation of a word can only use pieces that are substrings of that word, so the export
also writes:

* `pieces.sqlite`: every piece with its id and score, keyed by the piece;
* `tokenizer-skeleton.json`: the tokenizer exactly as saved (normalizer, pre-tokenizer,
  added tokens, post-processor) with a vocabulary of just the unknown piece and the
  lowest-scoring piece (which fixes the unknown-piece penalty, derived from the minimum score).

For a batch of queries, `PieceTableTokenizer` normalises and pre-tokenises them with the
skeleton's own components, looks up every substring of every word (and its `▁`-prefixed form,
for words that start a segment after an added token), builds a Unigram model of the pieces
found, and encodes with it; token strings map back to the full vocabulary's ids. The export
keeps the table only when it tokenizes `CHECK_TEXTS` exactly as the full tokenizer does.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PIECES_NAME = "pieces.sqlite"
SKELETON_NAME = "tokenizer-skeleton.json"
# Below this many pieces loading the full tokenizer is a small part of a search anyway.
PIECE_TABLE_MIN_VOCAB = 50_000
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
_METASPACE = "▁"
_SQL_CHUNK = 500

# Texts the piece table must tokenize exactly as the full tokenizer before it is kept:
# Korean, English, digits, punctuation, emoji and rare characters (unknown pieces), a literal
# special token, odd whitespace, and a text long enough to be truncated.
CHECK_TEXTS = (
    "바다 위 노을",
    "누워있는 고양이와 창가의 햇살",
    "공원에서 뛰는 강아지와 아이들 2023년 여름",
    "a cat sleeping on the sofa by the window",
    "  Sunset over the SEA, 2023!  ",
    "서울 야경 city lights at night 🌃🌉",
    "눈 덮인 산\t사진\n\n제주도",
    "ＦＵＬＬ　ｗｉｄｔｈ ① ﬁ ㈜ Ⅻ",
    "<s> 바다 </s> <mask>고양이<unk> <pad>",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 𓀀 丼 龘 鬱",
    "e-mail: photo_2023@example.com, #여행 #바다",
    " ".join(["해변에서 본 바다 노을 a beach at sunset"] * 60),
)


@dataclass(frozen=True)
class _Encoded:
    """What `fast_text.tokenize` reads from a `tokenizers.Encoding`."""

    ids: list[int]
    attention_mask: list[int]


def write_piece_table(
    tokenizer_json: str, directory: Path, *, min_vocab: int | None = None
) -> bool:
    """Write `pieces.sqlite` and the skeleton for a Unigram tokenizer of at least
    `min_vocab` (default PIECE_TABLE_MIN_VOCAB) pieces; False (nothing written) for any
    other tokenizer, which loads fast enough whole."""
    data = json.loads(tokenizer_json)
    model = data.get("model") or {}
    vocab = model.get("vocab") or []
    unk_id = model.get("unk_id")
    min_vocab = PIECE_TABLE_MIN_VOCAB if min_vocab is None else min_vocab
    if model.get("type") != "Unigram" or len(vocab) < min_vocab or unk_id is None:
        return False
    lowest = min(range(len(vocab)), key=lambda i: vocab[i][1])
    base = {unk_id, lowest}
    if model.get("byte_fallback"):
        base |= {i for i, (piece, _) in enumerate(vocab) if _BYTE_PIECE.fullmatch(piece)}
    base_ids = sorted(base)
    skeleton = dict(data, model=dict(model, vocab=[vocab[i] for i in base_ids]))
    skeleton["model"]["unk_id"] = base_ids.index(unk_id)
    path = directory / PIECES_NAME
    path.unlink(missing_ok=True)
    db = sqlite3.connect(str(path))
    try:
        with db:
            db.execute(
                "CREATE TABLE pieces (piece TEXT PRIMARY KEY, id INTEGER NOT NULL, "
                "score REAL NOT NULL) WITHOUT ROWID"
            )
            db.executemany(
                "INSERT OR IGNORE INTO pieces VALUES (?, ?, ?)",
                ((piece, i, float(score)) for i, (piece, score) in enumerate(vocab)),
            )
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = {
                "base": [[vocab[i][0], i, float(vocab[i][1])] for i in base_ids],
                "max_piece_chars": max(len(p) for p, _ in vocab),
            }
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
    finally:
        db.close()
    text = json.dumps(skeleton, ensure_ascii=False)
    (directory / SKELETON_NAME).write_text(text, encoding="utf-8")
    return True


def remove_piece_table(directory: Path) -> None:
    (directory / PIECES_NAME).unlink(missing_ok=True)
    (directory / SKELETON_NAME).unlink(missing_ok=True)


class PieceTableTokenizer:
    """The full tokenizer's `encode_batch` (ids and attention masks), from the piece table.

    Usable from any thread, one call at a time (a server embeds its queries on a thread of
    their own): each call sets the small vocabulary it segments with, so calls take a lock."""

    def __init__(self, directory: Path, *, max_length: int, pad_id: int, padding_side: str):
        self._lock = threading.Lock()
        try:
            self._open(directory, max_length, pad_id, padding_side)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception
            raise ValueError(f"unreadable piece table in {directory}: {exc!r}") from None

    def _open(self, directory: Path, max_length: int, pad_id: int, padding_side: str) -> None:
        from tokenizers import Tokenizer

        text = (directory / SKELETON_NAME).read_text(encoding="utf-8")
        data = json.loads(text)
        self._tokenizer = Tokenizer.from_str(text)
        self._tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self._tokenizer.enable_padding(direction=padding_side, pad_id=pad_id)
        self._pad_id = pad_id
        self._byte_fallback = bool(data["model"].get("byte_fallback"))
        self._special = _special_token_ids(data)
        uri = (directory / PIECES_NAME).resolve().as_uri() + "?mode=ro"
        # Read-only, and used under the lock: any thread may read it.
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            # The pieces every segmentation may need, whatever the text: (piece, id, score).
            self._base = [(str(p), int(i), float(s)) for p, i, s in json.loads(meta["base"])]
            self._max_chars = int(json.loads(meta["max_piece_chars"]))
            self._unk_id = self._base[data["model"]["unk_id"]][1]
        except Exception:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def encode_batch(self, texts: Sequence[str]) -> list[_Encoded]:
        with self._lock:
            return self._encode_batch(texts)

    def _encode_batch(self, texts: Sequence[str]) -> list[_Encoded]:
        from tokenizers import models

        rows = self._pieces_for(texts)  # the small vocabulary: index here -> (piece, id, score)
        original_ids = [token_id for _, token_id, _ in rows]
        self._tokenizer.model = models.Unigram(
            [(piece, score) for piece, _, score in rows],
            original_ids.index(self._unk_id),
            self._byte_fallback,
        )
        encoded = []
        for encoding in self._tokenizer.encode_batch(list(texts)):
            # Added and post-processor tokens by their text (their ids are the full
            # vocabulary's already); the model's own tokens, unknown ones included (whose text
            # is the raw input), by their index in the small vocabulary.
            ids = [
                (self._special[token] if token in self._special else original_ids[index])
                if mask
                else self._pad_id
                for token, index, mask in zip(
                    encoding.tokens, encoding.ids, encoding.attention_mask, strict=True
                )
            ]
            encoded.append(_Encoded(ids, list(encoding.attention_mask)))
        return encoded

    def _pieces_for(self, texts: Sequence[str]) -> list[tuple[str, int, float]]:
        """Every vocabulary piece that can appear in the segmentation of `texts`, and the
        base pieces, in vocabulary order: [(piece, id, score)]."""
        candidates: set[str] = set()
        for text in texts:
            for word in self._words(text):
                candidates |= self._substrings(word)
        rows = self._base + self._lookup_pieces(sorted(candidates))
        return sorted(set(rows), key=lambda row: row[1])

    def _words(self, text: str) -> list[str]:
        normalizer = self._tokenizer.normalizer
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        pre_tokenizer = self._tokenizer.pre_tokenizer
        if pre_tokenizer is None:
            return [normalized]
        return [word for word, _ in pre_tokenizer.pre_tokenize_str(normalized)]

    def _substrings(self, word: str) -> set[str]:
        found = set()
        for start in range(len(word)):
            for end in range(start + 1, min(len(word), start + self._max_chars) + 1):
                piece = word[start:end]
                found.add(piece)
                if not piece.startswith(_METASPACE) and end - start < self._max_chars:
                    found.add(_METASPACE + piece)
        return found

    def _lookup_pieces(self, pieces: list[str]) -> list[tuple[str, int, float]]:
        rows: list[tuple[str, int, float]] = []
        for start in range(0, len(pieces), _SQL_CHUNK):
            chunk = pieces[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows += self._db.execute(
                f"SELECT piece, id, score FROM pieces WHERE piece IN ({marks})", chunk
            ).fetchall()
        return rows


def _special_token_ids(data: dict[str, Any]) -> dict[str, int]:
    """Ids of the added tokens and of the post-processor's special tokens, by content."""
    special = {token["content"]: int(token["id"]) for token in data.get("added_tokens") or []}
    processors = [data.get("post_processor") or {}]
    while processors:
        processor = processors.pop()
        processors += processor.get("processors") or []  # a Sequence of processors
        for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [content, id]
            if isinstance(processor.get(key), list):
                content, token_id = processor[key]
                special.setdefault(content, int(token_id))
        for token in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
            for content, token_id in zip(token["tokens"], token["ids"], strict=True):
                special.setdefault(content, int(token_id))
    return special


def piece_table_agrees(full: Any, table: PieceTableTokenizer) -> bool:
    """Whether the piece table gives the full tokenizer's ids and masks on CHECK_TEXTS, one
    text at a time and as one padded batch."""
    batches = [[text] for text in CHECK_TEXTS] + [list(CHECK_TEXTS)]
    for batch in batches:
        expected = [(e.ids, e.attention_mask) for e in full.encode_batch(batch)]
        got = [(e.ids, e.attention_mask) for e in table.encode_batch(batch)]
        if got != expected:
            return False
    return True
