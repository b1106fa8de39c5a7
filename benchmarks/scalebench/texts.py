"""The text in photos (issue 24) on a fabricated library: which photos have a reading, what
it says, and the queries that find it or not.

Every TEXT_EVERY-th row (by id) gets a reading with text: a phrase of `korean_queries` whose
last word is one of WRITTEN_WHATS ("여름 해변에서 고양이"). It is written by the measured
checkout's own code (`PhotoText.record`, in a process run like its commands), after its first
`index` has migrated the library, so the FTS triggers fill the index with the `grams` of that
checkout. A query that matches is a phrase written (the first ones: each is on at least one
photo once the library has as many text rows as queries); one that does not ends with a word
that no text holds. A checkout from before the text in photos has none of this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchkit.inputs import PHRASES, WHAT, korean_queries
from benchkit.processes import run_process
from benchkit.workspace import Workspace

TEXT_EVERY = 10  # one photo in ten has text
WRITTEN_WHATS = WHAT[:8]  # the texts' last words; the other WHATs are in none
ENGINE = ("hanclip-scale", "1", "kor+eng")  # the readings' EngineId: never a real engine's
TEXT_SEED = 24
UNMATCHED_SEED = 25


def _ending_in(whats: tuple[str, ...], seed: int) -> list[str]:
    return [q for q in korean_queries(PHRASES, seed=seed) if q.endswith(whats)]


def written_texts() -> list[str]:
    """The texts of the text rows, in id order (the list repeats)."""
    return _ending_in(WRITTEN_WHATS, TEXT_SEED)


def matching_queries(count: int) -> list[str]:
    """`count` queries each held whole by the text of some photo (given `count` text rows)."""
    return written_texts()[:count]


def unmatched_queries(count: int) -> list[str]:
    """`count` queries with a word no text holds."""
    others = tuple(w for w in WHAT if w not in WRITTEN_WHATS)
    return _ending_in(others, UNMATCHED_SEED)[:count]


def text_rows(size: int) -> int:
    return size // TEXT_EVERY


def write_texts(ws: Workspace, library: Path) -> dict[str, float]:
    """The readings written into `library` (migrated) by the measured checkout's PhotoText
    (`ws` runs it): "rows" of them and "write_s" spent (0 when an earlier run wrote them)."""
    plan = {"library": str(library), "every": TEXT_EVERY, "engine": ENGINE}
    plan["texts"] = written_texts()
    cmd = [sys.executable, "-c", _WRITE, json.dumps(plan, ensure_ascii=False)]
    return json.loads(run_process(cmd, ws.env).stdout.strip().splitlines()[-1])


# In a fresh process of the measured checkout: a reading with text for every `every`-th
# photo, through PhotoText.record (one transaction per batch), unless all are there.
_WRITE = r"""
import json, sys, time
from pathlib import Path
from hanclip_library.photo_text import PhotoText, Reading
from hanclip_library.store import PhotoStore
from hanclip_library.text_engines import EngineId, Recognition
plan = json.loads(sys.argv[1])
engine, phrases = EngineId(*plan["engine"]), plan["texts"]
store = PhotoStore(Path(plan["library"]), create=False)
try:
    texts = PhotoText(store.conn)
    rows = store.conn.execute(
        "SELECT sha256 FROM photos WHERE id % ? = 0 ORDER BY id", [plan["every"]]
    ).fetchall()
    (have,) = store.conn.execute(
        "SELECT COUNT(*) FROM photo_text WHERE engine = ? AND status = 'text'", [engine.name]
    ).fetchone()
    start = time.perf_counter()
    if have != len(rows):
        for first in range(0, len(rows), 10_000):
            batch = rows[first : first + 10_000]
            texts.record([
                Reading.of(sha256, engine, Recognition(phrases[(first + i) % len(phrases)]))
                for i, (sha256,) in enumerate(batch)
            ])
    written = time.perf_counter() - start if have != len(rows) else 0.0
finally:
    store.close()
print(json.dumps({"rows": len(rows), "write_s": written}))
"""
