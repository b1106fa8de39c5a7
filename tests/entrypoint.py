"""Running the installed `hanclip` console script's entry point in-process, on either path."""

from __future__ import annotations

import sys

import pytest

from hanclip_cli import entry


def run_entry(monkeypatch, capsys, argv: list[str], fast: bool) -> tuple[int, str, str]:
    """`hanclip ARGV` through `entry.main`, with (`fast`) or without the Typer-free search
    path; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hanclip", *argv])
    monkeypatch.setenv("HANCLIP_FAST_CLI", "1" if fast else "0")
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err
