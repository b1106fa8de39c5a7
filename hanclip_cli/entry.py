"""The `hanclip` console script.

`hanclip search` goes straight to the search when its arguments are plain, without importing
Typer (see `commands/search.py`); everything else, and any search whose arguments need Typer's
help or error messages, goes through the Typer app. HANCLIP_FAST_CLI=0 always uses Typer.
"""

from __future__ import annotations

import os
import sys

from hanclip_model import settings

# Commands whose matrix products are large and may go through the same OpenBLAS as numpy's
# (torch's, on Linux for ARM): they keep its threads.
TRAINING_COMMANDS = frozenset({"train", "bench"})


def one_blas_thread(args: list[str]) -> None:
    """numpy's OpenBLAS on one thread, unless the command trains or the user said otherwise.

    numpy's matrix products here are small (the heads on a query or a batch of photos): on
    several threads OpenBLAS gains no time and its threads spin after every call, ten times
    the CPU of one thread (0.23 -> 2.3 ms a head call), taken from the encoders and, in
    `serve`, from every other request. Takes effect only before numpy loads (`main` calls it
    first; nothing imported before it loads numpy)."""
    if args[:1] and args[0] in TRAINING_COMMANDS:
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> None:
    args = sys.argv[1:]
    one_blas_thread(args)
    if args[:1] == ["search"] and settings.FAST_CLI.enabled():
        from hanclip_cli.commands.search import fast_search

        code = fast_search(args[1:])
        if code is not None:
            sys.exit(code)
    from hanclip_cli.cli import main as typer_main

    typer_main()


if __name__ == "__main__":
    main()
