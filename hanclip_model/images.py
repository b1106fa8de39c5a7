"""Reading photos: upright, RGB, decoded no larger than the model needs, with a bomb guard."""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from hanclip_model.errors import HanclipError, ImageLoadError
from hanclip_model.texts import nfc

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# A 200-megapixel photo is already beyond any phone or camera; bigger is a bomb, not a photo.
MAX_PIXELS = 200_000_000
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_ORIENTATION = 274
_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
# Folders that NAS boxes, desktops and drives fill with thumbnails, trash and snapshots: copies
# of the user's photos (often thousands), never photos of their own. Matched with --exclude's
# rule; the hidden ones matter with --include-hidden.
DEFAULT_EXCLUDES = (
    "@eaDir",  # Synology: thumbnails and metadata beside every photo
    "#recycle",  # Synology: recycle bin
    "#snapshot",  # Synology: snapshots
    "@Recycle",  # QNAP: recycle bin
    "@Recently-Snapshot",  # QNAP: snapshots
    ".@__thumb",  # QNAP: thumbnails
    ".thumbnails",  # freedesktop: thumbnails
    ".Trash",  # freedesktop: trash on a drive, and the home trash
    ".Trash-*",  # freedesktop: per-user trash on a drive
    ".Trashes",  # macOS: trash on a drive
    "$RECYCLE.BIN",  # Windows: recycle bin, as drives spell it
    "$Recycle.Bin",  # Windows: recycle bin, as the system drive spells it
    "System Volume Information",  # Windows: restore points
)


@dataclass
class LoadedImage:
    """A decoded photo plus the metadata the library stores about it."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly reduced by JPEG draft mode
    width: int  # full-resolution size as displayed (after orientation)
    height: int
    taken_at: str | None  # EXIF date taken, ISO 8601 without time zone


@lru_cache(maxsize=1)
def supported_extensions() -> frozenset[str]:
    """Extensions `index` picks up; HEIC/HEIF only when pillow-heif is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return IMAGE_EXTENSIONS
    register_heif_opener()
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS


def exclude_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """`--exclude` patterns, checked: each matches one folder or file name (like a .gitignore
    line without a slash), so a pattern holding a slash or nothing at all is an error."""
    checked = []
    for pattern in patterns:
        if not pattern.strip() or "/" in pattern:
            raise HanclipError(
                f"--exclude {pattern!r}: give a folder or file name pattern without a slash, "
                "e.g. --exclude '@eaDir' or --exclude '*.tmp.jpg'"
            )
        checked.append(nfc(pattern))
    return tuple(checked)


def is_excluded(name: str, patterns: Sequence[str]) -> bool:
    """Whether a folder or file name matches one of `patterns` (fnmatch, case-sensitive)."""
    name = nfc(name)  # macOS writes names decomposed; patterns are typed composed
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def iter_image_files(
    root: Path,
    include_hidden: bool = False,
    on_error: Callable[[OSError], None] | None = None,
    exclude: Sequence[str] = (),
) -> Iterator[str]:
    """Paths of photo files below `root` (or `root` itself), sorted, by extension.

    Hidden folders and files (".thumbnails", "._IMG_0001.jpg") are skipped unless asked for,
    and so is every folder or file below `root` whose name matches a pattern of `exclude`.
    Symlinked folders are not followed, which rules out loops; symlinked files are listed.
    A folder that cannot be listed is passed to `on_error` (its `filename` names it).
    """
    extensions = supported_extensions()
    if not root.is_dir():
        candidates: Iterable[str] = [str(root)]
    else:
        candidates = _walk(root, include_hidden, on_error, exclude)
    for path in candidates:
        if os.path.splitext(path)[1].lower() in extensions:
            yield path


def _walk(
    root: Path,
    include_hidden: bool,
    on_error: Callable[[OSError], None] | None,
    exclude: Sequence[str],
) -> Iterator[str]:
    def wanted(name: str) -> bool:
        return (include_hidden or not name.startswith(".")) and not is_excluded(name, exclude)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if wanted(d))
        for name in sorted(filenames):
            if wanted(name):
                yield os.path.join(dirpath, name)


def _exif_date(exif: Image.Exif) -> str | None:
    raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if not isinstance(raw, str):
        return None
    match = _EXIF_DATE.match(raw.strip())
    if not match or match.group(1) == "0000":
        return None
    y, mo, d, h, mi, s = match.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _shrink(image: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by a whole factor while the short side stays >= 2 x `min_side`: a 50 MP PNG
    need not travel through the pipeline at full size (JPEGs are already reduced by draft)."""
    factor = min(image.size) // (2 * min_side)
    return image.reduce(factor) if factor >= 2 else image


def load_image(path: str | Path, min_side: int = 224) -> LoadedImage:
    """Decode a photo for embedding; JPEGs are decoded at the smallest scale >= `min_side`."""
    supported_extensions()  # registers the HEIF opener when available
    try:
        if os.stat(path).st_size == 0:
            raise ImageLoadError("empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow's bomb warning duplicates the MAX_PIXELS check below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageLoadError(
                        f"image too large ({width}x{height} pixels, limit {MAX_PIXELS:,})"
                    )
                exif = image.getexif()
                if exif.get(_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
                taken_at = _exif_date(exif)
                if image.format == "JPEG":
                    image.draft("RGB", (min_side, min_side))
                image.load()
                rgb = _shrink(_to_rgb(ImageOps.exif_transpose(image)), min_side)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError("file not found") from None
    except PermissionError:
        raise ImageLoadError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageLoadError(f"cannot decode image: {exc}") from None
    return LoadedImage(image=rgb, width=width, height=height, taken_at=taken_at)


def as_rgb_images(images: Sequence[str | Path | Image.Image], min_side: int) -> list[Image.Image]:
    """PIL images pass through; paths are loaded, and a failure names the file."""
    loaded = []
    for item in images:
        if isinstance(item, Image.Image):
            loaded.append(item)
            continue
        try:
            loaded.append(load_image(item, min_side).image)
        except ImageLoadError as exc:
            raise ImageLoadError(f"cannot read {item}: {exc}") from None
    return loaded
