"""`hanclip train` as a plain function: where the three corpora come from, then the pipeline.

English and target-language captions come from files (`--english`, `--target`; `--korean`
is the same option under its first name) or from a recipe of public datasets (`--recipe`,
read from the hub or from `--data-dir`). The images come from a folder of photos
(`--images`), from a recipe that has an image source, or from the library itself
(`--images-from-library`): the raw CLIP embeddings `index` stored, so no photo is opened and
the heads adapt to the user's own pictures. Or every bank is given precomputed (`--*-emb`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    fail,
    handle_errors,
    make_progress,
    print_json,
    resumable,
)
from hanclip_cli.options import DeviceOption, JsonOption, LibraryOption
from hanclip_model.device import require_torch
from hanclip_model.errors import HanclipError

DEFAULT_LANGUAGE = "ko"


@dataclass(frozen=True)
class TrainArgs:
    """The parameters of `hanclip train`; the defaults are the command's defaults."""

    out: Path | None = None
    english: Path | None = None
    target: Path | None = None  # --target, or its first name --korean
    images: Path | None = None
    images_from_library: bool = False
    library: Path | None = None
    recipe: str | None = None
    list_recipes: bool = False
    data_dir: Path | None = None
    limit: int | None = None
    language: str | None = None
    base_model: str = "hanclip-base"
    image_tower: str | None = None
    english_clip_emb: Path | None = None
    english_text_emb: Path | None = None
    korean_emb: Path | None = None
    image_emb: Path | None = None
    image_model: str = "ViT-B-32:openai"
    text_model: str = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
    name: str | None = None
    epochs: int = 36
    batch_size: int = 2048
    lr: float = 1e-3
    tau_retrieval: float = 0.01
    tau_inter: float = 0.01
    tau_image_text: float = 0.01
    noise_std: float = 0.025
    intra_weight: float = 0.1
    seed: int = 0
    cache_dir: Path | None = None
    device: str | None = None
    export: bool = False  # also write the ONNX encoders into the bundle (`hanclip export`)
    force: bool = False  # replace a finished bundle at --out
    json_output: bool = False


def stored_image_bank(
    library: Path | None, base_model: str, image_tower: str | None = None
) -> tuple[np.ndarray, dict]:
    """The raw CLIP embeddings a library holds (no photo is opened), after checking that
    they come from the base model's image encoder; with what the card says of them."""
    from hanclip_library.library import Library, library_dir
    from hanclip_library.store import DB_NAME
    from hanclip_model.bundle import train_base

    directory = library_dir(library)
    if not (directory / DB_NAME).exists():
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    spec = train_base(base_model, image_tower)
    with Library(directory, create=False) as lib:
        meta = lib.meta
        if meta.image_fingerprint != spec.image_fingerprint:
            raise HanclipError(
                f"the photos in {directory} were embedded with image model "
                f"{meta.image_model!r}, but the base model {spec.name!r} uses "
                f"{spec.image_model!r}: give --base-model a model with the library's image "
                "encoder, or train from a photo folder (--images)"
            )
        ids, raw = lib.store.embeddings()
    if len(ids) == 0:
        raise HanclipError(f"the library {directory} holds no photos yet: index some first")
    return raw, {"image_source": f"library {directory}", "library_photos": len(ids)}


def _corpus_inputs(args: TrainArgs):
    """CorpusInputs from the files, the recipe and the image source the arguments name."""
    from trainer.corpus import read_captions
    from trainer.pipeline import CorpusInputs, photos_in

    sources: dict[str, object] = {}
    language = args.language
    recipe_photos: list[str] | None = None
    if args.recipe is not None:
        if args.english is not None or args.target is not None:
            fail("--recipe brings its own captions: leave out --english and --target")
        from trainer.recipes import load_recipe

        own_images = args.images is not None or args.images_from_library
        corpora = load_recipe(
            args.recipe, data_dir=args.data_dir, limit=args.limit, with_images=not own_images
        )
        english, target = list(corpora.english), list(corpora.target)
        recipe_photos = list(corpora.photos) if corpora.photos else None
        language = language or corpora.language
        sources["recipe"] = corpora.info
    else:
        given = (("--english", args.english), ("--target", args.target))
        missing = [flag for flag, value in given if value is None]
        if missing:
            fail(f"missing {', '.join(missing)} (or use --recipe NAME)")
        assert args.english is not None and args.target is not None
        english = read_captions(args.english)[: args.limit]
        target = read_captions(args.target)[: args.limit]
        sources.update(english=str(args.english), target=str(args.target))
    image_sources = [
        flag
        for flag, given in (
            ("--images", args.images is not None),
            ("--images-from-library", args.images_from_library),
        )
        if given
    ]
    if len(image_sources) > 1:
        fail("give one image source: --images DIR or --images-from-library")
    image_bank = photos = None
    if args.images_from_library:
        image_bank, info = stored_image_bank(args.library, args.base_model, args.image_tower)
        sources.update(info)
    elif args.images is not None:
        photos = photos_in(args.images)
        sources["image_source"] = str(args.images)
    elif recipe_photos is not None:
        photos = recipe_photos
    else:
        fail("missing an image source: --images DIR or --images-from-library")
    return CorpusInputs(
        english=english,
        target=target,
        base_model=args.base_model,
        image_tower=args.image_tower,
        photos=photos,
        image_bank=image_bank,
        language=language or DEFAULT_LANGUAGE,
        sources=sources,
    )


def _check_modes(args: TrainArgs) -> bool:
    """Whether the banks come from corpora (else from embedding files); one-line errors."""
    embeddings = {
        "--english-clip-emb": args.english_clip_emb,
        "--english-text-emb": args.english_text_emb,
        "--korean-emb": args.korean_emb,
        "--image-emb": args.image_emb,
    }
    corpora_given = any(
        (args.english, args.target, args.images, args.images_from_library, args.recipe)
    )
    embeddings_given = any(v is not None for v in embeddings.values())
    if corpora_given == embeddings_given:
        fail(
            "give either corpora (--english, --target, --images / --images-from-library, or "
            "--recipe NAME) or embeddings (--*-emb)"
        )
    if embeddings_given:
        missing = [flag for flag, value in embeddings.items() if value is None]
        if missing:
            fail(f"missing {', '.join(missing)}")
    return corpora_given


def print_recipes(json_output: bool) -> None:
    from trainer.recipes import list_recipes

    recipes = list_recipes()
    if json_output:
        print_json([recipe.as_json() for recipe in recipes])
        return

    for recipe in recipes:
        console.print(Text(f"{recipe.name}  ({recipe.language})", style="bold"))
        console.print(Text(f"  {recipe.description}"))
        for listed in recipe.sources:
            source = listed.source
            console.print(
                Text(
                    f"  {listed.role:<8} {source.files.repo_id}  {source.size}  "
                    f"licence: {source.licence}"
                ),
            )
        console.print(Text(f"  holds out: {recipe.holds_out}"))


def run_train(args: TrainArgs, progress_bar) -> None:
    """Train and write the bundle; print a summary (or JSON)."""
    if args.list_recipes:  # reads no model: no torch needed
        print_recipes(args.json_output)
        return
    if args.out is None:
        fail("missing --out DIR: where to write the bundle")
    use_corpora = _check_modes(args)
    require_torch("hanclip train", instead=None)

    from trainer.pipeline import (
        EmbeddingInputs,
        build_corpus_banks,
        check_out_dir,
        load_embedding_banks,
        train_bundle,
    )
    from trainer.train import TrainConfig

    check_out_dir(args.out, force=args.force)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        tau_retrieval=args.tau_retrieval,
        tau_inter=args.tau_inter,
        tau_image_text=args.tau_image_text,
        noise_std=args.noise_std,
        intra_weight=args.intra_weight,
        seed=args.seed,
        device=args.device,
    )
    inputs = _corpus_inputs(args) if use_corpora else None
    with make_progress() as progress:
        if inputs is not None:
            from hanclip_model.cache import cache_root

            tasks: dict[str, object] = {}

            def bank_progress(bank: str, rows: int, total: int) -> None:
                if bank not in tasks:
                    tasks[bank] = progress.add_task(f"encoding {bank}", total=total)
                progress.update(tasks[bank], advance=rows)

            prepared = build_corpus_banks(
                inputs,
                args.cache_dir or cache_root() / "banks",
                device=args.device,
                progress=bank_progress,
            )
        else:
            assert args.english_clip_emb and args.english_text_emb
            assert args.korean_emb and args.image_emb
            prepared = load_embedding_banks(
                EmbeddingInputs(
                    args.english_clip_emb,
                    args.english_text_emb,
                    args.korean_emb,
                    args.image_emb,
                    args.image_model,
                    args.text_model,
                )
            )
            prepared.info["language"] = args.language or DEFAULT_LANGUAGE
        result, manifest = train_bundle(
            prepared,
            cfg,
            args.out,
            name=args.name or args.out.resolve().name,
            progress=progress_bar(progress),
        )
    exported = None
    if args.export:
        from dataclasses import asdict

        from hanclip_model.bundle_export import export_bundle

        exported = asdict(export_bundle(str(manifest.parent), force=True))
    summary = {
        "bundle": str(manifest.parent),
        "banks": prepared.banks.sizes(),
        "loss_history": result.loss_history,
        "seconds": {stage: round(s, 2) for stage, s in result.stage_seconds.items()},
        "epochs_resumed": result.epochs_resumed,
        "device": result.device,
        "language": prepared.info.get("language"),
        # What the bundle's `calibration` block says (None where training made none).
        "calibration": None if result.calibration is None else result.calibration.as_json(),
        # What `--export` wrote (`hanclip export --json`), None without it.
        "export": exported,
    }
    if args.json_output:
        print_json(summary)
        return
    losses = result.loss_history
    console.print(
        f"bundle written to {manifest.parent} (loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in summary["seconds"].items())
        + ")",
        highlight=False,
    )
    calibration = summary["calibration"] or {}
    if "a" in calibration:
        console.print(
            f"match probability calibrated on {calibration.get('pairs')} held-out pseudo pairs "
            f"(a={calibration['a']:.2f}, b={calibration['b']:.2f})",
            highlight=False,
        )
    elif calibration.get("uncalibrated"):
        console.print(f"not calibrated: {calibration['uncalibrated']}", highlight=False)
    if exported is not None:
        console.print(
            f"ONNX encoders written into the bundle ({exported['encoders_bytes'] / 1e6:.0f} MB): "
            "it indexes and searches without torch",
            highlight=False,
        )


EPILOG = (
    "Examples:\n\n"
    "  hanclip train --english en.txt --target ko.txt --images ~/unlabeled --out ./hanclip-ko\n\n"
    "  hanclip train --english en.txt --target ko.txt --images-from-library --out ./my-ko"
    "   # your own photos as the image bank\n\n"
    "  hanclip train --list-recipes\n\n"
    "  hanclip train --recipe coyo-mscoco-ko --images-from-library --out ./hanclip-ko\n\n"
    "  hanclip train --english en.txt --target vi.txt --language vi --images ~/사진 --out ./vi\n\n"
    "  hanclip train --recipe coyo-mscoco-ko --images ~/사진 --image-tower siglip2-b32 "
    "--out ./hanclip-siglip   # a stronger image space\n\n"
    "  hanclip train --english-clip-emb eI.npy --english-text-emb eK.npy --korean-emb k.npy "
    "--image-emb v.npy --out ./hanclip-ko --epochs 10\n\n"
    "  hanclip index ~/Pictures --model ./hanclip-ko && hanclip search '바다 위 노을'"
)


@handle_errors
@resumable("the finished epochs are saved")
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
        str,
        typer.Option(
            help="Bundle or built-in name whose frozen encoders to use (an open_clip built-in "
            "such as siglip2-b32 lends its image tower to HanCLIP's sentence encoder)."
        ),
    ] = "hanclip-base",
    image_tower: Annotated[
        str | None,
        typer.Option(
            help="Replace the base's image tower: an open_clip MODEL:PRETRAINED, or a built-in "
            "name whose image tower to take (the heads' width follows it)."
        ),
    ] = None,
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
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace the bundle --out holds already (a finished training run)."
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

    run_train(TrainArgs(**given), _train_bar)


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
