"""`hanclip export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hanclip_cli.common import (
    console,
    err_console,
    handle_errors,
    print_json,
)
from hanclip_cli.options import JsonOption

EPILOG = (
    "Examples:\n\n"
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

    from hanclip_model.bundle_export import export_bundle

    with err_console.status("exporting the encoders (verified against torch)"):
        report = export_bundle(bundle, out, quantize_images=quantize_images, force=force)
    if json_output:
        print_json(asdict(report))
        return
    if report.already:
        line = f"{report.bundle}: carries its ONNX encoders already (--force exports again)"
        console.print(line, highlight=False)
        return
    size = report.encoders_bytes / 1e6
    line = f"{report.bundle}: ONNX encoders written ({size:.0f} MB, {report.seconds:.1f} s)"
    if report.image_min_cosine is not None:
        line += f"; image encoder within cosine {report.image_min_cosine:.5f} of open_clip"
    if report.image_int8_cosine is not None:
        line += f"; int8 within {report.image_int8_cosine:.4f} of fp32"
    console.print(line, highlight=False)
