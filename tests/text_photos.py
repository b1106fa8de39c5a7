"""Photos with and without text, and a fake recognition engine that reads them: tests of the
text pass and search need no Tesseract.

Each photo is a PNG whose top-left pixel is its key (lossless, so the engine sees it as
written); the engine answers the text given for that key, or raises what is given."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from hanclip_library.text_engines import EngineId, Recognition, RecognitionFailed, Word

SCREENSHOT = "스타벅스 영수증\n아메리카노 4,500원"
CHAT = "카톡 메시지 보내기"
TEXTS = {"screenshot.png": SCREENSHOT, "chat.png": CHAT}
BROKEN = "broken.png"
PLAIN = [f"plain_{i}.png" for i in range(5)]


def key_of(index: int) -> tuple[int, int, int]:
    return (index * 17 % 256, index * 29 % 256, 250 - index)


def write_photo(path: Path, index: int, seed: int = 0) -> None:
    rng = random.Random(index * 1000 + seed)
    image = Image.new("RGB", (64, 48), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(12):
        box = [rng.randrange(64), rng.randrange(48)]
        box += [box[0] + rng.randrange(4, 30), box[1] + rng.randrange(4, 30)]
        image.paste(tuple(rng.randrange(256) for _ in range(3)), box)
    image.putpixel((0, 0), key_of(index))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


NAMES = [*TEXTS, BROKEN, *PLAIN]


def write_text_photos(folder: Path) -> dict[str, Path]:
    """The photos, by name: two with text, one the engine breaks on, five without text."""
    paths = {}
    for index, name in enumerate(NAMES):
        paths[name] = folder / name
        write_photo(paths[name], index)
    return paths


@dataclass
class FakeEngine:
    """Reads the text each photo was written with; breaks on BROKEN; raises KeyboardInterrupt
    on the read after `interrupt_after` (a kill)."""

    interrupt_after: int | None = None
    name: str = "fake"  # use_engine names it as the command asked
    languages: str = "kor+eng"
    reads: list[str] = field(default_factory=list)

    @property
    def id(self) -> EngineId:
        return EngineId(self.name, "1", self.languages)

    def read(self, image: Image.Image) -> Recognition:
        name = NAMES[[key_of(i) for i in range(len(NAMES))].index(image.getpixel((0, 0)))]
        if self.interrupt_after is not None and len(self.reads) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.reads.append(name)
        if name == BROKEN:
            raise RecognitionFailed("the fake engine cannot read this one")
        text = TEXTS.get(name, "")
        words = tuple(Word(w, 10 * i, 5, 9, 9, 0.9) for i, w in enumerate(text.split()))
        return Recognition(text, words)


def use_engine(monkeypatch, engine: FakeEngine) -> FakeEngine:
    """`hanclip index` reads with `engine`, named as the engine it asks for."""
    from hanclip_library import text_pass

    def open_engine(name: str, languages: str) -> FakeEngine:
        engine.name, engine.languages = name, languages
        return engine

    monkeypatch.setattr(text_pass, "open_text_engine", open_engine)
    return engine
