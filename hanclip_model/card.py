"""What a bundle says of its training, as one typed record: read from its manifest
(`hanclip.json`) by the bundle list (`hanclip models`) and by the model card `hanclip train`
writes beside it (`MODEL_CARD.md`, rendered by `trainer.card`).

A manifest is read leniently: a bundle written by hand or by an older version may lack any
key, or hold one of another type; what cannot be read is left out, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CARD_NAME = "MODEL_CARD.md"
NOT_TRAINED = "—"

Count = int | float


@dataclass(frozen=True)
class TrainingCard:
    """The training facts of one manifest; None (or "") where it records none."""

    language: str | None  # the manifest's `language`, else the one its banks recorded
    english_captions: Count | None
    target_captions: Count | None
    images: Count | None
    source: str  # the recipe, the sources or the source the banks name; "" when none
    calibrated: bool  # a `calibration` with numbers a and b

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> TrainingCard:
        banks = _mapping(_mapping(manifest.get("training")).get("banks"))
        calibration = _mapping(manifest.get("calibration"))
        return cls(
            language=_language(manifest, banks),
            english_captions=_count(banks.get("english_captions")),
            target_captions=_count(banks.get("korean_captions")),
            images=_count(banks.get("images")),
            source=_source_label(banks),
            calibrated=all(_is_number(calibration.get(key)) for key in ("a", "b")),
        )

    @property
    def trained_on(self) -> str:
        """A short line: the sources and the row counts, or NOT_TRAINED."""
        captions = "Korean" if self.language in (None, "ko") else self.language
        counts = [
            f"{count:,} {label}"
            for count, label in (
                (self.english_captions, "English captions"),
                (self.target_captions, f"{captions} captions"),
                (self.images, "photos"),
            )
            if count is not None
        ]
        text = ", ".join(counts)
        if self.source and text:
            return f"{self.source}: {text}"
        return self.source or text or NOT_TRAINED


def _language(manifest: Mapping[str, Any], banks: Mapping[str, Any]) -> str | None:
    for value in (manifest.get("language"), banks.get("language")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _source_label(banks: Mapping[str, Any]) -> str:
    for key in ("recipe", "sources", "source"):
        value = banks.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, Mapping) and value:
            return " + ".join(str(name) for name in value)
        if isinstance(value, list) and value:
            names = [
                str(item.get("name", "?")) if isinstance(item, Mapping) else str(item)
                for item in value
            ]
            return " + ".join(names)
    return ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> Count | None:
    return value if _is_number(value) else None
