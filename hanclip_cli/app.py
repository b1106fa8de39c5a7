"""The `hanclip` command line: thin commands that parse, call one function, and render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    err_console,
    handle_errors,
    make_progress,
    notice,
    print_json,
)
from hanclip_cli.search_command import SEARCH_EXAMPLES

app = typer.Typer(
    name="hanclip",
    help="Search your own photos in Korean, on your own machine.\n\n"
    "Example: hanclip index ~/Photos, then hanclip search '바다 위 노을'",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

LibraryOption = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-l",
        help="Library directory (default: env HANCLIP_HOME, else the user data directory).",
        show_default=False,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model bundle directory or built-in name (mclip). Default: env HANCLIP_MODEL, "
        "else the library's model, else a bundle in the library's models/, else mclip.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)."),
]


@app.command(
    epilog="Examples:\n\n"
    "  hanclip index ~/Pictures\n\n"
    "  hanclip index ~/Pictures/여행 ~/Pictures/가족 --json\n\n"
    "  hanclip index ~/Pictures --model ./my-bundle\n\n"
    "  hanclip index /media/usb/사진 --exclude 임시 --exclude '*.tmp.jpg'\n\n"
    "  hanclip index /media/usb/사진 --prune-offline   # the drive is gone for good"
)
@handle_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (or single photos) to index.")],
    library: LibraryOption = None,
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per model batch.")] = 32,
    reembed: Annotated[
        bool, typer.Option("--reembed", help="Embed every photo again (new image model).")
    ] = False,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also walk hidden folders and files.")
    ] = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            help="Skip folders and files with this name or glob (repeatable; remembered for "
            "later runs). NAS and trash folders (@eaDir, #recycle, .Trash-*, ...) always are.",
            show_default=False,
        ),
    ] = None,
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
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Index photos: embed new or changed files, prune deleted ones, recognise moves.

    Runs again in seconds: unchanged photos are skipped, renamed or moved ones are found by
    their content hash, so nothing is embedded twice. The photos of a folder that is missing,
    empty or unreadable (an unplugged drive) are kept, left out of search until it is back.
    """
    import os

    from hanclip_cli.indexer import IndexOptions, RichProgress, index_library
    from hanclip_cli.library import open_library

    # Before torch loads: the model's idle OpenMP threads sleep instead of spinning, leaving
    # the cores to the decoding threads. The user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    opened = open_library(library, model, for_writing=True, device=device)
    roots = [Path(os.path.abspath(os.path.expanduser(p))) for p in paths]
    with opened, opened.library.writer_lock(), make_progress() as progress:
        options = IndexOptions(
            batch_size=batch_size,
            reembed=reembed,
            include_hidden=include_hidden,
            exclude=tuple(exclude or ()),
            reset_excludes=reset_excludes,
            prune_offline=prune_offline,
        )
        report = index_library(opened, roots, options, RichProgress(progress))
    if json_output:
        failures = [{"path": p, "error": e} for p, e in report.failures]
        offline = [
            {"path": f.path, "reason": f.reason, "photos": f.photos} for f in report.offline_folders
        ]
        print_json(
            {
                **report.counts(),
                "failures": failures,
                "offline_folders": offline,
                "library": str(opened.directory),
            }
        )
    else:
        counts = ", ".join(f"{v} {k}" for k, v in report.counts().items())
        console.print(f"{opened.directory}: {counts}", highlight=False, soft_wrap=True)
        for path, error in report.failures[:20]:
            err_console.print(Text(f"  could not read {path}: {error}"))
    for folder in report.offline_folders:
        fate = (
            "removed from the library (--prune-offline)"
            if prune_offline
            else "kept, left out of search until it is back"
        )
        what = _offline_text(folder.path, folder.reason)
        line = f"offline: {what}: its {folder.photos} photo(s) {fate}"
        err_console.print(Text(line, style="yellow"), soft_wrap=True)
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


@app.command(epilog=SEARCH_EXAMPLES)
def search(
    query: Annotated[
        list[str] | None,
        typer.Argument(
            help="What to look for, in Korean or any language; join ideas with + and - "
            "(바다 + 노을 - 사람), weigh one with W: (2:강아지)."
        ),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", "-i", help="Find photos similar to this photo (repeatable)."),
    ] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many results.")] = 10,
    library: LibraryOption = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
    include_offline: Annotated[
        bool,
        typer.Option(
            "--include-offline",
            help="Also show photos of folders that are offline (an unplugged drive).",
        ),
    ] = False,
    add: Annotated[
        list[str] | None, typer.Option("--add", help="Add this text to the query (repeatable).")
    ] = None,
    sub: Annotated[
        list[str] | None,
        typer.Option("--sub", help="Subtract this text from the query (repeatable)."),
    ] = None,
    sub_image: Annotated[
        list[Path] | None,
        typer.Option("--sub-image", help="Subtract this photo from the query (repeatable)."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            help="Photos dated on or after this day, month or year (2023-07-14, 2023-07, 2023)."
        ),
    ] = None,
    before: Annotated[
        str | None, typer.Option(help="Photos dated before this day, month or year.")
    ] = None,
    folders: Annotated[
        list[Path] | None,
        typer.Option("--in", help="Only photos in this folder or below it (repeatable)."),
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Leave out matches scoring below this.")
    ] = None,
    min_prob: Annotated[
        float | None,
        typer.Option(
            "--min-prob",
            help="Leave out matches whose match probability is below this (0 to 1; models "
            "that `hanclip train` calibrated).",
        ),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(help="Order of the results: score, date (newest first) or date-asc."),
    ] = "score",
    paths: Annotated[
        bool, typer.Option("--paths", help="Print only the paths, one a line (for xargs).")
    ] = False,
    null: Annotated[
        bool, typer.Option("-0", "--null", help="Print only the paths, each ended by NUL.")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the results as one self-contained HTML page of thumbnails here.",
        ),
    ] = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the --html page in the default browser.")
    ] = False,
) -> None:
    """Search the library with words (e.g. '바다 위 노을'), photos (--image), or both.

    A photo's date is its EXIF date taken, else its file's modification time. A model that
    `hanclip train` calibrated also gives each match a match probability (the `match`
    column; `match_probability` in --json).
    """
    given = dict(locals())  # the parameters, named as SearchArgs names them
    from hanclip_cli.search_command import SearchArgs, run_search

    repeated = {k: tuple(v) or None for k, v in given.items() if isinstance(v, list | tuple)}
    run_search(SearchArgs(**{**given, **repeated}))


@app.command(
    epilog="Examples:\n\n"
    "  hanclip train --english en.txt --target ko.txt --images ~/unlabeled --out ./hanclip-ko\n\n"
    "  hanclip train --english en.txt --target ko.txt --images-from-library --out ./my-ko"
    "   # your own photos as the image bank\n\n"
    "  hanclip train --list-recipes\n\n"
    "  hanclip train --recipe coyo-mscoco-ko --images-from-library --out ./hanclip-ko\n\n"
    "  hanclip train --english en.txt --target vi.txt --language vi --images ~/사진 --out ./vi\n\n"
    "  hanclip train --english-clip-emb eI.npy --english-text-emb eK.npy --korean-emb k.npy "
    "--image-emb v.npy --out ./hanclip-ko --epochs 10\n\n"
    "  hanclip index ~/Pictures --model ./hanclip-ko && hanclip search '바다 위 노을'"
)
@handle_errors
def train(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Bundle directory to write.")
    ] = None,
    english: Annotated[
        Path | None, typer.Option(help="English captions (.txt line each, .jsonl, .csv).")
    ] = None,
    target: Annotated[
        Path | None,
        typer.Option(
            "--target",
            "--korean",
            help="Target-language captions: Korean, or any language (--language).",
        ),
    ] = None,
    language: Annotated[
        str | None,
        typer.Option(help="Language code of the target captions, recorded in the bundle (ko)."),
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of unlabeled photos.")] = None,
    images_from_library: Annotated[
        bool,
        typer.Option(
            "--images-from-library",
            help="Use the photos of the library (--library) as the image bank: their stored "
            "embeddings, no photo is opened.",
        ),
    ] = False,
    library: LibraryOption = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="Fetch the caption corpora of this recipe (see --list-recipes)."),
    ] = None,
    list_recipes: Annotated[
        bool, typer.Option("--list-recipes", help="Show the recipes: sources, licences, sizes.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Read the recipe's files from this folder instead of the hub."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use at most N captions of each corpus.")
    ] = None,
    base_model: Annotated[
        str, typer.Option(help="Bundle or built-in name whose frozen encoders to use.")
    ] = "hanclip-base",
    english_clip_emb: Annotated[
        Path | None, typer.Option(help="Precomputed e^I: English captions, CLIP text [N, D].")
    ] = None,
    english_text_emb: Annotated[
        Path | None, typer.Option(help="Precomputed e^K: the same captions, text encoder.")
    ] = None,
    korean_emb: Annotated[
        Path | None, typer.Option(help="Precomputed target-language (Korean) bank.")
    ] = None,
    image_emb: Annotated[Path | None, typer.Option(help="Precomputed image bank.")] = None,
    image_model: Annotated[
        str, typer.Option(help="Image model recorded in the bundle (embeddings mode).")
    ] = "ViT-B-32:openai",
    text_model: Annotated[
        str, typer.Option(help="Text model recorded in the bundle (embeddings mode).")
    ] = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    name: Annotated[str | None, typer.Option(help="Bundle name (default: folder name).")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 36,
    batch_size: Annotated[int, typer.Option(min=2)] = 2048,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    tau_retrieval: Annotated[float, typer.Option(min=1e-6, help="τ1, soft retrieval.")] = 0.01,
    tau_inter: Annotated[float, typer.Option(min=1e-6, help="τ2, caption InfoNCE.")] = 0.01,
    tau_image_text: Annotated[
        float, typer.Option(min=1e-6, help="τ3, pseudo-pair InfoNCE.")
    ] = 0.01,
    noise_std: Annotated[float, typer.Option(min=0.0, help="σ, embedding noise.")] = 0.025,
    intra_weight: Annotated[float, typer.Option(min=0.0, help="λ, intra loss weight.")] = 0.1,
    seed: int = 0,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where encoded banks are cached (default: user cache).")
    ] = None,
    device: DeviceOption = None,
    export: Annotated[
        bool,
        typer.Option(
            "--export",
            help="Also write the ONNX encoders into the bundle (as hanclip export does), so "
            "it indexes and searches without torch wherever it is copied.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Train the HanCLIP projection heads and write a model bundle.

    Give corpora (--english and --target files, or --recipe NAME; photos with --images DIR or
    --images-from-library) or precomputed embeddings (--english-clip-emb, --english-text-emb,
    --korean-emb, --image-emb). No target-language–image pairs are needed. Ctrl-C stops
    after saving; running the same command again resumes.
    """
    given = dict(locals())  # the parameters, named as TrainArgs names them
    from hanclip_cli.train_command import TrainArgs, run_train

    run_train(TrainArgs(**given), _train_bar)


_OFFLINE_REASONS = {
    "missing": "is missing",
    "empty": "is empty (a drive not mounted?)",
    "unreadable": "cannot be read",
}


def _offline_text(path: str, reason: str) -> str:
    return f"{path} {_OFFLINE_REASONS.get(reason, reason)}"


def _train_bar(progress):
    """A callback that draws pseudo-pair and training progress on `progress`."""
    tasks: dict[str, object] = {}

    def update(event) -> None:
        if event.stage not in tasks:
            tasks[event.stage] = progress.add_task(event.stage.replace("_", " "), total=None)
        task = tasks[event.stage]
        if event.stage == "training":
            total = event.steps * event.epochs
            done = (event.epoch - 1) * event.steps + event.step
            description = f"training, epoch {event.epoch}/{event.epochs}, loss {event.loss:.4f}"
            progress.update(task, total=total, completed=done, description=description)
        else:
            progress.update(task, total=event.steps, completed=event.step)

    return update


@app.command(
    epilog="Examples:\n\n"
    "  hanclip bench --dataset xtd10-ko --data-dir ~/data/xtd10 --model ./hanclip-ko\n\n"
    "  hanclip bench --dataset cifar10 --data-dir ~/data --template '{}의 사진' --markdown\n\n"
    "  hanclip bench --dataset latency --random-weights"
)
@handle_errors
def bench(
    dataset: Annotated[
        str,
        typer.Option(
            help="mscoco-ko, xtd10-ko, crossmodal3600, kocc3m, jsonl (retrieval); cifar10, "
            "cifar100, stl10, caltech101 (zero-shot); latency (speed)."
        ),
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset's files.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model to compare (repeatable): a bundle, mclip, clip-translate, koclip. "
            "Default: your HanCLIP bundle (if any), mclip, clip-translate, koclip.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="mscoco-ko: karpathy-test or val.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use the first N images.")] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(help="Zero-shot prompt, e.g. '{}의 사진' (repeatable; averaged)."),
    ] = None,
    random_weights: Annotated[
        bool,
        typer.Option(
            "--random-weights", help="latency: real architectures, random weights (offline)."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    library: LibraryOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """Recall@K, zero-shot accuracy / macro-F1 and latency, every model in one run."""
    from hanclip_cli.bench_view import render_bench, run_bench

    result = run_bench(
        dataset=dataset,
        data_dir=data_dir,
        models=model or [],
        split=split,
        limit=limit,
        templates=template or [],
        random_weights=random_weights,
        batch_size=batch_size,
        library=library,
        device=device,
    )
    render_bench(result, json_output=json_output, markdown=markdown)


@app.command(
    epilog="Examples:\n\n"
    "  hanclip info\n\n"
    "  hanclip info --errors   # which photos could not be read, and why\n\n"
    "  hanclip info --json --library ~/사진/.hanclip"
)
@handle_errors
def info(
    library: LibraryOption = None,
    errors: Annotated[bool, typer.Option("--errors", help="List files that failed.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Where the library is, what it holds, and whether its database and search index are
    healthy.

    A damaged database is reported (`database  damaged: ...`, with the command that repairs
    it) and still exits 0: finding it is what `info` is for. `search` and `index` stop on it.
    """
    from hanclip_cli.library import library_summary

    summary = library_summary(library, with_errors=errors)
    if json_output:
        print_json(summary)
        return
    console.print(Text(f"library      {summary['library']}"))
    console.print(Text(_database_text(summary)), soft_wrap=True)  # a command to copy whole
    if "photos" not in summary:
        return  # not even that could be read: the database line says why
    health = summary["index"]
    hint = " (--errors lists them)" if summary["failed"] and not errors else ""
    lines = [
        f"photos       {summary['photos']}",
        f"failed       {summary['failed']}{hint}",
        f"model        {summary['model']}",
        f"image model  {summary['image_model']}",
        f"folders      {', '.join(summary['roots']) or '-'}",
        *(
            f"offline      {_offline_text(f['path'], f['reason'])}: {f['photos']} photo(s) kept, "
            f"since {f['since']}"
            for f in summary["offline_folders"]
        ),
        *([f"excludes     {', '.join(summary['excludes'])}"] if summary["excludes"] else []),
        f"index        {health['status']}: {health['vectors']} vectors"
        + (f", model fingerprint {health['fingerprint']}" if health["fingerprint"] else ""),
    ]
    for line in lines:
        console.print(Text(line))
    for failure in summary.get("errors", []):
        console.print(Text(f"  {failure['path']}: {failure['error']}"))


def _database_text(summary: dict) -> str:
    from hanclip_cli.store import repair_command

    database = summary["database"]
    if database["status"] == "ok":
        return "database     ok"
    return (
        f"database     damaged: {database['detail']} "
        f"(`{repair_command(summary['library'])}` saves what can still be read)"
    )


@app.command(
    epilog="Examples:\n\n  hanclip repair\n\n  hanclip repair --library ~/사진/.hanclip --json"
)
@handle_errors
def repair(library: LibraryOption = None, json_output: JsonOption = False) -> None:
    """Save what can still be read of a damaged library.db into a fresh one.

    The damaged file is kept beside it (library.db.damaged-<UTC time>); photos whose rows were
    lost are embedded again by the next `hanclip index`. A healthy library is left as it is.
    """
    from hanclip_cli.repair import repair_library

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
        soft_wrap=True,
    )


@app.command(
    epilog="Examples:\n\n"
    "  hanclip forget /media/usb/사진   # a drive that is gone for good\n\n"
    "  hanclip forget ~/Pictures/옛날사진 --json"
)
@handle_errors
def forget(
    path: Annotated[Path, typer.Argument(help="Folder (or photo) to forget; need not exist.")],
    library: LibraryOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove the photos at or below PATH from the library, without scanning it.

    For a folder or drive that is gone for good (its photos were kept as offline). Only the
    library changes: your files are never touched.
    """
    from hanclip_cli.forget import forget_folder

    report = forget_folder(library, path)
    if json_output:
        print_json(
            {
                "path": report.path,
                "removed": report.photos,
                "offline_folders_cleared": report.offline_folders,
                "failures_cleared": report.failures,
                "roots_dropped": list(report.roots),
                "library": report.library,
            }
        )
        return
    console.print(
        Text(f"{report.path}: {report.photos} photo(s) removed from the library {report.library}"),
        soft_wrap=True,
    )


@app.command(
    epilog="Examples:\n\n"
    "  hanclip duplicates\n\n"
    "  hanclip duplicates --in ~/사진/2023_제주 --threshold 0.97\n\n"
    "  hanclip duplicates --json > 중복.json"
)
@handle_errors
def duplicates(
    library: LibraryOption = None,
    model: ModelOption = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            "-t",
            help="Lowest cosine of two photos' image embeddings to count as copies (0-1); "
            "lower finds more, e.g. burst shots. Default: 0.99, measured by "
            "benchmarks/duplicates_threshold.py.",
            show_default=False,
        ),
    ] = None,
    folders: Annotated[
        list[Path] | None,
        typer.Option(
            "--in", metavar="FOLDER", help="Only photos at or below this folder (repeatable)."
        ),
    ] = None,
    include_offline: Annotated[
        bool,
        typer.Option(
            "--include-offline",
            help="Also compare photos of folders that are offline (an unplugged drive).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """List groups of near-identical photos (burst shots, re-saved or resized copies), from
    the stored embeddings: no photo is read again, and nothing is deleted."""
    from hanclip_cli.duplicates import DEFAULT_THRESHOLD, find_duplicates
    from hanclip_cli.library import open_library

    with open_library(library, model, for_writing=False) as opened:
        groups = find_duplicates(
            opened,
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
            folders=folders or (),
            include_offline=include_offline,
        )
    if json_output:
        print_json([group.as_json() for group in groups])
        return
    if not groups:
        console.print(Text("no near-identical photos found"))
        return
    for number, group in enumerate(groups, start=1):
        console.print(
            Text(
                f"group {number}: {len(group.photos)} photos, similarity {group.similarity:.4f}",
                style="bold",
            )
        )
        for photo in group.photos:
            pixels = f"{photo.width}x{photo.height}" if photo.width and photo.height else "-"
            line = f"  {photo.path}  {_megabytes(photo.size)}  {pixels}  {photo.taken_at or '-'}"
            console.print(Text(line), soft_wrap=True)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"


@app.command(
    epilog="Examples:\n\n"
    "  hanclip export ./한국어-모델   # then copy the folder: index and search need no torch\n\n"
    "  hanclip export mclip --out ~/모델/mclip-onnx\n\n"
    "  hanclip export ./한국어-모델 --quantize-images --json   # int8 photos, if accurate"
)
@handle_errors
def export(
    bundle: Annotated[str, typer.Argument(help="Bundle directory, or a built-in name with --out.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="For a built-in model: the folder of the new bundle."),
    ] = None,
    quantize_images: Annotated[
        bool,
        typer.Option(
            "--quantize-images",
            help="Also write an int8 image encoder and use it (kept only at cosine >= 0.99 "
            "to fp32; a library moves to it with index --reembed).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Export again, replacing.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Write the ONNX image and text encoders into a bundle (needs torch, once).

    The bundle then indexes and searches on any machine without torch: `pip install hanclip`
    is enough there. Each encoder is verified against open_clip / sentence-transformers first.
    """
    from dataclasses import asdict

    from hanclip_cli.export_command import export_bundle

    with err_console.status("exporting the encoders (verified against torch)"):
        report = export_bundle(bundle, out, quantize_images=quantize_images, force=force)
    if json_output:
        print_json(asdict(report))
        return
    if report.already:
        line = f"{report.bundle}: carries its ONNX encoders already (--force exports again)"
        console.print(line, highlight=False, soft_wrap=True)
        return
    size = report.encoders_bytes / 1e6
    line = f"{report.bundle}: ONNX encoders written ({size:.0f} MB, {report.seconds:.1f} s)"
    if report.image_min_cosine is not None:
        line += f"; image encoder within cosine {report.image_min_cosine:.5f} of open_clip"
    if report.image_int8_cosine is not None:
        line += f"; int8 within {report.image_int8_cosine:.4f} of fp32"
    console.print(line, highlight=False, soft_wrap=True)


@app.command(
    epilog="Examples:\n\n"
    "  hanclip serve   # then open http://127.0.0.1:8765/?q=바다+위+노을\n\n"
    "  hanclip serve --library ~/사진/.hanclip --port 9000 --open\n\n"
    "  hanclip serve --host 0.0.0.0 --allow-host nas.local   # other machines too (a warning)"
)
@handle_errors
def serve(
    library: LibraryOption = None,
    model: ModelOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but 127.0.0.1 / localhost makes your photos "
            "visible to the network."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer requests for this host name (repeatable), e.g. a name other "
            "machines use for this one. Others are refused (DNS-rebinding guard).",
            show_default=False,
        ),
    ] = None,
    thumbnail_cache_mb: Annotated[
        int,
        typer.Option(
            min=1, help="Most space the thumbnails kept in the library folder may take (MB)."
        ),
    ] = 512,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
    device: DeviceOption = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(
            "--idle-exit",
            min=1,
            help="Stop after this many seconds without a request (default: run until Ctrl-C).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Look at your photos in a browser: search, thumbnails, similar photos.

    A local web app on http://127.0.0.1:8765/ (only this machine can reach it unless --host
    says otherwise). It only reads the library: an `index` may run meanwhile, and new photos
    show once it commits. Thumbnails are made once and kept in the library folder.
    """
    from hanclip_cli.serve.server import ServeOptions
    from hanclip_cli.serve.server import serve as run_server

    options = ServeOptions(
        library=library,
        model=model,
        host=host,
        port=port,
        device=device,
        allow_hosts=tuple(allow_host or ()),
        thumbnail_cache_mb=thumbnail_cache_mb,
        open_browser=open_browser,
        idle_exit=idle_exit,
    )
    run_server(
        options,
        announce=lambda line: console.print(Text(line), soft_wrap=True),
        warn=lambda line: err_console.print(Text(line, style="yellow"), soft_wrap=True),
    )


models_app = typer.Typer(
    name="models",
    help="The models this library can use: list them, install a trained bundle.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(models_app, name="models")


@models_app.callback(
    invoke_without_command=True,
    epilog="Examples:\n\n"
    "  hanclip models\n\n"
    "  hanclip models --json --library ~/사진/.hanclip\n\n"
    "  hanclip models install ./한국어-모델 --default   # then: hanclip search '바다 위 노을'",
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
    from hanclip_cli.library import library_dir
    from hanclip_cli.models import list_models

    entries = list_models(library_dir(library))
    if json_output:
        print_json([entry.as_json() for entry in entries])
        return
    _print_models(entries)


def _print_models(entries) -> None:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("encoders (image, text)", overflow="fold")
    table.add_column("language", no_wrap=True)
    table.add_column("trained on", overflow="fold")
    table.add_column("calibrated", no_wrap=True)
    for entry in entries:
        mark = "*" if entry.in_use else ""
        name = Text(entry.name + (" (default)" if entry.default else ""))
        if entry.error:
            table.add_row(mark, name, entry.kind, Text(f"unreadable: {entry.error}"))
            continue
        encoders = f"{_short_model(entry.image_model)}\n{_short_model(entry.text_model)}"
        table.add_row(
            mark,
            name,
            entry.kind,
            Text(encoders),
            Text(entry.language or "—"),
            Text(entry.trained_on),
            "yes" if entry.calibrated else "no",
        )
    console.print(table)
    for entry in entries:
        if entry.in_use:
            where = f" ({entry.path})" if entry.path else ""
            console.print(Text(f"* in use: {entry.name}{where}"), soft_wrap=True)
    for entry in entries:
        if entry.card:
            console.print(Text(f"card of {entry.name}: {entry.card}"), soft_wrap=True)
    console.print(Text("full names and paths: hanclip models --json"), style="dim")


def _short_model(spec: str | None) -> str:
    """An encoder as a table has room for: a folder by its name, a hub id without the
    sentence-transformers organisation (`--json` has them whole)."""
    if not spec:
        return "—"
    if spec.startswith("local-dir:"):
        return Path(spec[len("local-dir:") :]).name + "/"
    if spec.startswith("/"):
        return Path(spec).name + "/"
    return spec.removeprefix("sentence-transformers/")


@models_app.command(
    "install",
    epilog="Examples:\n\n"
    "  hanclip models install ./한국어-모델\n\n"
    "  hanclip models install ~/학습결과/hanclip-ko --name 한국어 --default\n\n"
    "  hanclip models install ./새-모델 --name 한국어 --force --json   # replace it",
)
@handle_errors
def models_install(
    source: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="The bundle folder (the one holding hanclip.json)."),
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
    """Copy a trained bundle into the library's models/ (checked first, moved in whole)."""
    from hanclip_cli.library import library_dir
    from hanclip_cli.models import install_bundle

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
    console.print(Text(line), soft_wrap=True)
    if result.default:
        console.print(Text(f"{result.name} is the library's default model"), soft_wrap=True)
    if result.in_use:
        console.print(Text(f"`hanclip search` now uses {result.name}"), soft_wrap=True)


def main() -> None:
    """Console entry point: usage errors become one `error:` line, like every other error."""
    import sys

    args = sys.argv[1:] or ["--help"]
    try:
        code = app(args=args, prog_name="hanclip", standalone_mode=False)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Typer's (vendored) click usage errors: duck-typed, as their classes are private.
        format_message = getattr(exc, "format_message", None)
        if format_message is None or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        message = " ".join(format_message().split())
        err_console.print(
            Text(f"error: {message} (see hanclip --help)", style="bold red"), soft_wrap=True
        )
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
