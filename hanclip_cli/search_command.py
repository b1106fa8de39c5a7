"""`hanclip search` as a plain function, and the fast way into it.

The Typer command in `app.py` calls `run_search`. So does `fast_search`, which the console
entry point tries first: Typer converts every parameter through pydantic, and importing Typer,
pydantic and rich's table renderer is a large part of a cold search. When the
arguments are plain (query words or photos, and the options below with valid values),
`parse_search_args` reads them with argparse and the search runs without any of that. Anything
else (--help, an unknown option, a bad value) returns None and goes through Typer, so help
texts and usage errors are Typer's, exactly as for every other command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hanclip_cli.common import (
    CONSOLE_NOTICES,
    console,
    err_console,
    fail,
    handle_errors,
    notice,
    print_json,
)

if TYPE_CHECKING:
    from hanclip_library.searcher import SearchResult


@dataclass(frozen=True)
class SearchArgs:
    """The parameters of `hanclip search`; the defaults are the command's defaults."""

    query: tuple[str, ...] | None = None  # the words: terms joined by + and - (`query`)
    image: tuple[Path, ...] | None = None
    limit: int = 10
    library: Path | None = None
    model: str | None = None
    device: str | None = None
    json_output: bool = False
    include_offline: bool = False
    add: tuple[str, ...] | None = None
    sub: tuple[str, ...] | None = None
    sub_image: tuple[Path, ...] | None = None
    after: str | None = None
    before: str | None = None
    folders: tuple[Path, ...] | None = None
    min_score: float | None = None
    min_prob: float | None = None  # a match probability, 0 < P < 1: calibrated models only
    sort: str = "score"
    paths: bool = False
    null: bool = False
    html: Path | None = None  # also write the hits as an HTML page here
    open_page: bool = False  # and open it in the default browser


# Every option of the Typer command, by destination (tests check the two stay the same).
SEARCH_OPTIONS: dict[str, tuple[str, ...]] = {
    "image": ("--image", "-i"),
    "limit": ("-n", "--limit"),
    "library": ("--library", "-l"),
    "model": ("--model", "-m"),
    "device": ("--device",),
    "json_output": ("--json",),
    "include_offline": ("--include-offline",),
    "add": ("--add",),
    "sub": ("--sub",),
    "sub_image": ("--sub-image",),
    "after": ("--after",),
    "before": ("--before",),
    "folders": ("--in",),
    "min_score": ("--min-score",),
    "min_prob": ("--min-prob",),
    "sort": ("--sort",),
    "paths": ("--paths",),
    "null": ("-0", "--null"),
    "html": ("--html",),
    "open_page": ("--open",),
}
# Repeatable options: every occurrence counts.
REPEATED = ("image", "add", "sub", "sub_image", "folders")
# The search command's --help examples (Typer's epilog).
SEARCH_EXAMPLES = (
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
    "  hanclip search 고양이 --min-score 0.25\n\n"
    "  hanclip search '누워있는 고양이' --min-prob 0.9   # likely matches (trained models)\n\n"
    "  hanclip search '생일 파티' --sort date   # newest first (date-asc: oldest first)\n\n"
    "  hanclip search 고양이 --paths | xargs open\n\n"
    "  hanclip search '바다 위 노을' -0 | xargs -0 cp -t ~/고른사진\n\n"
    "  hanclip search '바다 위 노을' --html 노을.html --open   # a page of thumbnails"
)


def query_words(args: SearchArgs) -> str:
    """The query as given: its words, then the options that add or subtract terms."""
    words = [*(args.query or ())]
    for option, values in (
        ("--image", args.image),
        ("--add", args.add),
        ("--sub", args.sub),
        ("--sub-image", args.sub_image),
    ):
        for value in values or ():
            words += [option, str(value)]
    return " ".join(words)


def filter_words(args: SearchArgs) -> list[str]:
    """The filters and order used, as options (`--after 2023-07`), for the HTML page."""
    words = [f"--after {args.after}"] if args.after else []
    if args.before:
        words.append(f"--before {args.before}")
    words += [f"--in {folder}" for folder in args.folders or ()]
    if args.min_score is not None:
        words.append(f"--min-score {args.min_score}")
    if args.min_prob is not None:
        words.append(f"--min-prob {args.min_prob}")
    if args.sort != "score":
        words.append(f"--sort {args.sort}")
    if args.include_offline:
        words.append("--include-offline")
    return words


@handle_errors
def run_search(args: SearchArgs) -> None:
    """Search the library and print the hits (a table, JSON with `json_output`, or one path a
    line with `paths`, NUL-separated with `null`); with `html`, also write them as an HTML
    page of thumbnails there (and open it with `open_page`)."""
    from hanclip_library.library import open_library
    from hanclip_library.query import parse_query
    from hanclip_library.searcher import (
        MAX_QUERY_CHARS,
        SearchFilters,
        check_min_prob,
        check_sort,
        normalise_query,
        search_library,
    )

    terms = parse_query(
        args.query or (),
        add=args.add or (),
        sub=args.sub or (),
        images=args.image or (),
        sub_images=args.sub_image or (),
    )
    if args.json_output and (args.paths or args.null):
        fail("choose one output: --json or --paths / -0")
    if args.open_page and args.html is None:
        fail("--open opens the page --html writes: give --html FILE too")
    check_sort(args.sort)
    if args.min_prob is not None:
        check_min_prob(args.min_prob)
    if args.html is not None:
        from hanclip_cli.gallery import check_target

        check_target(args.html)
    if any(t.text is not None and len(t.text.strip()) > MAX_QUERY_CHARS for t in terms):
        notice(f"the query is longer than {MAX_QUERY_CHARS} characters: searching its start")
    terms = tuple(t if t.text is None else replace(t, text=normalise_query(t.text)) for t in terms)
    filters = SearchFilters(
        after=args.after,
        before=args.before,
        folders=tuple(args.folders or ()),
        min_score=args.min_score,
        min_prob=args.min_prob,
    )
    served = _through_server(args, terms, filters)
    if served is not None:
        _print_hits(args, served)
        return
    opened = open_library(
        args.library, args.model, for_writing=False, device=args.device, notices=CONSOLE_NOTICES
    )
    with opened:
        result = search_library(
            opened,
            terms,
            limit=args.limit,
            include_offline=args.include_offline,
            filters=filters,
            sort=args.sort,
        )
        records = (
            opened.store.records_by_ids(h.photo_id for h in result.hits if h.photo_id is not None)
            if args.html is not None
            else {}
        )
    page = None
    if args.html is not None:
        # Written before anything is printed: a page that cannot be written is an error exit
        # with nothing on stdout, not a result list followed by one.
        from hanclip_cli.gallery import make_thumbnails, write_gallery

        page = write_gallery(
            args.html,
            query_words(args),
            result.hits,
            make_thumbnails(opened.directory, records),
            filters=filter_words(args),
            offline_left_out=result.offline_left_out,
        )
    _print_hits(args, result)
    _start_resident(opened)
    if page is not None:
        count = len(result.hits)
        err_console.print(
            f"gallery: {count} photo{'' if count == 1 else 's'} → {page}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if args.open_page:
            import webbrowser

            if not webbrowser.open(page.as_uri()):
                notice("no web browser could be started: open the page yourself")


def _through_server(args: SearchArgs, terms, filters) -> SearchResult | None:
    """The answer of a `hanclip serve` running on this library with the same model, when
    one is up and the search is one its API says exactly (`serve/discovery.py`); else None."""
    from hanclip_cli.serve.discovery import running_server
    from hanclip_library.library import library_dir

    directory = library_dir(args.library)
    server = running_server(directory)
    if server is None:
        return None
    from hanclip_cli.serve.discovery import ask_server
    from hanclip_cli.serve.service import MAX_PAGE
    from hanclip_library.query import parse_query

    words = " ".join(args.query or ())
    if (
        args.add
        or args.sub
        or args.image
        or args.sub_image
        or args.html is not None
        or args.device is not None
        or args.limit > MAX_PAGE
        or any(not folder.is_absolute() for folder in filters.folders)
        or parse_query(words.split()) != parse_query(args.query or ())
        or _model_fingerprint(args, directory) != server.fingerprint
    ):
        return None
    params: dict[str, object] = {"q": words, "n": args.limit, "sort": args.sort}
    optional = {
        "after": filters.after,
        "before": filters.before,
        "min_score": filters.min_score,
        "min_prob": filters.min_prob,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if filters.folders:
        params["in"] = [str(folder) for folder in filters.folders]
    if args.include_offline:
        params["include_offline"] = "1"
    answer = ask_server(server, params)
    if answer is None:
        return None
    from hanclip_library.searcher import SearchResult, hit_from_fields

    try:
        hits = [hit_from_fields(row) for row in answer["results"]]
        return SearchResult(hits, int(answer["offline_left_out"]))
    except (KeyError, TypeError, ValueError):
        return None


def _start_resident(opened) -> None:
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


def _model_fingerprint(args: SearchArgs, directory: Path) -> str | None:
    """The fingerprint of the model a search of its own would use here (no encoder loads)."""
    from hanclip_library.library import Library, choose_model
    from hanclip_library.store import DB_NAME
    from hanclip_model.bundle import resolve_bundle
    from hanclip_model.errors import HanclipError

    try:
        existing = Library(directory, create=False) if (directory / DB_NAME).exists() else None
        try:
            choice = choose_model(args.model, directory, existing)
        finally:
            if existing is not None:
                existing.close()
        return resolve_bundle(choice.model).fingerprint
    except (HanclipError, OSError):
        return None


def _print_hits(args: SearchArgs, result: SearchResult) -> None:
    hits = result.hits
    if args.paths or args.null:
        end = b"\0" if args.null else b"\n"
        sys.stdout.buffer.write(b"".join(os.fsencode(hit.path) + end for hit in hits))
        sys.stdout.buffer.flush()
        return
    if args.json_output:
        from hanclip_library.searcher import hit_fields

        print_json([hit_fields(h) for h in hits])
        return
    from rich.table import Table
    from rich.text import Text

    calibrated = any(hit.match_probability is not None for hit in hits)
    table = Table(box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score")
    if calibrated:
        table.add_column("match", justify="right")
    table.add_column("path", overflow="fold")  # a path cut short is useless: wrap it whole
    table.add_column("taken", no_wrap=True)
    for hit in hits:
        path = Text(hit.path)
        if hit.offline:
            path.append(" (offline)", style="dim")
        match = [percent(hit.match_probability)] if calibrated else []
        table.add_row(str(hit.rank), f"{hit.score:.3f}", *match, path, hit.taken_at or "")
    console.print(table)
    if not hits:
        left_out = result.offline_left_out
        offline = (
            f"; {left_out} photo(s) in offline folders were left out (--include-offline "
            "shows them; hanclip info lists the folders)"
            if left_out
            else ""
        )
        notice(f"no photo matched{offline}")


def percent(probability: float | None) -> str:
    """A match probability for the table: whole percent, never a rounded 0 % or 100 %."""
    if probability is None:
        return ""
    if probability < 0.005:
        return "<1%"
    if probability >= 0.995:
        return ">99%"
    return f"{probability:.0%}"


class _NotPlain(Exception):
    """The arguments need Typer: help, an unknown option, or a value it must judge."""


class _QuietParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise _NotPlain(message)


def _parser() -> argparse.ArgumentParser:
    parser = _QuietParser(prog="hanclip search", add_help=False, allow_abbrev=False)
    parser.add_argument("query", nargs="*")
    parser.add_argument(*SEARCH_OPTIONS["image"], dest="image", type=Path, action="append")
    parser.add_argument(*SEARCH_OPTIONS["limit"], dest="limit", type=int)
    parser.add_argument(*SEARCH_OPTIONS["library"], dest="library", type=Path)
    parser.add_argument(*SEARCH_OPTIONS["model"], dest="model")
    parser.add_argument(*SEARCH_OPTIONS["device"], dest="device")
    parser.add_argument(*SEARCH_OPTIONS["json_output"], dest="json_output", action="store_true")
    parser.add_argument(
        *SEARCH_OPTIONS["include_offline"], dest="include_offline", action="store_true"
    )
    for dest in ("add", "sub"):
        parser.add_argument(*SEARCH_OPTIONS[dest], dest=dest, action="append")
    for dest in ("sub_image", "folders"):
        parser.add_argument(*SEARCH_OPTIONS[dest], dest=dest, type=Path, action="append")
    parser.add_argument(*SEARCH_OPTIONS["after"], dest="after")
    parser.add_argument(*SEARCH_OPTIONS["before"], dest="before")
    parser.add_argument(*SEARCH_OPTIONS["min_score"], dest="min_score", type=float)
    parser.add_argument(*SEARCH_OPTIONS["min_prob"], dest="min_prob", type=float)
    parser.add_argument(*SEARCH_OPTIONS["sort"], dest="sort")
    parser.add_argument(*SEARCH_OPTIONS["paths"], dest="paths", action="store_true")
    parser.add_argument(*SEARCH_OPTIONS["null"], dest="null", action="store_true")
    parser.add_argument(*SEARCH_OPTIONS["html"], dest="html", type=Path)
    parser.add_argument(*SEARCH_OPTIONS["open_page"], dest="open_page", action="store_true")
    return parser


def parse_search_args(argv: Sequence[str]) -> SearchArgs | None:
    """`SearchArgs` from the words after `search`, or None when Typer should handle them."""
    if any(arg in ("-h", "--help") for arg in argv):
        return None
    try:
        parsed = _parser().parse_args(list(argv))
    except (_NotPlain, ValueError, TypeError):
        return None
    given = {key: value for key, value in vars(parsed).items() if value not in (None, [])}
    for key in ("query", *REPEATED):
        if key in given:
            given[key] = tuple(given[key])
    args = SearchArgs(**given)
    if args.limit < 1:
        return None  # Typer words the range error
    return args


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
