"""The `hanclip` console script.

`hanclip search` goes straight to the search when its arguments are plain, without importing
Typer (see `commands/search.py`); everything else, and any search whose arguments need Typer's
help or error messages, goes through the Typer app. HANCLIP_FAST_CLI=0 always uses Typer.
"""

from __future__ import annotations

import os
import sys

# numpy's matrix products here are small (the heads on a query or a batch of photos): on
# several threads OpenBLAS gains no time and its threads spin after every call, ten times the
# CPU of one thread (0.23 -> 2.3 ms a head call), taken from the encoders and, in `serve`,
# from every other request. Set before numpy loads; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from hanclip_model import settings  # noqa: E402 - after the setting above


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["search"] and settings.FAST_CLI.enabled():
        from hanclip_cli.commands.search import fast_search

        code = fast_search(args[1:])
        if code is not None:
            sys.exit(code)
    from hanclip_cli.cli import main as typer_main

    typer_main()


if __name__ == "__main__":
    main()
