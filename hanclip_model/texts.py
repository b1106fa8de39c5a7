"""The one rule for text: Unicode NFC, applied where text comes in.

Korean typed on macOS, and by some input methods, arrives decomposed (NFD: 바 as ㅂ + ㅏ),
while every tokenizer's vocabulary and every caption file holds composed syllables. So text is
composed here and nowhere else: `clean_text` where a text is read (a query, a caption file, a
benchmark's captions), `nfc` where a file name is matched against a pattern, `nfc_texts` where
texts are handed to an encoder's tokenizer, so the library API behaves the same whoever calls
it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfc_texts(texts: Sequence[str]) -> list[str]:
    return [nfc(text) for text in texts]


def clean_text(text: object) -> str | None:
    """NFC and stripped; None for an empty text or a value that is not a string."""
    if not isinstance(text, str):
        return None
    return unicodedata.normalize("NFC", text).strip() or None
