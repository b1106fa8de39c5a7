"""`hanclip models` and `hanclip models install`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    err_console,
    handle_errors,
    notice,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption

HELP = "The models this library can use: list them, install a trained bundle."
EPILOG = (
    "Examples:\n\n"
    "  hanclip models\n\n"
    "  hanclip models --json --library ~/사진/.hanclip\n\n"
    "  hanclip models install ./한국어-모델 --default   # then: hanclip search '바다 위 노을'"
)


@handle_errors
def models(
    ctx: typer.Context,
    library: LibraryOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the built-in and installed model bundles: image and text model, language, what
    it was trained on, whether it is calibrated, and which one `search` uses now."""
    if ctx.invoked_subcommand is not None:
        return
    from hanclip_library.installed import list_models
    from hanclip_library.library import library_dir

    entries = list_models(library_dir(library))
    if json_output:
        from hanclip_model.catalog import read_measured

        measured = read_measured()
        print_json([entry.as_json() | _worth_json(entry, measured) for entry in entries])
        return
    _print_models(entries)


def _print_models(entries) -> None:
    """Each model as three short lines rather than a table row: the encoders' names alone are
    as wide as a narrow terminal, and a table would fold them mid-name."""
    from hanclip_model.catalog import read_measured

    measured = read_measured()
    for entry in entries:
        mark = "*" if entry.in_use else " "
        name = Text(f"{mark} {entry.name}{' (default)' if entry.default else ''}", style="bold")
        if entry.error:
            console.print(name, Text(f"{entry.kind}  unreadable: {entry.error}"), sep="  ")
            continue
        calibrated = "yes" if entry.calibrated else "no"
        facts = f"{entry.kind}  language {entry.language or '—'}  calibrated {calibrated}"
        console.print(name, Text(facts), sep="  ")
        encoders = f"{_short_model(entry.image_model)} + {_short_model(entry.text_model)}"
        console.print(Text(f"    encoders    {encoders}"))
        console.print(Text(f"    trained on  {entry.trained_on}"))
        _print_worth(entry, measured)
    for entry in entries:
        if entry.in_use:
            where = f" ({entry.path})" if entry.path else ""
            console.print(Text(f"* in use: {entry.name}{where}"))
    for entry in entries:
        if entry.card:
            console.print(Text(f"card of {entry.name}: {entry.card}"))
    _print_sources(entries, measured)
    console.print(Text("full names and paths: hanclip models --json"), style="dim")


def _worth_json(entry, measured) -> dict[str, object]:
    """A built-in's published Korean figures (with their sources) and the costs measured by
    `benchmarks/model_costs.py`; both None for any other model."""
    from hanclip_model.catalog import published

    found = published(entry.name) if entry.kind == "built-in" else None
    cost = measured.costs.get(entry.name) if measured is not None and found else None
    return {
        "published": None
        if found is None
        else {"figures": [f.as_json() for f in found.figures], "note": found.note},
        "measured": None if cost is None else {**vars(cost), "machine": measured.machine},
    }


def _print_worth(entry, measured) -> None:
    """A built-in's two lines: what it is worth in Korean (published), what it costs here."""
    from hanclip_model.catalog import CROSSMODAL3600, XTD10, published

    found = published(entry.name) if entry.kind == "built-in" else None
    if found is None:
        return
    xm, xtd = found.figure(CROSSMODAL3600), found.figure(XTD10)
    figures = [f"XM3600 {xm.value:.1f}" if xm else "", f"XTD10 R@10 {xtd.value:.1f}" if xtd else ""]
    korean = "  ".join(f for f in figures if f) or "none published"
    console.print(Text(f"    Korean      {korean}"))
    cost = measured.costs.get(entry.name) if measured is not None else None
    if cost is not None:  # two lines: one would not fit 80 columns
        console.print(
            Text(
                f"    costs here  index {cost.index_photos_per_s:.1f} photos/s, query "
                f"{cost.query_ms:.0f} ms, cold search {cost.cold_search_s:.1f} s"
            )
        )
        console.print(
            Text(
                f"                peak {cost.search_peak_mib:,.0f} MiB searching, "
                f"{cost.index_peak_mib:,.0f} indexing; download {cost.download_mb:,.0f} MB"
            )
        )


def _print_sources(entries, measured) -> None:
    """What the Korean and cost lines mean, once, below the list, each line within 80
    columns (a source's address on a line of its own)."""
    from hanclip_model.catalog import CROSSMODAL3600, DATASET_LABELS, XTD10, published

    builtins = [published(e.name) for e in entries if e.kind == "built-in"]
    sources = sorted({f.source for entry in builtins if entry for f in entry.figures})
    if not sources:
        return
    short = {XTD10: "XTD10", CROSSMODAL3600: "XM3600"}
    console.print(Text("Korean: published figures, %"))
    for key, label in DATASET_LABELS.items():
        console.print(Text(f"  {short[key]}: {label}"))
    for source in sources:
        name, _, address = source.partition(" (")
        console.print(Text(f"  from {name}"))
        if address:
            console.print(Text(f"    {address.removesuffix(')')}"))
    if measured is not None:
        console.print(
            Text("costs here: benchmarks/model_costs.py, real-size models, random weights,")
        )
        console.print(Text(f"  on {measured.machine}"))


def _short_model(spec: str | None) -> str:
    """An encoder as a table has room for: a folder by its name, a hub id without the
    sentence-transformers organisation (`--json` has them whole)."""
    from hanclip_model.bundle import clip_text_source

    if not spec:
        return "—"
    if clip_text_source(spec) is not None:
        return "own text tower"
    if spec.startswith("local-dir:"):
        return Path(spec[len("local-dir:") :]).name + "/"
    if spec.startswith("/"):
        return Path(spec).name + "/"
    return spec.removeprefix("sentence-transformers/")


INSTALL_EPILOG = (
    "Examples:\n\n"
    "  hanclip models install ./한국어-모델\n\n"
    "  hanclip models install ~/학습결과/hanclip-ko --name 한국어 --default\n\n"
    "  hanclip models install ./새-모델 --name 한국어 --force --json   # replace it\n\n"
    "  hanclip models install hf-hub:my-org/hanclip-ko --default   # from the hub\n\n"
    "  hanclip models install hf-hub:my-org/hanclip-ko@v1 --name 한국어-v1"
)


@handle_errors
def models_install(
    source: Annotated[
        str,
        typer.Argument(
            metavar="DIR",
            help="The bundle folder (the one holding hanclip.json), or hf-hub:ORG/REPO[@REVISION] "
            "for a bundle repository on the Hugging Face hub (downloaded into its cache).",
        ),
    ],
    library: LibraryOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Folder name under the library's models/ (default: the bundle's own name).",
            show_default=False,
        ),
    ] = None,
    default: Annotated[
        bool,
        typer.Option(
            "--default",
            help="Make it the library's model: `search` and `index` use it from now on "
            "(when the library's photos were embedded by another image model, says the "
            "`index --reembed` command that moves them).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different bundle installed as NAME.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Copy a trained bundle into the library's models/ (checked first, moved in whole),
    from a folder or from the Hugging Face hub."""
    from hanclip_library.installed import install_bundle
    from hanclip_library.library import library_dir
    from hanclip_model.hub import is_hub_spec

    if is_hub_spec(source):
        result = _install_from_hub(library_dir(library), source, name, default, force)
    else:
        result = install_bundle(library_dir(library), source, name, default, force=force)
    for note in result.notes:
        notice(note)
    if json_output:
        print_json(result.as_json())
        return
    if result.already_installed:
        line = f"{result.name} is installed already: {result.path}"
    else:
        replaced = " (replacing the bundle that was there)" if result.replaced else ""
        line = f"installed {result.name} into {result.path}{replaced}"
    console.print(Text(line))
    if result.default:
        console.print(Text(f"{result.name} is the library's default model"))
    if result.in_use:
        console.print(Text(f"`hanclip search` now uses {result.name}"))


def _install_from_hub(library: Path, source: str, name: str | None, default: bool, force: bool):
    """`install_from_hub` with the download drawn as a rich bar (bytes) on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from hanclip_cli.commands.index import RichProgress
    from hanclip_library.hub_bundles import install_from_hub

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    try:
        return install_from_hub(
            library, source, name, default, force=force, progress=RichProgress(progress)
        )
    finally:
        progress.stop()


PUBLISH_EPILOG = (
    "Examples:\n\n"
    "  hanclip models publish 한국어 --repo my-org/hanclip-ko\n\n"
    "  hanclip models publish ~/학습결과/hanclip-ko --repo my-org/hanclip-ko --private\n\n"
    "  HF_TOKEN=hf_... hanclip models publish ./한국어-모델 --repo my-org/ko --json\n\n"
    "  hanclip models install hf-hub:my-org/hanclip-ko --default   # then, anywhere"
)


@handle_errors
def models_publish(
    bundle: Annotated[
        str,
        typer.Argument(
            metavar="BUNDLE",
            help="A bundle installed in the library (its name) or a bundle folder.",
        ),
    ],
    repo: Annotated[
        str,
        typer.Option(
            "--repo",
            metavar="ORG/REPO",
            help="The model repository on the Hugging Face hub (created when missing).",
            show_default=False,
        ),
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repository private.")
    ] = False,
    library: LibraryOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload a bundle to the Hugging Face hub: its files (the ONNX encoders too, when
    exported), its hanclip.json and its model card as the repository's README. The token
    comes from HF_TOKEN or from `hf auth login`."""
    from hanclip_library.hub_bundles import publish_bundle
    from hanclip_library.library import library_dir
    from trainer.card import render_card

    result = publish_bundle(
        library_dir(library), bundle, repo, render_card=render_card, private=private
    )
    if json_output:
        print_json(result.as_json())
        return
    encoders = f", ONNX encoders: {' + '.join(result.encoders)}" if result.encoders else ""
    files = f"{len(result.files)} files{encoders}"
    console.print(Text(f"published {result.bundle} to {result.url} ({files})"))
    console.print(Text(f"commit {result.commit}; install it with: {result.install}"))
