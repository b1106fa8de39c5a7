"""`hanclip index`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    CONSOLE_NOTICES,
    console,
    err_console,
    fail,
    handle_errors,
    make_progress,
    notice,
    offline_text,
    print_json,
    resumable,
)
from hanclip_cli.options import (
    DeviceOption,
    ExcludeOption,
    IncludeHiddenOption,
    JsonOption,
    LibraryOption,
    ModelOption,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from hanclip_library.library import OpenLibrary
    from hanclip_library.text_engines import TextEngine
    from hanclip_library.text_pass import TextReader

EPILOG = (
    "Examples:\n\n"
    "  hanclip index ~/Pictures\n\n"
    "  hanclip index ~/Pictures/여행 ~/Pictures/가족 --json\n\n"
    "  hanclip index ~/Pictures --model ./my-bundle\n\n"
    "  hanclip index /media/usb/사진 --exclude 임시 --exclude '*.tmp.jpg'\n\n"
    "  hanclip index /media/usb/사진 --prune-offline   # the drive is gone for good\n\n"
    "  hanclip index ~/Pictures --no-ocr   # no text recognition this time\n\n"
    "  hanclip index ~/Pictures --ocr-lang kor+eng+jpn --reocr   # read every photo again"
)


@handle_errors
@resumable("the photos indexed so far are kept")
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (or single photos) to index.")],
    library: LibraryOption = None,
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per model batch.")] = 32,
    reembed: Annotated[
        bool, typer.Option("--reembed", help="Embed every photo again (new image model).")
    ] = False,
    include_hidden: IncludeHiddenOption = False,
    exclude: ExcludeOption = None,
    reset_excludes: Annotated[
        bool,
        typer.Option("--reset-excludes", help="Forget the remembered --exclude patterns."),
    ] = False,
    prune_offline: Annotated[
        bool,
        typer.Option(
            "--prune-offline",
            help="Remove the photos of folders that are missing, empty or unreadable "
            "(kept by default: a drive may be unplugged). Your files are never touched.",
        ),
    ] = False,
    ocr: Annotated[
        bool | None,
        typer.Option(
            "--ocr/--no-ocr",
            help="Read the text in photos (screenshots, receipts, signs) after embedding them, "
            "so search finds them by their words. Default: on when a text engine is installed "
            "(pip install 'hanclip[ocr]').",
            show_default=False,
        ),
    ] = None,
    ocr_engine: Annotated[
        str | None,
        typer.Option("--ocr-engine", help="Text engine: tesseract+detect (default) or tesseract."),
    ] = None,
    ocr_lang: Annotated[
        str | None,
        typer.Option(
            "--ocr-lang",
            help="Languages to read, as the engine names them (kor+eng, vie). Default: those of "
            "the model's language (Korean: kor+eng).",
        ),
    ] = None,
    reocr: Annotated[
        bool,
        typer.Option("--reocr", help="Read the text of every photo again with this engine."),
    ] = False,
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Index photos: embed new or changed files, prune deleted ones, recognise moves, then read
    the text in the photos not read yet.

    Runs again in seconds: unchanged photos are skipped, renamed or moved ones are found by
    their content hash, so nothing is embedded or read twice. The photos of a folder that is
    missing, empty or unreadable (an unplugged drive) are kept, left out of search until it is
    back.
    """
    import os

    from hanclip_library.indexer import IndexOptions, index_library
    from hanclip_library.library import open_library

    # Before torch loads: the model's idle OpenMP threads sleep instead of spinning, leaving
    # the cores to the decoding threads. The user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if reocr and ocr is False:
        fail("--reocr reads the text again: it cannot go with --no-ocr")
    roots = _photo_roots([Path(os.path.abspath(os.path.expanduser(p))) for p in paths], library)
    opened = open_library(library, model, for_writing=True, device=device, notices=CONSOLE_NOTICES)
    # Started by the first stage: a run that stops at its checks draws nothing, not even the
    # empty line of a bar never shown.
    progress = make_progress()
    with opened, opened.library.writer_lock():
        reader = None if ocr is False else _text_reader(opened, ocr_engine, ocr_lang, ocr)
        options = IndexOptions(
            batch_size=batch_size,
            reembed=reembed,
            include_hidden=include_hidden,
            exclude=tuple(exclude or ()),
            reset_excludes=reset_excludes,
            prune_offline=prune_offline,
            reocr=reocr,
        )
        try:
            report = index_library(opened, roots, options, RichProgress(progress), reader)
        finally:
            progress.stop()
    if json_output:
        print_json({**report.as_json(), "library": str(opened.directory)})
    else:
        counts = ", ".join(f"{v} {k}" for k, v in report.counts().items())
        console.print(f"{opened.directory}: {counts}", highlight=False)
        if report.text is not None:
            text = report.text
            console.print(
                f"text: {text.read} photo(s) read ({text.with_text} with text, {text.no_text} "
                f"without, {text.failed} failed)",
                highlight=False,
            )
            for path, reason in text.failures[:20]:
                err_console.print(Text(f"  could not read the text of {path}: {reason}"))
        for failure in report.failures[:20]:
            err_console.print(Text(f"  could not read {failure.path}: {failure.error}"))
    for folder in report.offline_folders:
        fate = (
            "removed from the library (--prune-offline)"
            if prune_offline
            else "kept, left out of search until it is back"
        )
        what = offline_text(folder.path, folder.reason)
        line = f"offline: {what}: its {folder.photos} photo(s) {fate}"
        err_console.print(Text(line, style="yellow"))
    if opened.model.fast_image_error:
        reason = opened.model.fast_image_error
        notice(f"note: photos went through torch, not ONNX Runtime: {reason}")
    if report.offline:
        notice("if a folder is gone for good: hanclip forget PATH")
    if report.failed:
        more = f" ({len(report.failures) - 20} not listed)" if len(report.failures) > 20 else ""
        notice(
            f"warning: {report.failed} file(s) could not be indexed{more}; "
            "see hanclip info --errors"
        )
        if report.failed == report.scanned:
            raise typer.Exit(1)  # nothing at all could be read: a script should notice


def _text_reader(
    opened: OpenLibrary, name: str | None, languages: str | None, asked: bool | None
) -> TextReader | None:
    """What the text pass reads with. An engine that cannot run here is said in one line and
    the pass left out, unless it was asked for (--ocr: then it is an error)."""
    from hanclip_library import text_pass
    from hanclip_library.text_engines import EngineUnavailable

    def unavailable(exc: EngineUnavailable) -> None:
        if asked:
            fail(str(exc))
        notice(f"text in photos not read: {exc}")

    def open_engine() -> TextEngine | None:
        try:
            return text_pass.open_text_engine(*choice)
        except EngineUnavailable as exc:
            unavailable(exc)
            return None

    try:
        choice = text_pass.engine_choice(name, languages, opened.model.spec.extra.get("language"))
    except EngineUnavailable as exc:
        unavailable(exc)
        return None
    return text_pass.TextReader(*choice, open_engine)


def _photo_roots(roots: list[Path], library: Path | None) -> list[Path]:
    """The folders and photos among `roots`, checked before the library is opened, so that a
    command that cannot start creates nothing: a file that is not a photo is said and left
    out (none left is a usage error); a missing one into a library not yet made is a typo
    (into an existing library the indexer decides: it may be an offline folder)."""
    from hanclip_library.indexer import check_roots
    from hanclip_library.library import library_dir
    from hanclip_library.store import DB_NAME
    from hanclip_model.images import PHOTO_EXTENSIONS

    if not (library_dir(library) / DB_NAME).exists():
        check_roots(roots, None)
    not_photos = [r for r in roots if r.is_file() and r.suffix.lower() not in PHOTO_EXTENSIONS]
    for path in not_photos:
        notice(f"{path} is not a photo: left out")
    if len(not_photos) == len(roots):
        fail("nothing to index: give folders or photos")
    return [root for root in roots if root not in not_photos]


class RichProgress:
    """The indexer's stages as one rich task whose description and bar follow them."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        # Hidden, and the bar not started, until the first stage.
        self._task: TaskID = progress.add_task("", total=None, start=False, visible=False)

    def stage(self, description: str, total: int | None = None) -> None:
        self._progress.start()
        self._progress.start_task(self._task)
        self._progress.update(
            self._task, description=description, total=total, completed=0, visible=True
        )

    def advance(self, steps: int = 1) -> None:
        self._progress.update(self._task, advance=steps)
