"""HEIC/HEIF (pillow-heif) and camera RAW (rawpy, the embedded preview), with and without
their extras installed.

The DNG is written here, by hand: a TIFF whose IFD0 is the camera's JPEG preview
(NewSubfileType 1) and whose SubIFD is a small 16-bit Bayer CFA image (NewSubfileType 0), with
DNGVersion, a colour matrix and the tags a camera writes (orientation, dates). LibRaw opens it
and `extract_thumb()` returns the preview.
"""

from __future__ import annotations

import io
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from hanclip_model.errors import ImageLoadError
from hanclip_model.images import load_image

BYTE, ASCII, SHORT, LONG, RATIONAL = 1, 2, 3, 4, 5
RED, BLUE = (220, 20, 20), (20, 20, 220)


@dataclass(frozen=True)
class At:
    """The offset of a named IFD or data block, resolved when the file is laid out."""

    name: str


Entry = tuple[int, int, object]


def _field(kind: int, values: object, offsets: dict[str, int]) -> tuple[int, bytes]:
    if isinstance(values, At):
        values = [offsets[values.name]]
    if kind in (BYTE, ASCII):
        data = bytes(values)  # type: ignore[arg-type]
        return len(data), data
    if kind == RATIONAL:
        return len(values), b"".join(struct.pack("<LL", *v) for v in values)  # type: ignore[arg-type]
    code = "H" if kind == SHORT else "L"
    return len(values), struct.pack(f"<{len(values)}{code}", *values)  # type: ignore[arg-type]


def _tiff(ifds: dict[str, list[Entry]], blocks: dict[str, bytes]) -> bytes:
    """A little-endian TIFF: the first IFD is IFD0, each followed by the values that do not
    fit in its entries, then the data blocks; `At(name)` values become offsets."""
    dummy = {name: 0 for name in [*ifds, *blocks]}

    def overflow(entries: list[Entry], offsets: dict[str, int]) -> int:
        sizes = [len(_field(kind, v, offsets)[1]) for _, kind, v in entries]
        return sum(size + size % 2 for size in sizes if size > 4)

    offsets, position = {}, 8
    for name, entries in ifds.items():
        offsets[name] = position
        position += 2 + 12 * len(entries) + 4 + overflow(entries, dummy)
    for name, block in blocks.items():
        offsets[name] = position
        position += len(block) + len(block) % 2
    out = bytearray(b"II*\0" + struct.pack("<L", offsets[next(iter(ifds))]))
    for name, entries in ifds.items():
        table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        extra_at = offsets[name] + 2 + 12 * len(entries) + 4
        for tag, kind, values in sorted(entries, key=lambda e: e[0]):
            count, data = _field(kind, values, offsets)
            if len(data) <= 4:
                value = data.ljust(4, b"\0")
            else:
                value = struct.pack("<L", extra_at + len(extra))
                extra += data + b"\0" * (len(data) % 2)
            table += struct.pack("<HHL", tag, kind, count) + value
        out += table + b"\0\0\0\0" + extra
    for block in blocks.values():
        out += block + b"\0" * (len(block) % 2)
    return bytes(out)


def _two_colour(size: tuple[int, int]) -> Image.Image:
    """Red above, blue below: which side red ends up on tells the rotation applied."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0], size[1] // 2))
    return image


def write_dng(
    path: Path,
    *,
    orientation: int,
    datetime: str | None = None,
    original: str | None = None,
    preview_exif: Image.Exif | None = None,
    raw_size: tuple[int, int] = (128, 96),
    preview_size: tuple[int, int] = (64, 48),
) -> None:
    """A minimal DNG; `preview_exif` gives the preview EXIF of its own, as some cameras do."""
    buffer = io.BytesIO()
    preview = _two_colour(preview_size)
    preview.save(
        buffer, format="JPEG", **({"exif": preview_exif} if preview_exif is not None else {})
    )
    jpeg = buffer.getvalue()
    if preview_exif is not None and jpeg[2:4] == b"\xff\xe0":
        # As a camera writes it: EXIF first, no JFIF, or LibRaw puts an EXIF of its own first.
        jpeg = jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], "big") :]
    width, height = raw_size
    raw = bytes(range(256)) * (width * height * 2 // 256)
    ifd0: list[Entry] = [
        (254, LONG, [1]),
        (256, LONG, [preview_size[0]]),
        (257, LONG, [preview_size[1]]),
        (258, SHORT, [8, 8, 8]),
        (259, SHORT, [7]),  # JPEG
        (262, SHORT, [6]),  # YCbCr
        (271, ASCII, b"Hanclip\0"),
        (272, ASCII, b"Test DNG\0"),
        (273, LONG, At("jpeg")),
        (274, SHORT, [orientation]),
        (277, SHORT, [3]),
        (278, LONG, [preview_size[1]]),
        (279, LONG, [len(jpeg)]),
        (330, LONG, At("raw_ifd")),
        (50706, BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50707, BYTE, [1, 1, 0, 0]),
        (50708, ASCII, b"Test DNG\0"),
        (50721, RATIONAL, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]),
    ]
    if datetime:
        ifd0.append((306, ASCII, datetime.encode() + b"\0"))
    ifds = {"ifd0": ifd0}
    ifds["raw_ifd"] = [
        (254, LONG, [0]),
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, [16]),
        (259, SHORT, [1]),
        (262, SHORT, [32803]),  # CFA
        (273, LONG, At("raw")),
        (277, SHORT, [1]),
        (278, LONG, [height]),
        (279, LONG, [len(raw)]),
        (33421, SHORT, [2, 2]),
        (33422, BYTE, [0, 1, 1, 2]),  # RGGB
        (50717, LONG, [65535]),
    ]
    if original:
        ifd0.append((34665, LONG, At("exif")))
        ifds["exif"] = [(36867, ASCII, original.encode() + b"\0")]
    path.write_bytes(_tiff(ifds, {"jpeg": jpeg, "raw": raw}))


def write_heic(path: Path, *, orientation: int, original: str, size=(64, 48)) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[274] = orientation
    exif[306] = "2000:01:01 00:00:00"
    exif.get_ifd(0x8769)[36867] = original
    _two_colour(size).save(path, format="HEIF", exif=exif.tobytes())


def _red_side(image: Image.Image) -> str:
    """Where the red half of `_two_colour` is, as displayed: the reddest half."""
    w, h = image.size
    halves = {
        "top": (0, 0, w, h // 2),
        "bottom": (0, h - h // 2, w, h),
        "left": (0, 0, w // 2, h),
        "right": (w - w // 2, 0, w, h),
    }
    redness = {
        side: image.crop(box).getchannel("R").getextrema()[0] for side, box in halves.items()
    }
    return max(redness, key=redness.__getitem__)


def test_heic_is_read_upright_with_its_exif_date(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    write_heic(path, orientation=6, original="2020:01:02 03:04:05")
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (48, 64)
    assert loaded.image.size == (48, 64)
    assert _red_side(loaded.image) == "right"  # orientation 6: turned a quarter clockwise
    assert loaded.taken_at == "2020-01-02T03:04:05"


def _camera_exif(date: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = date
    return exif


@pytest.mark.parametrize(
    ("dng", "red", "taken_at"),
    [
        # The RAW's IFD0 DateTime; LibRaw writes the preview an EXIF with the orientation.
        (dict(orientation=6, datetime="2019:08:07 06:05:04"), "right", "2019-08-07T06:05:04"),
        # EXIF DateTimeOriginal wins over DateTime.
        (
            dict(orientation=3, datetime="2019:08:07 06:05:04", original="2018:01:02 03:04:05"),
            "bottom",
            "2018-01-02T03:04:05",
        ),
        # A preview with an EXIF of its own but no orientation: LibRaw's flip decides.
        (
            dict(orientation=8, preview_exif=_camera_exif("2017:03:04 05:06:07")),
            "left",
            "2017-03-04T05:06:07",
        ),
        # No date anywhere: none, not the epoch LibRaw writes into the preview.
        (dict(orientation=1), "top", None),
    ],
)
def test_dng_preview_is_read_upright_with_the_raws_date_and_size(tmp_path, dng, red, taken_at):
    pytest.importorskip("rawpy")
    path = tmp_path / "DSC_0001.dng"
    write_dng(path, **dng)
    loaded = load_image(path)
    turned = dng["orientation"] in (6, 8)
    assert (loaded.width, loaded.height) == ((96, 128) if turned else (128, 96))
    assert loaded.image.size == ((48, 64) if turned else (64, 48))
    assert _red_side(loaded.image) == red
    assert loaded.taken_at == taken_at


def test_raw_that_libraw_cannot_read_is_an_image_load_error(tmp_path):
    pytest.importorskip("rawpy")
    path = tmp_path / "broken.cr2"
    path.write_bytes(b"II*\0" + b"\0" * 64)
    with pytest.raises(ImageLoadError, match="cannot read camera RAW"):
        load_image(path)


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [("a.heic", "pillow_heif", "heif"), ("a.dng", "rawpy", "raw")],
)
def test_without_the_extra_the_reason_names_it(tmp_path, monkeypatch, name, module, extra):
    pytest.importorskip(module)
    path = tmp_path / name
    (write_heic if extra == "heif" else write_dng)(
        path, orientation=1, original="2020:01:01 00:00:00"
    )
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImageLoadError, match=rf"pip install 'hanclip\[{extra}\]'"):
        load_image(path)


def _index(cli, folder: Path, library: Path, model: Path) -> dict:
    result = cli("index", folder, "--library", library, "--model", model, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


@pytest.fixture
def formats(photos: Path) -> Path:
    pytest.importorskip("pillow_heif")
    pytest.importorskip("rawpy")
    write_heic(photos / "phone.heic", orientation=6, original="2020:01:02 03:04:05")
    write_dng(photos / "camera.dng", orientation=8, datetime="2019:08:07 06:05:04")
    return photos


def test_heic_and_dng_are_indexed_and_found(cli, tiny, formats, library, tmp_path):
    report = _index(cli, formats, library, tiny.plain_bundle)
    assert report["added"] == 10 and report["failed"] == 0
    for name, size, taken_at in [
        ("phone.heic", (48, 64), "2020-01-02T03:04:05"),
        ("camera.dng", (96, 128), "2019-08-07T06:05:04"),
    ]:
        outside = tmp_path / name  # the query photo itself is never among its results
        outside.write_bytes((formats / name).read_bytes())
        result = cli(
            "search", "--image", outside, "-n", "1",
            "--library", library, "--model", tiny.plain_bundle, "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        [hit] = result.json()
        assert hit["path"] == str(formats / name)
        assert ((hit["width"], hit["height"]), hit["taken_at"]) == (size, taken_at)
    result = cli(
        "search", "바다", "-n", "100", "--library", library, "--model", tiny.plain_bundle, "--json"
    )
    assert {"phone.heic", "camera.dng"} <= {Path(hit["path"]).name for hit in result.json()}


def test_without_the_extras_they_fail_once_and_are_retried_once_installed(
    cli, tiny, formats, library, monkeypatch
):
    with monkeypatch.context() as missing:
        missing.setitem(sys.modules, "pillow_heif", None)
        missing.setitem(sys.modules, "rawpy", None)
        report = _index(cli, formats, library, tiny.plain_bundle)
        reasons = {Path(f["path"]).name: f["error"] for f in report["failures"]}
        assert report["added"] == 8
        assert "pip install 'hanclip[heif]'" in reasons["phone.heic"]
        assert "pip install 'hanclip[raw]'" in reasons["camera.dng"]
        info = cli("info", "--library", library, "--errors", "--json")
        recorded = {Path(e["path"]).name: e["error"] for e in info.json()["errors"]}
        assert recorded == reasons

        tried = []
        missing.setattr("hanclip_library.indexer.load_image", lambda *a: tried.append(a))
        again = _index(cli, formats, library, tiny.plain_bundle)
        assert tried == [] and again["unchanged"] == 8 and again["failed"] == 2
    report = _index(cli, formats, library, tiny.plain_bundle)
    assert report["added"] == 2 and report["failed"] == 0 and report["unchanged"] == 8
    assert cli("info", "--library", library, "--errors", "--json").json()["errors"] == []
