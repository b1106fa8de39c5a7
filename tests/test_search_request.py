"""One `SearchRequest`, declared once: the Typer command's options, the fast argparse parser
and the HTTP parameters are all generated from its fields' declarations."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from typer.main import get_command

from hanclip_cli import options
from hanclip_cli.cli import app
from hanclip_cli.commands import search as search_command
from hanclip_cli.commands.search import WHERE, command_flags, parse_search_args
from hanclip_library.request import (
    CLI,
    HTTP,
    SearchRequest,
    declared,
    request_fields,
)
from hanclip_library.request import Part as RequestPart
from hanclip_model.errors import HanclipError


def _typer_params() -> dict[str, object]:
    command = get_command(app).commands["search"]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def test_every_field_is_an_option_of_both_parsers_and_a_parameter_of_the_api() -> None:
    typer_params = _typer_params()
    fast = {
        action.dest: tuple(action.option_strings)
        for action in search_command._parser()._actions  # noqa: SLF001
    }
    sent = {name for name, _ in _every_field_given().to_params()}
    for spec in request_fields():
        declared_flags = spec.declared.flags
        if spec.declared.argument:
            assert typer_params[spec.name].param_type_name == "argument"  # type: ignore[attr-defined]
            assert fast[spec.name] == ()
        elif declared_flags:
            param = typer_params[spec.name]
            assert {*param.opts, *param.secondary_opts} == set(declared_flags)  # type: ignore[attr-defined]
            assert param.help == spec.declared.help  # type: ignore[attr-defined]
            assert fast[spec.name] == declared_flags
        else:  # only the HTTP API or the server's routes set it
            assert spec.name not in typer_params and spec.name not in fast
        if spec.declared.http is not None:
            assert spec.declared.http in sent, spec.name
    # Nothing else: the options of where the search runs, from hanclip_cli/options.py.
    request_names = {spec.name for spec in request_fields()}
    assert set(typer_params) - request_names == set(WHERE)
    assert set(fast) - request_names == set(WHERE)


def test_where_options_are_the_shared_declarations() -> None:
    """The fast parser's --library, --model and --device are options.py's own declarations,
    the same ones every Typer command takes (no copy)."""
    assert WHERE == {"library": options.LIBRARY, "model": options.MODEL, "device": options.DEVICE}
    for name, alias in {
        "library": options.LibraryOption,
        "model": options.ModelOption,
        "device": options.DeviceOption,
    }.items():
        info = alias.__metadata__[0]
        assert (info.default, *info.param_decls) == WHERE[name].flags
        assert info.help == WHERE[name].help


def test_help_lists_options_in_the_declared_order() -> None:
    assert list(_typer_params()) == ["query", *command_flags()]


def _every_field_given() -> SearchRequest:
    return SearchRequest(
        query=("바다", "+", "2:노을"),
        limit=7,
        offset=3,
        include_offline=True,
        after="2023-07",
        before="2024",
        folders=(Path("/사진/2024"), Path("~/폰")),
        min_score=0.25,
        min_prob=0.9,
        sort="date-asc",
        text_only=True,  # with no_text, a request `check` refuses: here only the form counts
        no_text=True,
    )


@pytest.mark.parametrize(
    "request_",
    [
        SearchRequest(query=("바다",)),
        SearchRequest(query=("고양이",), limit=200, sort="date"),
        _every_field_given(),
    ],
)
def test_params_round_trip(request_: SearchRequest) -> None:
    assert SearchRequest.from_params(request_.to_params()) == request_


def test_what_the_api_cannot_say_is_not_said_by_params() -> None:
    assert SearchRequest(query=("바다 위 노을",)).said_by_params()  # the same one term
    assert SearchRequest(query=("바다",), json_output=True).said_by_params()  # outputs aside
    for request in (
        SearchRequest(query=("a - b",)),  # one term here, a difference over HTTP
        SearchRequest(query=("바다",), add=("노을",)),
        SearchRequest(image=(Path("/a.jpg"),)),
        SearchRequest(query=("바다",), limit=500),
        SearchRequest(query=("바다",), folders=(Path("사진"),)),
    ):
        assert not request.said_by_params(), request


def test_a_field_declared_nowhere_is_refused() -> None:
    undeclared = dataclasses.make_dataclass(
        "Wider",
        [("near", str | None, dataclasses.field(default=None))],
        bases=(SearchRequest,),
        frozen=True,
    )
    with pytest.raises(TypeError, match=r"Wider\.near has no declaration"):
        request_fields(undeclared)


def test_a_declared_field_is_generated_everywhere() -> None:
    """Adding a filter is one declared field: both parsers and the API take it."""
    wider = dataclasses.make_dataclass(
        "Wider",
        [
            (
                "near",
                str | None,
                declared(
                    None,
                    part=RequestPart.FILTER,
                    help="Near a place.",
                    flags=("--near",),
                    http="near",
                ),
            )
        ],
        bases=(SearchRequest,),
        frozen=True,
    )
    names = {spec.name: spec for spec in request_fields(wider)}
    assert names["near"].declared.flags == ("--near",)
    assert names["near"].value_type is str
    request = wider.from_params([("q", "바다"), ("near", "부산")])
    assert request.near == "부산" and ("near", "부산") in request.to_params()


def test_the_typer_signature_is_generated() -> None:
    signature = inspect.signature(search_command.search)
    assert list(signature.parameters) == ["query", *command_flags()]
    assert parse_search_args(["바다", "--in", "/a", "-n", "3"]) == search_command.SearchArgs(
        SearchRequest(query=("바다",), folders=(Path("/a"),), limit=3)
    )


@pytest.mark.parametrize(
    ("request_", "cli", "http"),
    [
        (SearchRequest(), "give a query or --image PATH", "the search query is empty"),
        (SearchRequest(query=("a",), sort="x"), "--sort 'x': choose one of", "sort='x': choose"),
        (SearchRequest(query=("a",), min_prob=1.5), "--min-prob 1.5: give", "min_prob=1.5: give"),
        (SearchRequest(query=("a",), limit=0), "-n must be at least 1", "n must be at least 1"),
        (SearchRequest(query=("a",), after="2023-13"), "--after '2023-13' is not", "^after="),
    ],
)
def test_each_check_is_worded_for_its_front_end(request_, cli: str, http: str) -> None:
    with pytest.raises(HanclipError, match=cli):
        request_.check(CLI)
    with pytest.raises(HanclipError, match=http):
        request_.check(HTTP)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ([("q", "a"), ("n", "0")], "n=0: give 1 to 200"),
        ([("q", "a"), ("n", "abc")], "n='abc' is not a whole number"),
        ([("q", "a"), ("offset", "2000")], "offset=2000: give 0 to 1999"),
        ([("q", "a"), ("min_score", "nan")], "min_score='nan' is not a number"),
        ([("q", "a"), ("include_offline", "Maybe")], "include_offline='maybe': give 1 or 0"),
        ([("q", "a"), ("in", "rel")], "in='rel': give a folder's full path"),
    ],
)
def test_bad_parameters_are_named(params, words: str) -> None:
    with pytest.raises(HanclipError, match=words):
        SearchRequest.from_params(params)


def test_the_apis_defaults() -> None:
    request = SearchRequest.from_params([("q", " 바다  위 "), ("sort", ""), ("after", "")])
    assert request == SearchRequest(query=("바다", "위"), limit=30)
