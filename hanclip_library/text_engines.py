"""Reading the text in a photo: the interface every recognition engine meets.

An engine takes an upright RGB image and returns what it read, as `Recognition`: the text in
reading order, the words with their boxes (for highlighting), and whether the photo holds
text at all (an engine with a cheap first look may answer "no text" without recognising).
Engines are opened by name and language (`open_engine`); one that cannot run here (its
package or its language data missing) raises `EngineUnavailable` with the one line that says
what to install. The library stores a result per content hash with the engine's name,
version and languages, so a change of any of them is a different reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hanclip_model.errors import HanclipError

if TYPE_CHECKING:
    from PIL import Image


class EngineUnavailable(HanclipError):
    """The engine cannot run here: what is missing, and the command that installs it."""


class RecognitionFailed(HanclipError):
    """One photo could not be read (it broke the engine, or ran past the time limit): the
    pass records `reason` for that photo and goes on with the next."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Word:
    """One recognised word and where it stands, in the pixels of the image given."""

    text: str
    left: int
    top: int
    width: int
    height: int
    confidence: float  # 0..1


@dataclass(frozen=True)
class Recognition:
    """What an engine read in one photo."""

    text: str  # the words in reading order, lines separated by "\n"; "" when none
    words: tuple[Word, ...] = ()

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())


@dataclass(frozen=True)
class EngineId:
    """What a stored reading was made by: a change of any field is another reading."""

    name: str  # e.g. "tesseract", "rapidocr"
    version: str
    languages: str  # as the engine names them, e.g. "kor+eng"


class TextEngine(Protocol):
    """A recognition engine, opened for some languages."""

    @property
    def id(self) -> EngineId: ...

    def read(self, image: Image.Image) -> Recognition:
        """The text in `image` (upright RGB). Raises on a photo the engine cannot read."""
        ...


@runtime_checkable
class LookingEngine(TextEngine, Protocol):
    """An engine whose `read` is a cheap first look, then the reading where the look saw
    text; the two steps apart let the caller make the look on a small decode."""

    @property
    def look_side(self) -> int:
        """The smallest side an image handed to `first_look` needs."""
        ...

    def first_look(self, image: Image.Image) -> str | None:
        """How the text in `image` is laid out (an engine's own name for it, e.g. "page"),
        or None when the look saw no text."""
        ...

    def read_as(self, image: Image.Image, layout: str) -> Recognition:
        """The text of `image`, laid out as the first look said."""
        ...
