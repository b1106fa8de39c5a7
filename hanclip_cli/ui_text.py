"""The words of the two pages hanclip makes, the web page of `hanclip serve` and the page of
`search --html`, and the one rule that picks their language.

The words are one table, `serve/static/strings.json`: a key, its Korean and its English
(`KEY_one`, where a language has one, is said of exactly one). The server fills the web page
with the words of its language and hands the page's script the same table's column; the
--html page is written from it. A page is in the first language its reader prefers that it
has: the browser's Accept-Language for the web page, the locale (LC_ALL, LC_MESSAGES, LANG)
for the --html file; Korean, the language the tool is made for, when neither says one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

STRINGS_FILE = Path(__file__).parent / "serve" / "static" / "strings.json"
LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "ko"


def choose_language(preferences: Iterable[str]) -> str:
    """The first of `preferences` (language tags or locale names: "en-US", "ko_KR.UTF-8")
    that a page has, else Korean."""
    for preference in preferences:
        primary = preference.strip().lower().replace("_", "-").split(".")[0].split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def accept_language(header: str | None) -> str:
    """The page's language for an Accept-Language header ("en-US,en;q=0.9,ko;q=0.8")."""
    weighted = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, parameters = part.partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag.strip() and quality > 0:
            weighted.append((-quality, position, tag))
    return choose_language(tag for _, _, tag in sorted(weighted))


def locale_language(environ: Mapping[str, str] = os.environ) -> str:
    """The page's language for the locale, read as POSIX reads it for messages."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if environ.get(name):
            return choose_language([environ[name]])
    return DEFAULT_LANGUAGE


@cache
def _table() -> dict[str, dict[str, str]]:
    return json.loads(STRINGS_FILE.read_text("utf-8"))


@cache
def ui_strings(language: str) -> dict[str, str]:
    """Every string of the table in `language` (one of LANGUAGES)."""
    return {key: texts[language] for key, texts in _table().items() if language in texts}


def say(language: str, key: str, n: int | None = None, **values: object) -> str:
    """The string `key` in `language`, its {placeholders} filled (`n` among them)."""
    strings = ui_strings(language)
    text = strings.get(f"{key}_one", strings[key]) if n == 1 else strings[key]
    return text.format(n=n, **values)
