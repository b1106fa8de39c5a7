"""Reading photos: upright, RGB, decoded no larger than the model needs, with a bomb guard.

Two kinds of photo need an optional package, named by the failure reason while it is missing:
- HEIC/HEIF (`hanclip[heif]`, pillow-heif): libheif turns the pixels upright and pillow-heif
  then says orientation 1; the EXIF date is read like a JPEG's.
- Camera RAW (`hanclip[raw]`, rawpy): the JPEG preview the camera embedded (LibRaw's
  `extract_thumb`) is what gets embedded, never a demosaiced RAW. Orientation is the
  preview's EXIF tag when it has one, else LibRaw's `flip` (parsed from the RAW, maker notes
  included). The date is the RAW's own EXIF DateTimeOriginal, else IFD0 DateTime, read with
  Pillow's TIFF reader from the TIFF-based containers (DNG, CR2, NEF, ARW, ORF, RW2); else
  the preview's EXIF date (the camera's, as in RAF, or the one LibRaw writes from what it
  parsed, as for CR3). Width and height are the RAW's, as displayed.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import struct
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from pathlib import Path

from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from hanclip_model.errors import HanclipError, ImageLoadError
from hanclip_model.texts import nfc

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS
# A 200-megapixel photo is already beyond any phone or camera; bigger is a bomb, not a photo.
MAX_PIXELS = 200_000_000
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_ORIENTATION = 274
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# LibRaw's `flip` as the EXIF orientation it stands for (dcraw maps them "50132467").
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
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


@dataclass(frozen=True)
class FormatExtra:
    """Photos that need an optional package, and the extra of hanclip that installs it."""

    formats: str
    package: str
    module: str
    extra: str

    @property
    def missing(self) -> str:
        """The failure reason of such a photo while the package is not installed."""
        return f"{self.formats} needs {self.package}: pip install 'hanclip[{self.extra}]'"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


HEIF = FormatExtra("HEIC/HEIF", "pillow-heif", "pillow_heif", "heif")
RAW = FormatExtra("camera RAW", "rawpy", "rawpy", "raw")


def extra_installed_since(reason: str) -> bool:
    """Whether a photo failed for want of a package that is installed now: `index` tries it
    again although the file has not changed."""
    return any(reason == extra.missing and extra.installed() for extra in (HEIF, RAW))


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
    if not patterns:
        return False
    if not name.isascii():
        name = nfc(name)  # macOS writes names decomposed; patterns are typed composed
    return _exclusion(tuple(patterns)).match(name) is not None


@lru_cache(maxsize=16)
def _exclusion(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """`patterns` as one regular expression: `fnmatchcase` of each, in one match per name
    (at 100k files, a dozen fnmatch calls per name were a fifth of a no-op `index`)."""
    return re.compile("|".join(f"(?:{translate(pattern)})" for pattern in patterns))


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
    if not root.is_dir():
        candidates: Iterable[str] = [str(root)]
    else:
        candidates = _walk(root, include_hidden, on_error, exclude)
    for path in candidates:
        if os.path.splitext(path)[1].lower() in PHOTO_EXTENSIONS:
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
    return _parse_date(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME))


def _parse_date(raw: object) -> str | None:
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
    """Decode a photo for embedding; JPEGs (RAW previews too) are decoded at the smallest
    scale >= `min_side`."""
    extension = os.path.splitext(path)[1].lower()
    try:
        if os.stat(path).st_size == 0:
            raise ImageLoadError("empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow's bomb warning duplicates the MAX_PIXELS check below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if extension in RAW_EXTENSIONS:
                return _load_raw(path, min_side)
            if extension in HEIF_EXTENSIONS:
                _register_heif()
            with Image.open(path) as image:
                exif = image.getexif()
                return _decode(image, exif.get(_ORIENTATION), _exif_date(exif), min_side)
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


def _decode(
    image: Image.Image,
    orientation: object,
    taken_at: str | None,
    min_side: int,
    size: tuple[int, int] | None = None,
) -> LoadedImage:
    """`image` upright and RGB; `size` is the photo's own when `image` is a preview of it."""
    if image.width * image.height > MAX_PIXELS:
        raise ImageLoadError(
            f"image too large ({image.width}x{image.height} pixels, limit {MAX_PIXELS:,})"
        )
    width, height = size or image.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    image.load()
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    upright = image.transpose(method) if method is not None else image
    return LoadedImage(_shrink(_to_rgb(upright), min_side), width, height, taken_at)


def _register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        raise ImageLoadError(HEIF.missing) from None
    if "HEIF" not in Image.OPEN:
        register_heif_opener()


def _load_raw(path: str | Path, min_side: int) -> LoadedImage:
    """The camera's embedded JPEG preview, upright, with the RAW's date and size."""
    try:
        import rawpy
    except ImportError:
        raise ImageLoadError(RAW.missing) from None
    try:
        with rawpy.imread(os.fspath(path)) as raw:
            thumb = raw.extract_thumb()
            sizes = raw.sizes
    except rawpy.LibRawNoThumbnailError:
        raise ImageLoadError("camera RAW without an embedded preview") from None
    except rawpy.LibRawUnsupportedThumbnailError:
        raise ImageLoadError("camera RAW whose embedded preview is in an unknown format") from None
    except rawpy.LibRawError as exc:
        raise ImageLoadError(f"cannot read camera RAW: {exc}") from None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        preview = Image.open(io.BytesIO(thumb.data))
    else:
        preview = Image.fromarray(thumb.data)
    exif = preview.getexif()
    orientation = exif.get(_ORIENTATION) or _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
    taken_at = _tiff_date(path) or _preview_date(exif)
    size = (sizes.width, sizes.height) if sizes.width and sizes.height else None
    return _decode(preview, orientation, taken_at, min_side, size)


def _preview_date(exif: Image.Exif) -> str | None:
    """The preview's EXIF date, unless it is the epoch LibRaw writes there when the RAW has
    no date of its own."""
    taken = _exif_date(exif)
    return None if taken == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(0)) else taken


def _tiff_date(path: str | Path) -> str | None:
    """EXIF DateTimeOriginal, else IFD0 DateTime, of a TIFF-based RAW (DNG, CR2, NEF, ARW,
    ORF, RW2), read without reading the file whole. ORF and RW2 spell the TIFF magic number
    their own way, so only the byte order mark is checked. A damaged date is no date."""
    try:
        with open(path, "rb") as fp:
            header = fp.read(8)
            if len(header) < 8 or header[:2] not in (b"II", b"MM"):
                return None
            ifh = header[:2] + (b"*\0" if header[:2] == b"II" else b"\0*") + header[4:]
            ifd0 = TiffImagePlugin.ImageFileDirectory_v2(ifh)
            fp.seek(ifd0.next)
            ifd0.load(fp)
            found = ifd0.get(_DATETIME)
            if isinstance(ifd0.get(_EXIF_IFD), int):
                exif_ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh)
                fp.seek(ifd0[_EXIF_IFD])
                exif_ifd.load(fp)
                found = exif_ifd.get(_DATETIME_ORIGINAL) or found
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return None
    return _parse_date(found)


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
