"""`hanclip repair`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from hanclip_cli.common import (
    console,
    handle_errors,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption

if TYPE_CHECKING:
    from hanclip_library.repair import SettingsSalvage

EPILOG = "Examples:\n\n  hanclip repair\n\n  hanclip repair --library ~/사진/.hanclip --json"


@handle_errors
def repair(library: LibraryOption = None, json_output: JsonOption = False) -> None:
    """Save what can still be read of a damaged library.db into a fresh one.

    The damaged file is kept beside it (library.db.damaged-<UTC time>); photos whose rows were
    lost are embedded again by the next `hanclip index`. A healthy library is left as it is.
    """
    from hanclip_library.repair import repair_library

    report = repair_library(library)
    if json_output:
        print_json(report.as_json())
        return
    if not report.repaired:
        console.print(Text(f"{report.library}: library.db is healthy, nothing to repair"))
        return
    lost = (
        f"{report.photos_lost} lost" if report.photos_lost is not None else "an unknown number lost"
    )
    console.print(
        Text(
            f"{report.library}: library.db was damaged ({report.problem}); "
            f"{report.photos_saved} photo(s) saved into a fresh one, {lost} (the next "
            f"`hanclip index` embeds those again); the damaged file is kept as "
            f"{report.damaged_file}"
        ),
    )
    settings = report.settings
    if settings.lost:
        console.print(Text(_settings_text(settings)))


def _settings_text(settings: SettingsSalvage) -> str:
    """What became of the settings, and what to do about the ones still lost."""
    words = f"settings lost: {', '.join(settings.lost)}"
    if settings.recovered:
        made = "; ".join(f"{name} from {how}" for name, how in settings.recovered.items())
        words += f"; recovered: {made}"
    still = settings.still_lost
    if "model" in still:
        words += (
            "; the library has no model now: pass --model NAME to search and index, or make "
            "one its default with `hanclip models install BUNDLE --default`"
        )
    if "excludes" in still:
        words += "; pass --exclude again to the next `hanclip index` if you used it"
    return words
