"""`hanclip-demo DIR`: a tiny bundle and a few photos, for trying hanclip with no network.

Random weights, so the ranking means nothing, but every code path of `index` and `search` is
the real one:

    hanclip-demo /tmp/hanclip-demo
    hanclip index /tmp/hanclip-demo/photos --model /tmp/hanclip-demo/bundle
    hanclip search "바다 위 노을" --model /tmp/hanclip-demo/bundle
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hanclip_model.device import require_torch
from hanclip_model.errors import HanclipError

DEMO_PHOTOS = 12


def build_demo(directory: Path) -> Path:
    """A tiny bundle (heads null) in `directory/bundle` and photos in `directory/photos`.
    The models are made with torch: without it, or with `directory` a file, a one-line
    `HanclipError`, before anything is written."""
    if directory.exists() and not directory.is_dir():
        raise HanclipError(f"{directory} is a file, not a folder: give a folder to write into")
    require_torch("hanclip-demo", instead=None)
    from hanclip_model.encoders import quiet_transformers

    quiet_transformers()  # building the models would draw transformers' own loading bars
    from hanclip_eval.tiny_models import (
        build_tiny_open_clip,
        build_tiny_sentence_transformer,
        write_bundle_dir,
        write_photo_folder,
    )

    image_spec = build_tiny_open_clip(directory / "clip")
    text_model = build_tiny_sentence_transformer(directory / "text", out_dim=32)
    write_bundle_dir(directory / "bundle", image_spec, text_model, heads=None, name="tiny-demo")
    write_photo_folder(directory / "photos", count=DEMO_PHOTOS)
    return directory


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="hanclip-demo",
        description="Write a tiny offline bundle and a few photos into DIR.",
        # One command a line, as written: argparse would otherwise break a path at a hyphen.
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n"
        "  hanclip-demo /tmp/hanclip-demo\n"
        "  hanclip index /tmp/hanclip-demo/photos --model /tmp/hanclip-demo/bundle\n"
        "  hanclip search '바다 위 노을' --model /tmp/hanclip-demo/bundle",
    )
    parser.add_argument(
        "directory", metavar="DIR", type=Path, help="where to write bundle/ and photos/"
    )
    args = parser.parse_args(argv)
    directory = Path(os.path.abspath(os.path.expanduser(args.directory)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs, or may reach, a hub
    try:
        build_demo(directory)
    except HanclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a parent that is a file, a read-only or full disk
        print(f"error: cannot write into {directory}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    print(f"tiny bundle: {directory / 'bundle'}\nphotos:      {directory / 'photos'}")


if __name__ == "__main__":
    main()
