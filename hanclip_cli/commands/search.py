"""`hanclip search`: read the words into a `SearchRequest`, search, render the hits.

The command's options are generated from the declarations of `SearchRequest`
(`hanclip_library/request.py`), twice: as the Typer command (`search`, made when `cli.py`
first asks for it) and as the argparse parser of `fast_search`. The console entry point tries
`fast_search` first: Typer converts every parameter through pydantic, and importing Typer,
pydantic and rich's table renderer is a large part of a cold search. When the arguments are
plain (query words or photos, and options with valid values) argparse reads them and the
search runs without any of that. Anything else (--help, an unknown option, a bad value)
returns None and goes through Typer, so help texts and usage errors are Typer's, exactly as
for every other command. So this module imports no Typer until the Typer command is made.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from hanclip_cli.common import (
    CONSOLE_NOTICES,
    err_console,
    handle_errors,
    notice,
    print_json,
    print_table,
)
from hanclip_cli.options import DEVICE, LIBRARY, MODEL
from hanclip_library.request import CLI, Part, RequestField, SearchRequest, request_fields
from hanclip_model.errors import HanclipError

if TYPE_CHECKING:
    from rich.text import Text

    from hanclip_cli.serve.discovery import RunningServer
    from hanclip_library.library import ModelChoice, OpenLibrary
    from hanclip_library.photo_text import TextMatch
    from hanclip_library.searcher import SearchResult

EPILOG = (
    "Examples:\n\n"
    "  hanclip search '바다 위 노을'\n\n"
    "  hanclip search '누워있는 고양이' -n 20 --json\n\n"
    "  hanclip search --image ~/Pictures/IMG_0001.jpg\n\n"
    "  hanclip search '가족 여행' --include-offline   # photos on an unplugged drive too\n\n"
    "  hanclip search 바다 + 노을 - 사람   # add and subtract ideas\n\n"
    "  hanclip search 2:강아지 + 0.5:눈   # a weight before a term\n\n"
    "  hanclip search 바다 --add 노을 --sub 사람\n\n"
    "  hanclip search 눈 --image ~/Pictures/산.jpg --sub-image ~/Pictures/사람.jpg\n\n"
    "  hanclip search '가족 여행' --after 2023-07 --before 2023-09\n\n"
    "  hanclip search 고양이 --in ~/Pictures/2024 --in ~/Pictures/폰\n\n"
    "  hanclip search 스타벅스 영수증   # photos holding these words first\n\n"
    "  hanclip search 카톡 --text-only   # screenshots by their words alone\n\n"
    "  hanclip search 고양이 --min-score 0.25\n\n"
    "  hanclip search '누워있는 고양이' --min-prob 0.9   # likely matches (trained models)\n\n"
    "  hanclip search '생일 파티' --sort date   # newest first (date-asc: oldest first)\n\n"
    "  hanclip search 고양이 --paths | xargs open\n\n"
    "  hanclip search '바다 위 노을' -0 | xargs -0 cp -t ~/고른사진\n\n"
    "  hanclip search '바다 위 노을' --html 노을.html --open   # a page of thumbnails"
)


@dataclass(frozen=True)
class SearchArgs:
    """What `hanclip search` was given: the request, and where to run it."""

    request: SearchRequest = field(default_factory=SearchRequest)
    library: Path | None = None
    model: str | None = None
    device: str | None = None


# Where a search runs, not what it asks: the options several commands share.
WHERE = {"library": LIBRARY, "model": MODEL, "device": DEVICE}
WHERE_AFTER = "limit"  # --help has always listed them after -n


def command_flags() -> dict[str, tuple[str, ...]]:
    """Every option of the command by its parameter's name, in --help order."""
    flags: dict[str, tuple[str, ...]] = {}
    for spec in request_fields():
        if spec.declared.flags:
            flags[spec.name] = spec.declared.flags
        if spec.name == WHERE_AFTER:
            flags.update({name: option.flags for name, option in WHERE.items()})
    return flags


# -- the Typer command ------------------------------------------------------------------


def typer_command() -> Callable[..., None]:
    """`search` for Typer: `run_search` behind a signature generated from the request's
    declarations, with --library, --model and --device from hanclip_cli/options.py."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = []
    for spec in request_fields():
        if spec.on_command_line:
            default = None if spec.declared.repeat or spec.declared.argument else spec.default
            parameters.append(
                inspect.Parameter(spec.name, keyword, default=default, annotation=_typer_type(spec))
            )
        if spec.name == WHERE_AFTER:
            parameters += [
                inspect.Parameter(name, keyword, default=None, annotation=option.typer())
                for name, option in WHERE.items()
            ]

    def search(**given: Any) -> None:
        """Search the library with words (e.g. '바다 위 노을'), photos (--image), or both.

        A photo's date is its EXIF date taken, else its file's modification time. A model that
        `hanclip train` calibrated also gives each match a match probability (the `match`
        column; `match_probability` in --json).
        """
        where_given = {name: given.pop(name) for name in WHERE}
        request = SearchRequest(
            **{
                name: tuple(value) if isinstance(value, list | tuple) else value
                for name, value in given.items()
                if value is not None
            }
        )
        run_search(SearchArgs(request, **where_given))

    search.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return search


def _typer_type(spec: RequestField) -> Any:
    """The parameter's `Annotated[type, typer.Option(...)]`, as Typer reads a signature."""
    import typer

    declared, kind = spec.declared, spec.value_type
    if declared.argument:
        return Annotated[list[kind] | None, typer.Argument(help=declared.help)]
    option = typer.Option(*declared.flags, help=declared.help, min=declared.minimum)
    if declared.repeat:
        return Annotated[list[kind] | None, option]
    if spec.default is None:
        return Annotated[kind | None, option]
    return Annotated[kind, option]


def __getattr__(name: str) -> Any:
    # `search`, the Typer command, is made on first use: `fast_search` imports this module
    # and must not import Typer.
    if name == "search":
        command = typer_command()
        globals()["search"] = command
        return command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the fast parser --------------------------------------------------------------------


class _NotPlain(Exception):
    """The arguments need Typer: help, an unknown option, or a value it must judge."""


class _QuietParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise _NotPlain(message)


def _parser() -> argparse.ArgumentParser:
    parser = _QuietParser(prog="hanclip search", add_help=False, allow_abbrev=False)
    for spec in request_fields():
        declared = spec.declared
        if declared.argument:
            parser.add_argument(spec.name, nargs="*")
        elif declared.flags and spec.value_type is bool:
            parser.add_argument(*declared.flags, dest=spec.name, action="store_true")
        elif declared.flags:
            action = "append" if declared.repeat else "store"
            parser.add_argument(
                *declared.flags, dest=spec.name, type=spec.value_type, action=action
            )
    for name, option in WHERE.items():
        parser.add_argument(*option.flags, dest=name, type=option.value_type)
    return parser


def parse_search_args(argv: Sequence[str]) -> SearchArgs | None:
    """`SearchArgs` from the words after `search`, or None when Typer should handle them."""
    if any(arg in ("-h", "--help") for arg in argv):
        return None
    try:
        parsed = vars(_parser().parse_args(list(argv)))
    except (_NotPlain, ValueError, TypeError):
        return None
    where = {name: parsed.pop(name) for name in WHERE}
    for name, option in WHERE.items():
        if option.check is not None:
            try:
                option.check(where[name])
            except HanclipError:
                return None  # Typer words the error, as for a value out of range
    request = SearchRequest(
        **{
            name: tuple(value) if isinstance(value, list) else value
            for name, value in parsed.items()
            if value is not None
        }
    )
    for spec in request_fields():
        low = spec.declared.minimum
        if spec.on_command_line and low is not None and getattr(request, spec.name) < low:
            return None  # Typer words the range error
    return SearchArgs(request, **where)


def fast_search(argv: Sequence[str]) -> int | None:
    """Run `hanclip search` without Typer; None when the arguments need Typer."""
    args = parse_search_args(argv)
    if args is None:
        return None
    try:
        run_search(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


# -- the search -------------------------------------------------------------------------


@handle_errors
def run_search(args: SearchArgs) -> None:
    """Search the library and print the hits (a table, JSON with `json_output`, or one path a
    line with `paths`, NUL-separated with `null`); with `html`, also write them as an HTML
    page of thumbnails there (and open it with `open_page`)."""
    from hanclip_library.library import library_dir, open_library
    from hanclip_library.query import MAX_QUERY_CHARS

    request = args.request
    cut_short = request.query_cut_short  # parses the query: its mistakes are said first
    request.check(CLI)
    if request.html is not None:
        from hanclip_cli.gallery import check_target

        check_target(request.html)
    if cut_short:
        notice(f"the query is longer than {MAX_QUERY_CHARS} characters: searching its start")
    terms = request.terms
    directory = library_dir(args.library)
    choice = None
    server = _server_for(args, directory)
    if server is not None:
        choice = _model_choice(args.model, directory)
        served = _ask(server, request) if _fingerprint(choice) == server.fingerprint else None
        if served is not None:
            _print_hits(request, served)
            _say_gone(served)
            return
    if choice is not None and choice.notice:
        notice(choice.notice)
    opened = open_library(
        args.library,
        args.model if choice is None else choice.model,
        for_writing=False,
        device=args.device,
        notices=CONSOLE_NOTICES,
    )
    from hanclip_library import searcher

    with opened:
        result = searcher.search_library(opened, request, terms=terms)
    page = None
    if request.html is not None:
        # Written before anything is printed: a page that cannot be written is an error exit
        # with nothing on stdout, not a result list followed by one.
        from hanclip_cli.gallery import make_thumbnails, write_gallery

        page = write_gallery(
            request.html,
            query_words(request),
            result.hits,
            make_thumbnails(opened.directory, result.hits),
            filters=filter_words(request),
            offline_left_out=result.offline_left_out,
        )
    _print_hits(request, result)
    _say_gone(result)
    _start_resident(opened)
    if page is not None:
        count = len(result.hits)
        err_console.print(
            f"gallery: {count} photo{'' if count == 1 else 's'} → {page}",
            markup=False,
            highlight=False,
        )
        if request.open_page:
            import webbrowser

            if not webbrowser.open(page.as_uri()):
                notice("no web browser could be started: open the page yourself")


def _say_gone(result: SearchResult) -> None:
    """Photos left out because their file is gone: the library is behind the disk."""
    gone = result.gone_left_out
    if gone:
        photos = "1 photo" if gone == 1 else f"{gone} photos"
        notice(
            f"{photos} among the best matches {'is' if gone == 1 else 'are'} gone since the last "
            "index (deleted, moved, or on a drive not connected now) and left out: "
            "hanclip index brings the library up to date"
        )


def query_words(request: SearchRequest) -> str:
    """The query as given, for the HTML page: its words, then the options that add or
    subtract terms."""
    words = list(request.query)
    for spec in request_fields():
        if spec.declared.part is Part.TERMS and spec.declared.flags:
            for value in getattr(request, spec.name):
                words += [spec.declared.flags[0], str(value)]
    return " ".join(words)


def filter_words(request: SearchRequest) -> list[str]:
    """The filters and order used, as options (`--after 2023-07`), for the HTML page: those
    that take a value, then the switches."""
    valued: list[str] = []
    switches: list[str] = []
    for spec in request_fields():
        value, flag = getattr(request, spec.name), spec.declared.flags[:1]
        if spec.declared.part not in (Part.FILTER, Part.ORDER) or not flag:
            continue
        if value is None or value is False or value == "" or value == spec.default:
            continue
        if value is True:
            switches.append(flag[0])
        else:
            valued += [f"{flag[0]} {item}" for item in (value if spec.declared.repeat else [value])]
    return valued + switches


# -- a server already running -----------------------------------------------------------


def _server_for(args: SearchArgs, directory: Path) -> RunningServer | None:
    """A `hanclip serve` running on this library that can answer this search exactly
    (`serve/discovery.py`): one its API says whole, no --html (the page needs each photo's
    row), no --device."""
    from hanclip_cli.serve.discovery import running_server

    server = running_server(directory)
    if server is None or args.request.html is not None or args.device is not None:
        return None
    return server if args.request.said_by_params() else None


def _model_choice(model: str | None, directory: Path) -> ModelChoice | None:
    """The model a search of its own would use here (the search then opens that one)."""
    from hanclip_library.library import Library, choose_model
    from hanclip_library.store import DB_NAME
    from hanclip_model.errors import HanclipError

    try:
        existing = Library(directory, create=False) if (directory / DB_NAME).exists() else None
        try:
            return choose_model(model, directory, existing)
        finally:
            if existing is not None:
                existing.close()
    except (HanclipError, OSError):
        return None


def _fingerprint(choice: ModelChoice | None) -> str | None:
    """The fingerprint of the chosen model (no encoder loads)."""
    from hanclip_model.bundle import resolve_bundle
    from hanclip_model.errors import HanclipError

    if choice is None:
        return None
    try:
        return resolve_bundle(choice.model).fingerprint
    except (HanclipError, OSError):
        return None


def _ask(server: RunningServer, request: SearchRequest) -> SearchResult | None:
    """The server's answer to the request; None when it gives none that can be read."""
    from hanclip_cli.serve.discovery import ask_server
    from hanclip_library.searcher import SearchResult, hit_from_fields

    answer = ask_server(server, request.to_params())
    if answer is None:
        return None
    try:
        hits = [hit_from_fields(row) for row in answer["results"]]
        return SearchResult(hits, int(answer["offline_left_out"]))
    except (KeyError, TypeError, ValueError):
        return None


def _start_resident(opened: OpenLibrary) -> None:
    """After the hits are out: a background server for the searches that follow, on a large
    library (`serve/discovery.py`); the photo count comes from the index's pointer file."""
    from hanclip_cli.serve.discovery import start_resident_server
    from hanclip_library.vector_index import read_pointer

    pointer = read_pointer(opened.directory) or {}
    try:
        photos = int(pointer.get("count", 0)) - len(pointer.get("deleted", []))
    except (TypeError, ValueError):
        return
    start_resident_server(opened.directory, opened.model_name, photos)


# -- the hits ---------------------------------------------------------------------------


def _print_hits(request: SearchRequest, result: SearchResult) -> None:
    hits = result.hits
    if request.paths or request.null:
        end = b"\0" if request.null else b"\n"
        sys.stdout.buffer.write(b"".join(os.fsencode(hit.path) + end for hit in hits))
        sys.stdout.buffer.flush()
        return
    if request.json_output:
        from hanclip_library.searcher import hit_fields

        print_json([hit_fields(h) for h in hits])
        return
    if not hits:
        left_out = result.offline_left_out
        offline = (
            f"; {left_out} photo(s) in offline folders were left out (--include-offline "
            "shows them; hanclip info lists the folders)"
            if left_out
            else ""
        )
        notice(f"no photo matched{offline}")
        return
    from rich.text import Text

    calibrated = any(hit.match_probability is not None for hit in hits)
    by_text = any(hit.text_match is not None for hit in hits)
    rows = []
    for hit in hits:
        path = Text(hit.path)
        if hit.offline:
            path.append(" (offline)", style="dim")
        match = [percent(hit.match_probability)] if calibrated else []
        text = [snippet_text(hit.text_match)] if by_text else []
        rows.append([str(hit.rank), f"{hit.score:.3f}", *match, path, hit.taken_at or "", *text])
    headers = ["#", "score", *(["match"] if calibrated else []), "path", "taken"]
    print_table([*headers, *(["text"] if by_text else [])], rows, right=("#", "match"))


SNIPPET_COLUMN = 32  # characters of a hit's text the table shows


def snippet_text(match: TextMatch | None) -> Text:
    """The text column of a hit found by its text: its words in bold, with what stands
    around the first of them; empty for a hit found by its look."""
    from rich.text import Text

    if match is None:
        return Text("")
    start = max(0, min((s for s, _ in match.spans), default=0) - SNIPPET_COLUMN // 4)
    shown = match.snippet[start : start + SNIPPET_COLUMN]
    text = Text(("…" if start else "") + shown)
    offset = 1 if start else 0
    for begin, end in match.spans:
        if begin >= start and end <= start + SNIPPET_COLUMN:
            text.stylize("bold", begin - start + offset, end - start + offset)
    return text


def percent(probability: float | None) -> str:
    """A match probability for the table: whole percent, never a rounded 0 % or 100 %."""
    if probability is None:
        return ""
    if probability < 0.005:
        return "<1%"
    if probability >= 0.995:
        return ">99%"
    return f"{probability:.0%}"
