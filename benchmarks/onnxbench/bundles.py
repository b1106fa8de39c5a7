"""The two bundles `benchmarks/index_onnx.py` compares (one exported, one plain, the same
real-size random models) and the photos they index."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from benchkit.inputs import ensure_photos, linked_folder
from benchkit.processes import BenchmarkError, log

from hanclip_model.bundle import HEADS_NAME, MANIFEST_NAME, read_bundle, write_bundle
from onnxbench.figures import Sizes


@dataclass(frozen=True)
class Models:
    """What the two bundles are made of."""

    image_spec: str  # "local-dir:...": fixed weights, so it can be exported
    text_model: Path
    heads: Path | None  # a heads file, copied into each bundle; None: no heads


@dataclass(frozen=True)
class Bundles:
    exported: Path  # after `hanclip export`: carries encoders/image and encoders/text
    plain: Path  # the same models, no encoders
    export_s: float
    export_already: bool  # a kept work directory held the export already
    export_min_cosine: float | None  # ONNX vs open_clip on the verification images


def build_models(work: Path) -> Models:
    """Real-size random models, saved once per work directory: open_clip ViT-B/32 in the
    `local-dir:` layout, a MiniLM-L12-shaped text model with a 250k Unigram tokenizer, heads."""
    import torch

    from hanclip_eval.random_models import MINILM_L12, random_minilm, save_random_clip_vit_b32
    from hanclip_model.encoders import quiet_transformers
    from trainer.heads import HanclipHeads

    root = work / "models"
    log("real-size random models (once per work directory)")
    image_spec = save_random_clip_vit_b32(root / "clip-vit-b32")
    text = root / "text-minilm-l12"
    if not (text / "modules.json").is_file():
        quiet_transformers()
        staging = root / ".text.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        random_minilm(staging, shape=MINILM_L12, tokenizer="unigram")
        os.replace(staging, text)
    heads = root / HEADS_NAME
    if not heads.is_file():
        torch.manual_seed(0)
        model = HanclipHeads(image_dim=512, text_dim=MINILM_L12.hidden, out_dim=512)
        model.eval().save(heads)
    return Models(image_spec, text, heads)


def _write_bundle(directory: Path, models: Models, name: str) -> None:
    if models.heads is not None:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy2(models.heads, directory / HEADS_NAME)
    write_bundle(
        directory,
        name=name,
        image_model=models.image_spec,
        text_model=str(models.text_model),
        heads=HEADS_NAME if models.heads is not None else None,
    )


def prepare_bundles(work: Path, models: Models) -> Bundles:
    """The plain bundle, and the exported one (`hanclip export`, run in this process with the
    work directory's cache: its fast text export is what the plain bundle's runs use too)."""
    from hanclip_model.bundle_export import export_bundle

    plain, exported = work / "bundles" / "plain", work / "bundles" / "exported"
    shutil.rmtree(plain, ignore_errors=True)
    _write_bundle(plain, models, "plain")
    manifest = exported / MANIFEST_NAME
    if manifest.is_file():  # a kept work directory: its export is reused if the models match
        kept, wanted = read_bundle(exported), read_bundle(plain)
        if (kept.image_model, kept.text_model) != (wanted.image_model, wanted.text_model):
            shutil.rmtree(exported)
    if not manifest.is_file():
        _write_bundle(exported, models, "exported")
    log("hanclip export (ONNX image and text encoders into the bundle)")
    report = export_bundle(str(exported))
    if read_bundle(exported).image_int8:
        raise BenchmarkError(f"{exported} uses the int8 image graph: remove it and rerun")
    return Bundles(exported, plain, report.seconds, report.already, report.image_min_cosine)


def startup_folder(work: Path, photo: Path) -> Path:
    return linked_folder(work / "startup-photo", [photo])


def photo_folder(work: Path, sizes: Sizes) -> tuple[Path, list[Path]]:
    width, height = sizes.photo_size
    folder = work / f"photos-{width}x{height}"
    log(f"photos: {sizes.photos} JPEGs of {width}x{height} (generated once)")
    paths = ensure_photos(folder, sizes.photos, sizes.photo_size)
    # Exactly these photos: a kept folder may hold more from a run with a larger --photos.
    return linked_folder(work / f"index-photos-{sizes.photos}", paths), paths
