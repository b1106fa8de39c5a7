"""`hanclip search` without Typer: same options, same results, Typer for everything else."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from entrypoint import run_entry as _run_entry
from typer.main import get_command

from hanclip_cli.cli import app
from hanclip_cli.commands.search import (
    WHERE,
    SearchArgs,
    command_flags,
    parse_search_args,
)
from hanclip_cli.commands.search import search as typer_search
from hanclip_library.request import SearchRequest, request_fields


def _args(where: dict | None = None, **request) -> SearchArgs:
    return SearchArgs(SearchRequest(**request), **(where or {}))


def _typer_search_params() -> dict[str, object]:
    group = get_command(app)
    command = group.commands["search"]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def test_fast_parser_knows_exactly_the_typer_commands_options() -> None:
    params = _typer_search_params()
    options = {
        name: tuple(sorted([*param.opts, *param.secondary_opts]))
        for name, param in params.items()
        if param.param_type_name == "option"
    }
    assert options == {name: tuple(sorted(opts)) for name, opts in command_flags().items()}
    arguments = [name for name, param in params.items() if param.param_type_name == "argument"]
    assert arguments == ["query"]
    # Same parameters, same defaults, as the Typer function's signature (there a repeated
    # option not given is None; in the request, an empty tuple).
    signature = inspect.signature(typer_search).parameters
    expected = {
        f.name: None if f.declared.repeat or f.declared.argument else f.default
        for f in request_fields()
        if f.on_command_line
    }
    expected.update(dict.fromkeys(WHERE))
    assert {name: p.default for name, p in signature.items()} == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["바다 위 노을"], _args(query=("바다 위 노을",))),
        (
            ["고양이", "-n", "3", "--json", "--library", "L", "--model", "B"],
            _args(
                {"library": Path("L"), "model": "B"}, query=("고양이",), limit=3, json_output=True
            ),
        ),
        (
            ["--limit=7", "고양이", "-lL", "-mB"],
            _args({"library": Path("L"), "model": "B"}, query=("고양이",), limit=7),
        ),
        (
            ["--image", "a.jpg", "--device", "cpu"],
            _args({"device": "cpu"}, image=(Path("a.jpg"),)),
        ),
        (["-i", "a.jpg", "-n", "2"], _args(image=(Path("a.jpg"),), limit=2)),
        (["고양이", "--include-offline"], _args(query=("고양이",), include_offline=True)),
        (["--", "-바다"], _args(query=("-바다",))),
        ([], _args()),
        (
            ["바다", "+", "노을", "-", "2:사람"],
            _args(query=("바다", "+", "노을", "-", "2:사람")),
        ),
        (["바다", "노을"], _args(query=("바다", "노을"))),
        (
            ["바다", "--add", "노을", "--add", "하늘", "--sub", "사람", "-i", "a", "-i", "b"],
            _args(
                query=("바다",),
                image=(Path("a"), Path("b")),
                add=("노을", "하늘"),
                sub=("사람",),
            ),
        ),
        (
            ["--sub-image", "c.jpg", "--after", "2023-07", "--before", "2024", "--in", "A"],
            _args(sub_image=(Path("c.jpg"),), after="2023-07", before="2024", folders=(Path("A"),)),
        ),
        (
            ["고양이", "--min-score", "0.3", "--sort", "date", "--paths", "-0"],
            _args(query=("고양이",), min_score=0.3, sort="date", paths=True, null=True),
        ),
    ],
)
def test_plain_arguments_are_parsed_like_typer(argv, expected) -> None:
    assert parse_search_args(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["바다", "-h"],
        ["바다", "--bogus"],
        ["바다", "-n", "0"],
        ["바다", "-n", "-2"],
        ["바다", "-n", "many"],
        ["바다", "--lim", "3"],  # abbreviations are Typer's business (it refuses them)
        ["바다", "--min-score", "high"],
        ["바다", "--model"],
    ],
)
def test_anything_else_is_left_to_typer(argv) -> None:
    assert parse_search_args(argv) is None


def test_fast_and_typer_paths_give_the_same_results(
    tiny, photos, library, cli, monkeypatch, capsys
) -> None:
    common = ["--library", str(library), "--model", str(tiny.heads_bundle)]
    assert cli("index", photos, *common).exit_code == 0
    for argv in (
        ["바다 위 노을", "-n", "4", "--json", *common],
        ["--image", str(photos / "고양이.png"), "--json", *common],
        ["바다 위 노을", "-n", "3", *common],  # the rich table
    ):
        fast = _run_entry(monkeypatch, capsys, ["search", *argv], fast=True)
        slow = _run_entry(monkeypatch, capsys, ["search", *argv], fast=False)
        assert fast == slow
        assert fast[0] == 0 and fast[1]
    code, out, _ = _run_entry(monkeypatch, capsys, ["search", "바다", "--json", *common], True)
    assert code == 0 and len(json.loads(out)) == 8


def test_fast_path_errors_are_the_same_one_line(tiny, library, monkeypatch, capsys) -> None:
    cases = [
        ["search", "--library", str(library)],  # neither a query nor --image
        ["search", "   ", "--library", str(library)],  # empty query
        ["search", "바다", "--library", str(library)],  # no library there
        ["search", "바다", "-n", "0"],  # Typer's range error, through the fallback
    ]
    for argv in cases:
        fast = _run_entry(monkeypatch, capsys, argv, fast=True)
        slow = _run_entry(monkeypatch, capsys, argv, fast=False)
        assert fast == slow, argv
        code, out, err = fast
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not library.exists()  # a search never creates a library


def test_help_still_comes_from_typer(monkeypatch, capsys) -> None:
    code, out, _ = _run_entry(monkeypatch, capsys, ["search", "--help"], fast=True)
    assert code == 0
    assert "--image" in out and "바다 위 노을" in out
