"""The recognition pass of `hanclip index`: the text in photos, read after their embeddings
are committed (a photo is searchable by its look first).

Readings are kept per content hash and engine (`photo_text.py`): the pass reads each content
that has no reading by the engine given (`again`: every content), so a moved or copied photo
is not read again and a changed one (another hash) is. It commits every `BATCH` readings: a
run killed halfway keeps what it committed, and the next run goes on with the rest. A photo
the engine fails on (`RecognitionFailed`, its time limit included, or any other error) is
recorded as failed with the reason, and the pass goes on; it is read again only when asked
(`again`). A content whose every file is out of reach (an offline folder) stays unread.

The engine is handed in (`TextReader`, which opens it when there is something to read): the
command line opens one of `ocr_engines.py`, tests hand a fake.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hanclip_library.photo_text import PhotoText, Reading
from hanclip_library.text_engines import EngineId, LookingEngine, Recognition, TextEngine
from hanclip_model.errors import ImageLoadError
from hanclip_model.images import load_image

if TYPE_CHECKING:
    from hanclip_library.progress import ProgressReporter
    from hanclip_library.store import PhotoStore

# Readings per commit: what a kill can cost is re-reading this many photos.
BATCH = 8
# The short side JPEG draft decoding keeps at least: the engine brings a photo down to its
# own working size, which must not start from a preview too small for small glyphs.
READ_SIDE = 2048


@dataclass
class TextPassReport:
    """What the pass committed: photo contents read, by outcome, and the failures (a path of
    the content, and why)."""

    engine: EngineId
    with_text: int = 0
    no_text: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def read(self) -> int:
        return self.with_text + self.no_text + self.failed

    def as_json(self) -> dict[str, object]:
        """As `hanclip index --json` prints it, under "text"."""
        return {
            "engine": self.engine.name,
            "engine_version": self.engine.version or None,  # None: nothing to read, not opened
            "languages": self.engine.languages,
            "read": self.read,
            "with_text": self.with_text,
            "no_text": self.no_text,
            "failed": self.failed,
        }

    def count(self, reading: Reading, path: str) -> None:
        if reading.status == "text":
            self.with_text += 1
        elif reading.status == "no_text":
            self.no_text += 1
        else:
            self.failed += 1
            self.failures.append((path, reading.error or ""))


def read_one(engine: TextEngine, sha256: str, paths: list[str]) -> tuple[Reading, str] | None:
    """The engine's reading of the content at the first of `paths` whose file is there, and
    that path; None when none is (its folder offline, or gone since the scan)."""
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            return Reading.of(sha256, engine.id, _recognition(engine, path)), path
        except ImageLoadError as exc:
            return Reading.failure(sha256, engine.id, str(exc)), path
        except Exception as exc:  # RecognitionFailed says why; any other error is the engine's
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            return Reading.failure(sha256, engine.id, reason), path
    return None


def _recognition(engine: TextEngine, path: str) -> Recognition:
    """What `engine` reads in the photo at `path`. An engine with a first look
    (`LookingEngine`) looks at a small decode (a JPEG at an eighth or a quarter of its
    size), and the photo is decoded large only when the look saw text."""
    if isinstance(engine, LookingEngine):
        layout = engine.first_look(load_image(path, engine.look_side).image)
        if layout is None:
            return Recognition("")
        return engine.read_as(load_image(path, READ_SIDE).image, layout)
    return engine.read(load_image(path, READ_SIDE).image)


@dataclass(frozen=True)
class TextReader:
    """What the pass reads with: the engine's name and languages, known before it is opened,
    and how to open it (None: it cannot run here, and that was said). It is opened only when
    some photo has not been read by it: opening one loads its models."""

    name: str
    languages: str
    open: Callable[[], TextEngine | None]


def read_text(
    store: PhotoStore,
    reader: TextReader,
    progress: ProgressReporter,
    *,
    again: bool = False,
) -> TextPassReport | None:
    """Read the text of every photo content of `store` without a reading by `reader`'s
    engine (`again`: of every one), committing every BATCH readings; None when the engine
    cannot be opened."""
    texts = PhotoText(store.conn)
    texts.forget_unheld()  # a photo removed takes its text with it
    todo = texts.unread(reader.name, reader.languages, again=again)
    if not todo:
        return TextPassReport(EngineId(reader.name, "", reader.languages))
    engine = reader.open()
    if engine is None:
        return None
    report = TextPassReport(engine.id)
    progress.stage("reading text in photos", total=len(todo))
    batch: list[tuple[Reading, str]] = []

    def commit() -> None:
        texts.record([reading for reading, _ in batch])
        for reading, path in batch:  # counted once committed
            report.count(reading, path)
        batch.clear()

    try:
        for sha256, paths in todo.items():
            done = read_one(engine, sha256, paths)
            if done is not None:
                batch.append(done)
            if len(batch) >= BATCH:
                commit()
            progress.advance()
    except KeyboardInterrupt:
        commit()  # what was read before Ctrl-C is kept
        raise
    commit()
    return report


def engine_choice(
    name: str | None, languages: str | None, bundle_language: str | None
) -> tuple[str, str]:
    """The engine's name (None: the measured default) and languages (None: those of the
    model's language, Korean when it names none); EngineUnavailable for a language no engine
    knows."""
    from hanclip_library import ocr_engines

    chosen = languages or ocr_engines.languages_for(bundle_language or "ko")
    return name or ocr_engines.DEFAULT_ENGINE, chosen


def open_text_engine(name: str, languages: str) -> TextEngine:
    """The engine `name` reading `languages`; EngineUnavailable says in one line what is
    missing."""
    from hanclip_library import ocr_engines

    return ocr_engines.open_engine(name, languages)
