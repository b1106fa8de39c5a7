"""A bundle that carries its own ONNX encoders (`hanclip export`), so it indexes and
searches without torch on whatever machine it is copied to.

The encoders are the verified exports of the user cache (`fast_image`, and `fast_text` or,
for an open_clip text tower, `fast_clip_text`: made now when missing, with torch; an export
that fails its verification is refused with the reason and nothing is written), copied
(hard-linked where the disk allows) into `BUNDLE/encoders/image` and `BUNDLE/encoders/text`
through a hidden staging folder that is moved into place whole, then named in `hanclip.json`
(written atomically). A bundle is therefore never left naming encoders it does not hold, and a
new one (`--out`) is built whole in a staging folder beside it: an export that fails leaves no
folder behind.

A built-in model (`mclip`, `xlmr-b32`, ...) has no folder of its own: `--out DIR` makes a new
bundle there naming the same encoders, so a library indexed with the built-in keeps its photos
(same image space). `--quantize-images` adds the int8 image graph and makes the bundle use it:
it is kept only when it stays within cosine 0.99 of fp32 on the verification images, and it is
an image space of its own (a library moves to it with `index --reembed`).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hanclip_model.bundle import (
    ENCODERS_DIR,
    IMAGE_ENCODER_DIR,
    MANIFEST_NAME,
    TEXT_ENCODER_DIR,
    BundleSpec,
    clip_text_source,
    read_bundle,
    record_encoders,
    resolve_bundle,
    write_bundle,
)
from hanclip_model.cache import cache_root
from hanclip_model.device import require_torch
from hanclip_model.errors import HanclipError
from hanclip_model.files import atomic_dir, link_tree, replace_dir
from hanclip_model.storage import storage_error

STAGING_PREFIX = ".encoders.tmp-"


@dataclass(frozen=True)
class ExportReport:
    """What `hanclip export` wrote (its `--json`)."""

    bundle: str
    image_encoder: str
    text_encoder: str
    image_min_cosine: float | None  # ONNX vs open_clip on the verification images, worst
    text_min_cosine: float | None  # ONNX vs torch on the verification texts, worst
    image_int8_cosine: float | None  # int8 vs fp32, worst; None without --quantize-images
    image_int8: bool
    encoders_bytes: int
    seconds: float
    already: bool  # the bundle carried its encoders already; nothing was written


def export_bundle(
    source: str, out: Path | None = None, *, quantize_images: bool = False, force: bool = False
) -> ExportReport:
    """Write the ONNX encoders into the bundle `source` (or, for a built-in name, into a new
    bundle at `out`); see the module docstring. `force` exports again, and tries again a model
    whose export was refused before."""
    started = time.perf_counter()
    spec = resolve_bundle(source)
    target, in_place = _target_folder(source, spec, out, force)
    if in_place:
        spec = read_bundle(target) if spec.directory is None else spec
        carried = spec.image_export is not None and spec.text_export is not None
        if carried and not force and spec.image_int8 == quantize_images:
            return _report(target, started, already=True)
    require_torch("hanclip export")
    if in_place and not os.access(target, os.W_OK):
        raise HanclipError(f"cannot write into the bundle folder {target}: it is read-only")

    from hanclip_model.fast_image.cache import ensure_fast_image

    # Made (or found) before anything is written: a model that cannot be fetched or exported
    # leaves the folder as it was.
    image = ensure_fast_image(spec.image_model, cache_root(), retry=force)
    text = _text_export(spec.text_model, force)
    if in_place:
        _write_encoders(target, image, text, quantize_images)
    else:
        # A new bundle is built whole beside `target` and moved into place: a failure leaves
        # nothing, or the bundle `--force` was to replace.
        with atomic_dir(target, saving=f"no bundle was made at {target}") as staging:
            write_bundle(
                staging,
                name=spec.name,
                image_model=spec.image_model,
                text_model=spec.text_model,
                heads=None,
                extra={"exported_from": source},
            )
            _write_encoders(staging, image, text, quantize_images)
    return _report(target, started, already=False)


def _text_export(text_model: str, force: bool) -> Path:
    """The verified export of the text model in the user cache, made now when missing: an
    open_clip text tower's (`open_clip-text:`, `fast_clip_text`), else a sentence-transformers
    model's (`fast_text`). `force` tries again an open_clip tower whose export was refused."""
    if clip_text_source(text_model) is not None:
        from hanclip_model.fast_clip_text.cache import ensure_fast_clip_text

        return ensure_fast_clip_text(text_model, cache_root(), retry=force)
    from hanclip_model.fast_text.cache import ensure_fast_text

    return ensure_fast_text(text_model, cache_root())


def _write_encoders(folder: Path, image: Path, text: Path, quantize_images: bool) -> None:
    """Copy the exports `image` and `text` into the bundle `folder` and name them in its
    `hanclip.json` (see the module docstring)."""
    from hanclip_model.fast_image.export import quantize_image_encoder

    staging = folder / f"{STAGING_PREFIX}{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        link_tree(image, staging / Path(IMAGE_ENCODER_DIR).name)
        link_tree(text, staging / Path(TEXT_ENCODER_DIR).name)
        if quantize_images:
            quantize_image_encoder(staging / Path(IMAGE_ENCODER_DIR).name)
        replace_dir(staging, folder / ENCODERS_DIR)
        record_encoders(
            folder, image=IMAGE_ENCODER_DIR, text=TEXT_ENCODER_DIR, image_int8=quantize_images
        )
    except OSError as exc:
        error = storage_error(exc, folder, what="bundle folder")
        if error is None:
            raise
        raise error.saving(f"the encoders of {folder} were not written") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _target_folder(
    source: str, spec: BundleSpec, out: Path | None, force: bool
) -> tuple[Path, bool]:
    """The bundle folder to write into, and whether it is written in place (the bundle
    itself, or an earlier export of the same built-in) rather than made new. Writes nothing."""
    if spec.directory is not None:
        if out is not None:
            raise HanclipError(
                "--out is for built-in models; a bundle folder gets its encoders in place "
                "(copy the folder first to keep the original as it is)"
            )
        return spec.directory, True
    if out is None:
        raise HanclipError(
            f"{source!r} is a built-in model with no folder of its own: "
            f"hanclip export {source} --out DIR makes a bundle there"
        )
    out = Path(os.path.abspath(os.path.expanduser(out)))
    if out.exists() and not out.is_dir():
        raise HanclipError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise HanclipError(f"--out {out} is a folder with other files in it: choose an empty one")
    if (out / MANIFEST_NAME).is_file():
        if read_bundle(out).extra.get("exported_from") == source:
            return out, True  # made by an earlier export of the same model
        if not force:
            raise HanclipError(f"{out} holds another bundle: choose another --out, or --force")
    return out, False


def _report(target: Path, started: float, *, already: bool) -> ExportReport:
    from hanclip_model.fast_image.runtime import FastImageConfig

    spec = read_bundle(target)
    if spec.image_export is None or spec.text_export is None:
        raise HanclipError(f"{target}: the export did not record its encoders")
    config = FastImageConfig.read(spec.image_export)
    text_cosine = _text_min_cosine(spec.text_model, spec.text_export)
    size = sum(path.stat().st_size for path in (target / ENCODERS_DIR).rglob("*") if path.is_file())
    return ExportReport(
        bundle=str(target),
        image_encoder=str(spec.image_export),
        text_encoder=str(spec.text_export),
        image_min_cosine=config.min_cosine,
        text_min_cosine=text_cosine,
        image_int8_cosine=config.int8_cosine,
        image_int8=spec.image_int8,
        encoders_bytes=size,
        seconds=round(time.perf_counter() - started, 3),
        already=already,
    )


def _text_min_cosine(text_model: str, export: Path) -> float | None:
    """The worst cosine the text export in `export` reached against torch when it was
    verified, in the form it was kept."""
    if clip_text_source(text_model) is not None:
        from hanclip_model.fast_clip_text.runtime import FastClipTextConfig

        return FastClipTextConfig.read(export).min_cosine
    from hanclip_model.fast_text.runtime import FastTextConfig

    text = FastTextConfig.read(export)
    if text.graph_weights_cosines:  # exports made before record the table's cosines only
        return text.graph_weights_cosines[text.graph_weights]
    return text.token_table_cosines.get(text.token_table)
