"""The `hanclip` console script.

`hanclip search` goes straight to the search when its arguments are plain, without importing
Typer (see `search_command`); everything else, and any search whose arguments need Typer's
help or error messages, goes through the Typer app. HANCLIP_FAST_CLI=0 always uses Typer.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["search"] and os.environ.get("HANCLIP_FAST_CLI", "1") != "0":
        from hanclip_cli.search_command import fast_search

        code = fast_search(args[1:])
        if code is not None:
            sys.exit(code)
    from hanclip_cli.cli import main as typer_main

    typer_main()


if __name__ == "__main__":
    main()
