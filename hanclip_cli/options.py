"""The options several commands share, declared once.

Each is a `SharedOption` (flags, type, help, environment variable), read both by the Typer
commands, which take it as `LibraryOption`, `ModelOption`, `DeviceOption`, `JsonOption`,
`IncludeHiddenOption` or `ExcludeOption` (Typer `Annotated` types, built on first use so that
importing this module imports no Typer), and by `search`'s fast parser, which never imports
Typer.

An option whose default an environment variable gives names it (`envvar`), so `--help` shows
it; the variable itself is declared in `hanclip_model.settings`. `--device` does not: `search`
asks a running `serve` only when no device was given on its command line, which a value from
`HANCLIP_DEVICE` would look like (the device rule reads the variable itself, `pick_device`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hanclip_model import settings
from hanclip_model.device import requested_device
from hanclip_model.errors import HanclipError


@dataclass(frozen=True)
class SharedOption:
    """One option as every parser of it needs it."""

    flags: tuple[str, ...]
    value_type: type  # of its value: Path, str or bool (a flag)
    help: str
    envvar: str | None = None
    # Checks the value (None: not given) while the command line is parsed, returning it;
    # a `HanclipError` says why not.
    check: Callable[[Any], Any] | None = None
    repeatable: bool = False  # given any number of times: a list of values (None: none)

    def typer(self) -> Any:
        """The option as a Typer parameter type: `Annotated[T | None, typer.Option(...)]`
        (`bool` for a flag, off by default)."""
        from typing import Annotated

        import typer

        if self.value_type is bool:
            return Annotated[bool, typer.Option(*self.flags, help=self.help)]
        shown = {"envvar": self.envvar, "show_envvar": True} if self.envvar else {}
        option = typer.Option(
            *self.flags, help=self.help, show_default=False, callback=self._callback(), **shown
        )
        value = list[self.value_type] if self.repeatable else self.value_type
        return Annotated[value | None, option]  # type: ignore[operator]

    def _callback(self) -> Callable[[Any], Any] | None:
        """`check` as Typer calls it while parsing, so a bad value stops the command before
        it starts, as a usage error (one line)."""
        check = self.check
        if check is None:
            return None

        def callback(value: Any) -> Any:
            import typer

            try:
                return check(value)
            except HanclipError as exc:
                raise typer.BadParameter(str(exc)) from None

        return callback


LIBRARY = SharedOption(
    ("--library", "-l"),
    Path,
    "Library directory (default: the user data directory).",
    envvar=settings.HOME.name,
)
MODEL = SharedOption(
    ("--model", "-m"),
    str,
    "Model bundle directory or built-in name (xlmr-b32, mclip, ...: `hanclip models`). "
    "Default: the library's model, else a bundle in the library's models/, else the default "
    "built-in (`hanclip models` marks it).",
    envvar=settings.MODEL.name,
)


def _checked_device(value: str | None) -> str | None:
    """`--device` as given, once it (or, not given, `HANCLIP_DEVICE`) names a device."""
    requested_device(value)
    return value


DEVICE = SharedOption(
    ("--device",),
    str,
    "cpu, cuda, cuda:1 ... (default: CUDA when present).",
    check=_checked_device,
)
JSON = SharedOption(("--json",), bool, "Print JSON for scripts.")
# What `index` walks, and `watch` with it.
INCLUDE_HIDDEN = SharedOption(("--include-hidden",), bool, "Also index hidden folders and files.")
EXCLUDE = SharedOption(
    ("--exclude",),
    str,
    "Skip folders and files with this name or glob (repeatable; remembered for later runs). "
    "NAS and trash folders (@eaDir, #recycle, .Trash-*, ...) always are.",
    repeatable=True,
)

_TYPER_NAMES = {
    "LibraryOption": LIBRARY,
    "ModelOption": MODEL,
    "DeviceOption": DEVICE,
    "JsonOption": JSON,
    "IncludeHiddenOption": INCLUDE_HIDDEN,
    "ExcludeOption": EXCLUDE,
}


@cache
def __getattr__(name: str) -> Any:
    if name in _TYPER_NAMES:
        return _TYPER_NAMES[name].typer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
