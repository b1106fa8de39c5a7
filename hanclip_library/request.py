"""One search, typed: `SearchRequest` holds what to look for (the terms), what a photo must
pass (the filters), the order, the page, and what the front end is to make of the hits.

Each field is declared once, beside its type and default, by a `Declared` in its metadata:
its command-line flags and help, its HTTP parameter, whether it may be given again. The
command line's parsers (the Typer command and the fast argparse one, `hanclip_cli/commands/
search.py`) and the HTTP form of a search (`to_params` / `from_params`: the API of `hanclip
serve`, and the relay of a `search` to a running server) are generated from these
declarations; `request_fields` refuses a field without one. A request is checked here too,
once (`check`), in the words of the front end that built it (`Dialect`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_type_hints

from hanclip_library.query import (
    MAX_QUERY_CHARS,
    NO_TERMS,
    QueryTerm,
    SearchInputError,
    normalise_query,
    parse_query,
)
from hanclip_library.store import DateBound
from hanclip_model.errors import HanclipError

if TYPE_CHECKING:
    from hanclip_model.model import HanclipModel

SORT_ORDERS = ("score", "date", "date-asc")
MAX_PAGE = 200  # photos in one answer of the API
MAX_DEPTH = 2000  # how far down the ranking the API's paging reaches
DEFAULT_PAGE = 30  # the API's page when it is not given `n`

Params = list[tuple[str, str]]  # an HTTP query: (name, value) pairs, a name repeated at will

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


class Part(Enum):
    """What a field is to a search: the front ends treat each part alike."""

    TERMS = "terms"  # what to look for
    PAGE = "page"  # how many, from where
    FILTER = "filter"  # what a photo must pass
    ORDER = "order"
    OUTPUT = "output"  # what the front end makes of the hits; never sent to a server


@dataclass(frozen=True)
class Declared:
    """What the front ends need to know of one field of `SearchRequest`."""

    part: Part
    help: str
    # Command-line option names as --help lists them; () with `argument` (the positional
    # words), and () for a field only the HTTP API or the server's routes set.
    flags: tuple[str, ...] = ()
    http: str | None = None  # its HTTP parameter; None: the API cannot say it
    repeat: bool = False  # may be given again: every occurrence counts
    argument: bool = False  # the positional words on the command line
    minimum: int | None = None
    http_maximum: int | None = None  # the server takes no more (its page, its depth)
    http_default: int | None = None  # the API's default, where it is not the field's


def declared(default: Any, **declaration: Any) -> Any:
    """A dataclass field with its `Declared` in the metadata."""
    return field(default=default, metadata={"declared": Declared(**declaration)})


@dataclass(frozen=True)
class RequestField:
    """A field of the request with its declaration and the type of one of its values."""

    name: str
    default: Any
    value_type: type  # str, int, float, bool or Path; a repeated field holds a tuple of them
    declared: Declared

    @property
    def on_command_line(self) -> bool:
        return bool(self.declared.flags) or self.declared.argument


@dataclass(frozen=True)
class SearchRequest:
    """One search, as a front end read it from the user's words. The defaults are
    `hanclip search`'s."""

    query: tuple[str, ...] = declared(
        (),
        part=Part.TERMS,
        help="What to look for, in Korean or any language; join ideas with + and - "
        "(바다 + 노을 - 사람), weigh one with W: (2:강아지).",
        argument=True,
        http="q",
    )
    image: tuple[Path, ...] = declared(
        (),
        part=Part.TERMS,
        help="Find photos similar to this photo (repeatable); the photo itself is not among "
        "the results (copies of it elsewhere are), as on the web page's similar photos.",
        flags=("--image", "-i"),
        repeat=True,
    )
    limit: int = declared(
        10,
        part=Part.PAGE,
        help="How many results.",
        flags=("-n", "--limit"),
        http="n",
        minimum=1,
        http_maximum=MAX_PAGE,
        http_default=DEFAULT_PAGE,
    )
    offset: int = declared(
        0,
        part=Part.PAGE,
        help="Hits to skip: the page that follows `offset` of them.",
        http="offset",
        minimum=0,
        http_maximum=MAX_DEPTH - 1,
    )
    json_output: bool = declared(
        False, part=Part.OUTPUT, help="Print JSON for scripts.", flags=("--json",)
    )
    include_offline: bool = declared(
        False,
        part=Part.FILTER,
        help="Also show photos of folders that are offline (an unplugged drive).",
        flags=("--include-offline",),
        http="include_offline",
    )
    add: tuple[str, ...] = declared(
        (),
        part=Part.TERMS,
        help="Add this text to the query (repeatable).",
        flags=("--add",),
        repeat=True,
    )
    sub: tuple[str, ...] = declared(
        (),
        part=Part.TERMS,
        help="Subtract this text from the query (repeatable).",
        flags=("--sub",),
        repeat=True,
    )
    sub_image: tuple[Path, ...] = declared(
        (),
        part=Part.TERMS,
        help="Subtract this photo from the query (repeatable); it is not among the results.",
        flags=("--sub-image",),
        repeat=True,
    )
    after: str | None = declared(
        None,
        part=Part.FILTER,
        help="Photos dated on or after this day, month or year (2023-07-14, 2023-07, 2023).",
        flags=("--after",),
        http="after",
    )
    before: str | None = declared(
        None,
        part=Part.FILTER,
        help="Photos dated before this day, month or year.",
        flags=("--before",),
        http="before",
    )
    folders: tuple[Path, ...] = declared(
        (),
        part=Part.FILTER,
        help="Only photos in this folder or below it (repeatable); a folder with no indexed "
        "photo under it is an error.",
        flags=("--in",),
        http="in",
        repeat=True,
    )
    text_only: bool = declared(
        False,
        part=Part.FILTER,
        help="Only photos whose text (read by `hanclip index`) holds the words.",
        flags=("--text-only",),
        http="text_only",
    )
    no_text: bool = declared(
        False,
        part=Part.FILTER,
        help="Search by look alone, not by the text in photos.",
        flags=("--no-text",),
        http="no_text",
    )
    min_score: float | None = declared(
        None,
        part=Part.FILTER,
        help="Leave out matches scoring below this.",
        flags=("--min-score",),
        http="min_score",
    )
    min_prob: float | None = declared(
        None,
        part=Part.FILTER,
        help="Leave out matches whose match probability is below this (0 to 1; models "
        "that `hanclip train` calibrated).",
        flags=("--min-prob",),
        http="min_prob",
    )
    sort: str = declared(
        "score",
        part=Part.ORDER,
        help="Order of the results: score, date (newest first) or date-asc.",
        flags=("--sort",),
        http="sort",
    )
    paths: bool = declared(
        False,
        part=Part.OUTPUT,
        help="Print only the paths, one a line (for xargs).",
        flags=("--paths",),
    )
    null: bool = declared(
        False,
        part=Part.OUTPUT,
        help="Print only the paths, each ended by NUL.",
        flags=("-0", "--null"),
    )
    html: Path | None = declared(
        None,
        part=Part.OUTPUT,
        help="Also write the results as one self-contained HTML page of thumbnails here.",
        flags=("--html",),
    )
    open_page: bool = declared(
        False,
        part=Part.OUTPUT,
        help="Open the --html page in the default browser.",
        flags=("--open",),
    )
    # The server's /api/photos/{id}/similar sets it from its path: photos like this one.
    like: int | None = declared(
        None,
        part=Part.TERMS,
        help="Photos like this indexed photo (its id); as with --image, itself left out.",
    )

    @cached_property
    def parsed(self) -> tuple[QueryTerm, ...]:
        """The terms as given: the words, --add, --sub, the photos (`parse_query`)."""
        return parse_query(
            self.query,
            add=self.add,
            sub=self.sub,
            images=self.image,
            sub_images=self.sub_image,
            photo_ids=() if self.like is None else (self.like,),
        )

    @cached_property
    def terms(self) -> tuple[QueryTerm, ...]:
        """The terms to search for, each text normalised (`normalise_query`)."""
        return tuple(
            term if term.text is None else replace(term, text=normalise_query(term.text))
            for term in self.parsed
        )

    @property
    def query_cut_short(self) -> bool:
        """A text of the query is longer than a search reads (MAX_QUERY_CHARS)."""
        return any(
            t.text is not None and len(t.text.strip()) > MAX_QUERY_CHARS for t in self.parsed
        )

    @property
    def narrows(self) -> bool:
        """The dates or folders leave photos out before the ranking."""
        return bool(self.after or self.before or self.folders)

    def check(self, dialect: Dialect, model: HanclipModel | None = None) -> None:
        """Every check the request needs before a search (with `model`, also that it can
        give what is asked), worded as `dialect` names the fields."""
        words = self.query or self.add or self.sub
        if not (words or self.image or self.sub_image or self.like is not None):
            raise SearchInputError(dialect.nothing_to_find, "nothing_to_find")
        if self.json_output and (self.paths or self.null):
            raise HanclipError("choose one output: --json or --paths / -0")
        if self.text_only and self.no_text:
            raise SearchInputError(
                f"choose one: {dialect.name('text_only')} or {dialect.name('no_text')}",
                "conflicting_switches",
                _field("text_only").declared.http,
                True,
            )
        if self.text_only and not words:
            raise SearchInputError(
                f"{dialect.name('text_only')} finds photos by the words in them: give some words",
                "nothing_to_find",
                _field("text_only").declared.http,
                True,
            )
        if self.open_page and self.html is None:
            raise HanclipError("--open opens the page --html writes: give --html FILE too")
        if self.sort not in SORT_ORDERS:
            raise dialect.error(
                "sort", self.sort, "not_a_choice", f": choose one of {', '.join(SORT_ORDERS)}"
            )
        if self.limit < 1:
            raise SearchInputError(
                f"{dialect.name('limit')} must be at least 1", "out_of_range", "n", self.limit
            )
        for name in ("after", "before"):
            self.date_bound(name, dialect)
        if self.min_prob is None:
            return
        if not 0 < self.min_prob < 1:  # NaN fails too
            raise dialect.error(
                "min_prob",
                self.min_prob,
                "not_a_probability",
                ": give a match probability between 0 and 1, e.g. 0.9",
            )
        if model is not None and model.calibration is None:
            which = "this one" if dialect.http else repr(model.name)
            raise SearchInputError(
                f"{dialect.name('min_prob')} needs a calibrated model{'' if dialect.http else ','}"
                f" and {which} is not calibrated (it gives scores only): use "
                f"{dialect.name('min_score')} instead",
                "not_calibrated",
                _field("min_prob").declared.http,
                self.min_prob,
            )

    def date_bound(self, name: str, dialect: Dialect) -> DateBound | None:
        """The start of the day, month or year the field `name` (after, before) names, local
        time; None when it is not given."""
        text = getattr(self, name)
        if not text:
            return None
        match = _DATE.match(text.strip())
        try:
            if match is None:
                raise ValueError
            year, month, day = (int(g) if g else 1 for g in match.groups())
            start = datetime(year, month, day)
            mtime_ns = int(start.timestamp()) * 10**9
        except (ValueError, OverflowError, OSError):  # the platform's time_t may not reach it
            raise dialect.error(
                name,
                text,
                "not_a_date",
                " is not a date: give a day, a month or a year, e.g. 2023-07-14, 2023-07 or 2023",
            ) from None
        return DateBound(text=start.date().isoformat(), mtime_ns=mtime_ns)

    def to_params(self) -> Params:
        """The request as the HTTP API takes it: the fields it has a parameter for, each
        given a value (the words of the query joined by spaces, as the API splits them)."""
        params: Params = []
        for spec in request_fields(type(self)):
            name, value = spec.declared.http, getattr(self, spec.name)
            if name is None or value is None or value is False or value == ():
                continue
            if spec.declared.argument:
                params.append((name, " ".join(value)))
            elif spec.declared.repeat:
                params += [(name, str(item)) for item in value]
            else:
                params.append((name, "1" if value is True else str(value)))
        return params

    @classmethod
    def from_params(cls, params: Iterable[tuple[str, str]]) -> SearchRequest:
        """The request an HTTP query asks for (the last value of a parameter given twice,
        every value of a repeated one); a HanclipError names the parameter it cannot take."""
        given: dict[str, list[str]] = {}
        for name, value in params:
            given.setdefault(name, []).append(value)
        values: dict[str, Any] = {}
        for spec in request_fields(cls):
            if spec.declared.http is not None:
                values[spec.name] = _from_http(spec, given.get(spec.declared.http, []))
        return cls(**values)

    def said_by_params(self) -> bool:
        """Whether `to_params` says all of the search but the output wishes: read back by
        the API, it looks for the same terms with the same filters, order and page."""
        try:
            back = type(self).from_params(self.to_params())
            same_terms = back.terms == self.terms
        except HanclipError:
            return False
        outputs = {
            spec.name: getattr(self, spec.name)
            for spec in request_fields(type(self))
            if spec.declared.part is Part.OUTPUT
        }
        return same_terms and replace(back, query=self.query, **outputs) == self


def _value_type(hint: Any) -> type:
    """The type of one value: `str` for `tuple[str, ...]` and for `str | None`."""
    inner = [arg for arg in get_args(hint) if arg is not type(None) and arg is not Ellipsis]
    return _value_type(inner[0]) if inner else hint


def request_fields(cls: type = SearchRequest) -> tuple[RequestField, ...]:
    """The fields of `cls` (a SearchRequest) with their declarations, in order; a TypeError
    for a field declared nowhere, which no front end could then set."""
    return _request_fields(cls)


@cache
def _request_fields(cls: type) -> tuple[RequestField, ...]:
    hints = get_type_hints(cls)
    found = []
    for spec in fields(cls):
        declaration = spec.metadata.get("declared")
        if not isinstance(declaration, Declared):
            raise TypeError(
                f"{cls.__name__}.{spec.name} has no declaration: give it one with declared() "
                "(its flags, help and HTTP parameter), so the front ends can set it"
            )
        found.append(
            RequestField(spec.name, spec.default, _value_type(hints[spec.name]), declaration)
        )
    return tuple(found)


def _field(name: str) -> RequestField:
    return next(spec for spec in request_fields() if spec.name == name)


@dataclass(frozen=True)
class Dialect:
    """How a front end names the request's fields in its messages: the command line by
    their first flag (`--sort 'x'`), the HTTP API by their parameter (`sort='x'`)."""

    http: bool
    nothing_to_find: str  # no words, no photo: what to say

    def name(self, field_name: str) -> str:
        declaration = _field(field_name).declared
        return (declaration.http if self.http else declaration.flags[0]) or field_name

    def said(self, field_name: str, value: object) -> str:
        return f"{self.name(field_name)}{'=' if self.http else ' '}{value!r}"

    def error(self, field_name: str, value: object, reason: str, why: str) -> SearchInputError:
        """`value` of the field cannot be taken: `why` follows the field's name and value."""
        return SearchInputError(
            f"{self.said(field_name, value)}{why}", reason, _field(field_name).declared.http, value
        )


CLI = Dialect(http=False, nothing_to_find=NO_TERMS)
HTTP = Dialect(
    http=True, nothing_to_find="the search query is empty: give some words, e.g. q=바다 위 노을"
)

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _from_http(spec: RequestField, texts: list[str]) -> Any:
    """One field's value from its parameter's values (none: the API's default)."""
    name, declaration = spec.declared.http, spec.declared
    if declaration.argument:
        return tuple(texts[-1].split()) if texts else ()
    if declaration.repeat:
        return tuple(_http_value(spec, text) for text in texts if text)
    text = texts[-1] if texts else None
    if spec.value_type is bool:
        return _http_value(spec, (text or "").lower())
    if not text:
        return spec.default if declaration.http_default is None else declaration.http_default
    value = _http_value(spec, text)
    low, high = declaration.minimum, declaration.http_maximum
    if low is not None and high is not None and not low <= value <= high:
        raise SearchInputError(f"{name}={value}: give {low} to {high}", "out_of_range", name, value)
    return value


def _http_value(spec: RequestField, text: str) -> Any:
    name, kind = spec.declared.http, spec.value_type
    if kind is bool:
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise SearchInputError(f"{name}={text!r}: give 1 or 0", "not_a_switch", name, text)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SearchInputError(
                f"{name}={text!r} is not a whole number", "not_a_whole_number", name, text
            ) from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SearchInputError(f"{name}={text!r} is not a number", "not_a_number", name, text)
        return value
    if kind is Path:
        # The server's working folder means nothing to whoever asks it; no path holds NUL.
        if not (os.path.isabs(text) or text.startswith("~")) or "\x00" in text:
            raise SearchInputError(
                f"{name}={text!r}: give a folder's full path, e.g. /home/me/사진/2024",
                "not_a_full_path",
                name,
                text,
            )
        return Path(text)
    return text
