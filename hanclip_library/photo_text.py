"""The text read in photos (`photo_text`, schema step 7): kept per content hash and engine,
counted, and found by its words.

How it is found. A search word is found wherever its letters stand in a line of the text,
whatever the spacing and punctuation between them: Korean spacing is loose (and an engine
often splits or joins syllables), so "스타벅스" finds "스타 벅스" and "12500" finds "12,500".
The full-text index (FTS5, unicode61) reads `grams`: each line of the text with its spaces and
punctuation dropped, cut into overlapping two-letter tokens ("스타벅스" → 스타 타벅 벅스), lines
apart by a token no line gives (`LINE_BREAK`, three letters); a word is the phrase of its own
tokens. So two-syllable words (카톡, 영수), the most common in Korean, are found through the
index like any other.

Why not FTS5's trigram tokenizer: it finds no substring shorter than three letters, so every
two-syllable word needs a scan of all the text instead. Measured on 100,000 photos (half with
text, 3 to 60 words each): a two-syllable word through the bigram index median 0.25 ms, by an
instr() scan of the text 40 ms; a three-syllable one 0.3 ms either way; the bigram index
12 MB against the trigram's 28 MB, built in a quarter of the time. sqlite-utils, which the
project was specified with, makes an FTS index with `enable_fts`, but it runs the SQL through
`executescript`, which commits the migration's transaction halfway (migrations.py forbids
it), and its `search` has no way to say a word as a phrase of bigrams: the step writes the
same table and triggers by hand, under the names sqlite-utils gives them.

A photo may have readings by several engines; the newest one (highest id) is the one a
search reads and `info` counts.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from hanclip_library.text_engines import EngineId, Recognition, Word
from hanclip_model.texts import nfc

STATUSES = ("text", "no_text", "failed")
LINE_BREAK = "brk"  # three letters: a line gives one- and two-letter tokens only
SNIPPET_CHARS = 80  # about how much text a snippet shows around the first word found

_LETTER = re.compile(r"\w")


def _compact(text: str) -> tuple[str, list[int]]:
    """`text` casefolded with everything but letters and digits dropped, and where each
    kept letter stands in `text`."""
    kept, where = [], []
    for index, char in enumerate(nfc(text)):
        if _LETTER.match(char):
            folded = char.casefold()
            kept.append(folded)
            where += [index] * len(folded)
    return "".join(kept), where


def _bigrams(compact: str) -> list[str]:
    if len(compact) < 2:
        return [compact] if compact else []
    return [compact[i : i + 2] for i in range(len(compact) - 1)]


def grams(text: str) -> str:
    """What the full-text index reads of `text`: each line's bigrams, lines apart."""
    lines = [_bigrams(_compact(line)[0]) for line in text.splitlines()]
    return f" {LINE_BREAK} ".join(" ".join(tokens) for tokens in lines if tokens)


def searchable_words(words: Iterable[str]) -> tuple[str, ...]:
    """The query's words that a text search looks for: those of two letters or more (a single
    syllable stands inside too many other words to mean anything found there)."""
    return tuple(word for word in words if len(_compact(word)[0]) >= 2)


def match_expression(words: Sequence[str]) -> str:
    """The FTS5 query finding a text holding every one of `words` (each searchable)."""
    return " AND ".join('"' + " ".join(_bigrams(_compact(word)[0])) + '"' for word in words)


@dataclass(frozen=True)
class Reading:
    """One photo content's reading by one engine. `read_at` is set when it is recorded."""

    sha256: str
    engine: EngineId
    status: str  # one of STATUSES
    text: str = ""
    words: tuple[Word, ...] = ()
    error: str | None = None  # why the engine failed on it ("failed" only)

    @classmethod
    def of(cls, sha256: str, engine: EngineId, recognition: Recognition) -> Reading:
        if not recognition.has_text:
            return cls(sha256, engine, "no_text")
        return cls(sha256, engine, "text", nfc(recognition.text), recognition.words)

    @classmethod
    def failure(cls, sha256: str, engine: EngineId, reason: str) -> Reading:
        return cls(sha256, engine, "failed", error=reason)


@dataclass(frozen=True)
class TextMatch:
    """Where a search's words stand in a photo's text: `snippet`, a stretch of the text (its
    lines joined by spaces), `spans`, the words' (start, end) in the snippet, and `boxes`,
    the engine's words holding them, where they stand in the photo's pixels."""

    snippet: str
    spans: tuple[tuple[int, int], ...]
    boxes: tuple[Word, ...] = ()

    def as_json(self) -> dict[str, object]:
        boxes = [
            {"text": w.text, "left": w.left, "top": w.top, "width": w.width, "height": w.height}
            for w in self.boxes
        ]
        return {"snippet": self.snippet, "spans": [list(s) for s in self.spans], "boxes": boxes}

    @classmethod
    def from_json(cls, fields: dict[str, object]) -> TextMatch:
        """`as_json` read back; KeyError, TypeError or ValueError when a field is wrong."""
        spans = tuple((int(start), int(end)) for start, end in fields["spans"])  # type: ignore[attr-defined]
        boxes = tuple(
            Word(
                str(b["text"]),
                int(b["left"]),
                int(b["top"]),
                int(b["width"]),
                int(b["height"]),
                1.0,
            )
            for b in fields["boxes"]  # type: ignore[attr-defined]
        )
        return cls(str(fields["snippet"]), spans, boxes)


def text_match(text: str, words: Sequence[Word], query: Sequence[str]) -> TextMatch:
    """Where the `query` words stand in `text` (and in its `words`): a snippet around the
    first one found, whatever the spacing and punctuation between its letters."""
    compact, where = _compact(text)
    found: list[tuple[int, int]] = []
    for word in query:
        key = _compact(word)[0]
        start = compact.find(key) if key else -1
        while start >= 0:
            found.append((where[start], where[start + len(key) - 1] + 1))
            start = compact.find(key, start + 1)
    flat = text.replace("\n", " ")
    if not found:
        return TextMatch(flat[:SNIPPET_CHARS], ())
    first = min(found)[0]
    begin = max(0, first - SNIPPET_CHARS // 4)
    end = min(len(flat), begin + SNIPPET_CHARS)
    spans = tuple(sorted({(s - begin, e - begin) for s, e in found if s >= begin and e <= end}))
    return TextMatch(flat[begin:end], spans, _words_over(text, words, found))


def _words_over(
    text: str, words: Sequence[Word], spans: Sequence[tuple[int, int]]
) -> tuple[Word, ...]:
    """The engine's words that hold a part of a span of `text`: each word is looked for in
    the text after the one before it (the text is the words in reading order), so a word the
    engine cut in two ("스 타벅스") gives both boxes."""
    over, at = [], 0
    for word in words:
        start = text.find(word.text, at)
        if start < 0:
            continue
        at = start + len(word.text)
        if any(start < end and begin < at for begin, end in spans):
            over.append(word)
    return tuple(over)


@dataclass(frozen=True)
class TextFound:
    """A photo whose content's newest reading holds every word of a text search."""

    photo_id: int
    rank: float  # FTS5's bm25: lower is better
    match: TextMatch


@dataclass(frozen=True)
class TextCounts:
    """What `hanclip info` says of the text in the library's photos (each photo by its
    newest reading): read (with text, without, failed) and not read yet."""

    with_text: int = 0
    no_text: int = 0
    failed: int = 0
    pending: int = 0

    @property
    def read(self) -> int:
        return self.with_text + self.no_text + self.failed

    def as_json(self) -> dict[str, int]:
        return {
            "read": self.read,
            "with_text": self.with_text,
            "no_text": self.no_text,
            "failed": self.failed,
            "pending": self.pending,
        }


def _words_json(words: Sequence[Word]) -> str:
    rows = [[w.text, w.left, w.top, w.width, w.height, round(w.confidence, 3)] for w in words]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _words_from_json(text: str) -> tuple[Word, ...]:
    return tuple(Word(str(r[0]), *(int(v) for v in r[1:5]), float(r[5])) for r in json.loads(text))


# The newest reading of each content: the one searched and counted.
_NEWEST = "t.id = (SELECT max(id) FROM photo_text n WHERE n.sha256 = t.sha256)"


@dataclass(frozen=True)
class TextFailure:
    """A photo whose text the engine could not read: why, by which engine, when (UTC)."""

    path: str
    error: str
    engine: str
    read_at: str | None

    def as_json(self) -> dict[str, str | None]:
        """As `hanclip info --errors --json` lists it, under "text_errors"."""
        return {
            "path": self.path,
            "error": self.error,
            "engine": self.engine,
            "read_at": self.read_at,
        }


class PhotoText:
    """The `photo_text` table of a library's connection (a PhotoStore's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def exists(self) -> bool:
        """Whether the library has the table: a reader may open one from before step 7."""
        found = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'photo_text'"
        ).fetchall()
        return bool(found)

    def unread(self, engine: str, languages: str, *, again: bool = False) -> dict[str, list[str]]:
        """The paths of each photo content without a reading by the engine `engine` in
        `languages`, of any version (`again`: every content), by hash, in path order. A new
        version of the engine reads the library again only when asked: it is known only once
        the engine is open, and the pass opens it only when there is something to read."""
        found: dict[str, list[str]] = {}
        rows = self.conn.execute(
            "SELECT p.sha256, p.path FROM photos p WHERE ? OR NOT EXISTS (SELECT 1 FROM "
            "photo_text t WHERE t.sha256 = p.sha256 AND t.engine = ? AND t.languages = ?) "
            "ORDER BY p.path",
            [again, engine, languages],
        )
        for sha256, path in rows:
            found.setdefault(sha256, []).append(path)
        return found

    def record(self, readings: Sequence[Reading]) -> None:
        """Store `readings` in one transaction, each replacing the same engine's earlier
        reading of the same content in the same languages, whatever its version (as the
        newest, so a search reads it)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.conn:
            for r in readings:
                self.conn.execute(
                    "DELETE FROM photo_text WHERE sha256 = ? AND engine = ? AND languages = ?",
                    [r.sha256, r.engine.name, r.engine.languages],
                )
                self.conn.execute(
                    "INSERT INTO photo_text (sha256, engine, engine_version, languages, status, "
                    "text, words, grams, error, read_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        r.sha256,
                        r.engine.name,
                        r.engine.version,
                        r.engine.languages,
                        r.status,
                        r.text,
                        _words_json(r.words),
                        grams(r.text),
                        r.error,
                        now,
                    ],
                )

    def forget_unheld(self) -> int:
        """Drop the readings of contents no photo has any more; how many."""
        with self.conn:
            return self.conn.execute(
                "DELETE FROM photo_text WHERE sha256 NOT IN (SELECT sha256 FROM photos)"
            ).rowcount

    def counts(self) -> TextCounts:
        """The library's photos by the status of their content's newest reading."""
        if not self.exists():
            (photos,) = self.conn.execute("SELECT COUNT(*) FROM photos").fetchone()
            return TextCounts(pending=int(photos))
        rows = self.conn.execute(
            "SELECT t.status, COUNT(*) FROM photos p LEFT JOIN photo_text t "
            "ON t.sha256 = p.sha256 AND " + _NEWEST + " GROUP BY t.status"
        )
        by_status = {status: int(count) for status, count in rows}
        return TextCounts(
            with_text=by_status.get("text", 0),
            no_text=by_status.get("no_text", 0),
            failed=by_status.get("failed", 0),
            pending=by_status.get(None, 0),
        )

    def failures(self) -> list[TextFailure]:
        """The photos whose content's newest reading failed, with why, by path."""
        if not self.exists():
            return []
        rows = self.conn.execute(
            "SELECT p.path, t.error, t.engine, t.read_at FROM photos p JOIN photo_text t "
            "ON t.sha256 = p.sha256 AND " + _NEWEST + " WHERE t.status = 'failed' ORDER BY p.path"
        )
        return [
            TextFailure(path, error or "", engine, read_at) for path, error, engine, read_at in rows
        ]

    def newest(self, sha256: str) -> Reading | None:
        """The newest reading of the content `sha256` (the one a search reads); None when it
        was not read yet, or the library is from before step 7."""
        if not self.exists():
            return None
        row = self.conn.execute(
            "SELECT engine, engine_version, languages, status, text, words, error "
            "FROM photo_text t WHERE t.sha256 = ? AND " + _NEWEST,
            [sha256],
        ).fetchone()
        if row is None:
            return None
        engine, version, languages, status, text, words, error = row
        engine_id = EngineId(engine, version, languages)
        return Reading(sha256, engine_id, status, text or "", _words_from_json(words), error)

    def find(self, words: Sequence[str], limit: int) -> list[TextFound]:
        """Up to `limit` photos whose content's newest reading holds every one of `words`
        (searchable ones), best first (a copy of a photo is another photo)."""
        if not words or not self.exists():
            return []
        rows = self.conn.execute(
            "SELECT p.id, bm25(photo_text_fts) AS rank, t.text, t.words FROM photo_text_fts "
            "JOIN photo_text t ON t.id = photo_text_fts.rowid JOIN photos p ON p.sha256 = "
            "t.sha256 WHERE photo_text_fts MATCH ? AND t.status = 'text' AND " + _NEWEST + " "
            "ORDER BY rank, p.id LIMIT ?",
            [match_expression(words), limit],
        )
        return [
            TextFound(int(photo_id), float(rank), text_match(text, _words_from_json(boxes), words))
            for photo_id, rank, text, boxes in rows
        ]
