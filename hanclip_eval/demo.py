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
from collections.abc import Sequence
from pathlib import Path

DEMO_PHOTOS = 12


def build_demo(directory: Path) -> Path:
    """A tiny bundle (heads null) in `directory/bundle` and photos in `directory/photos`."""
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
        epilog="Example: hanclip-demo /tmp/hanclip-demo && hanclip index /tmp/hanclip-demo/photos "
        "--model /tmp/hanclip-demo/bundle && hanclip search '바다 위 노을' "
        "--model /tmp/hanclip-demo/bundle",
    )
    parser.add_argument("directory", type=Path, help="where to write bundle/ and photos/")
    args = parser.parse_args(argv)
    directory = Path(os.path.abspath(os.path.expanduser(args.directory)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs, or may reach, a hub
    from hanclip_model.encoders import quiet_transformers

    quiet_transformers()  # building the models would draw transformers' own loading bars
    build_demo(directory)
    print(f"tiny bundle: {directory / 'bundle'}\nphotos:      {directory / 'photos'}")


if __name__ == "__main__":
    main()
