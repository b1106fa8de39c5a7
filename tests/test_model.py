"""The model layer: bundles, heads, lazy encoders, image loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hanclip_model import BundleError, load_bundle, read_bundle, resolve_bundle
from hanclip_model.encoders import ClipEncoder, TextEncoder, parse_image_model
from hanclip_model.heads import l2_normalize, load_heads
from hanclip_model.images import MAX_PIXELS, ImageLoadError, load_image
from trainer.heads import HanclipHeads


def _unit_rows(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(rows, dim)))


def test_head_sizes_match_the_design():
    heads = HanclipHeads(image_dim=512, text_dim=384, out_dim=512)
    layers = [m for m in heads.f1 if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(512, 1024), (1024, 512)]
    layers = [m for m in heads.f2 if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(384, 768), (768, 512)]
    assert sum(p.numel() for p in heads.parameters()) == pytest.approx(1.74e6, rel=0.01)


def test_numpy_heads_equal_torch_heads_in_eval_mode(tmp_path):
    torch.manual_seed(1)
    heads = HanclipHeads(image_dim=24, text_dim=20, out_dim=12)
    heads.train()
    for _ in range(3):  # move the BatchNorm running statistics away from (0, 1)
        heads.project_image(torch.randn(64, 24) * 3 + 1)
        heads.project_text(torch.randn(64, 20) * 2 - 1)
    heads.eval()
    heads.save(tmp_path / "heads.safetensors")
    loaded = load_heads(tmp_path / "heads.safetensors")
    images, texts = _unit_rows(5, 24), _unit_rows(5, 20, seed=1)
    with torch.no_grad():
        want_i = heads.project_image(torch.from_numpy(images)).numpy()
        want_t = heads.project_text(torch.from_numpy(texts)).numpy()
    np.testing.assert_allclose(loaded.image(images), want_i, atol=1e-5)
    np.testing.assert_allclose(loaded.text(texts), want_t, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(loaded.text(texts), axis=1), 1.0, atol=1e-6)
    assert HanclipHeads.load(tmp_path / "heads.safetensors").f1[0].weight.shape == (48, 24)


def test_project_without_heads_is_identity_and_loads_no_encoder(tiny):
    model = load_bundle(tiny.plain_bundle)
    raw = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32) * 5
    np.testing.assert_allclose(model.project_images(raw), l2_normalize(raw), atol=1e-7)
    np.testing.assert_allclose(model.project_texts(raw), l2_normalize(raw), atol=1e-7)
    assert not model.image_encoder.loaded and not model.text_encoder.loaded


def test_project_with_heads_needs_only_the_heads_file(tiny, tmp_path):
    # Encoders that do not exist: projecting precomputed embeddings must still work.
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "heads.safetensors").write_bytes(
        (tiny.heads_bundle / "heads.safetensors").read_bytes()
    )
    (bundle / "hanclip.json").write_text(
        json.dumps(
            {
                "format": 1,
                "name": "offline",
                "image_model": "local-dir:not-downloaded",
                "text_model": "org/not-downloaded",
                "heads": "heads.safetensors",
            }
        )
    )
    model = load_bundle(bundle)
    out = model.project_images(_unit_rows(4, 32))
    assert out.shape == (4, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert model.project_texts(_unit_rows(2, 32)).shape == (2, 16)
    with pytest.raises(BundleError, match="cannot load image model"):
        model.embed_images([Image.new("RGB", (8, 8))])


def test_embed_texts_and_images_share_a_space(tiny, tmp_path):
    model = load_bundle(tiny.plain_bundle)
    texts = model.embed_texts(["바다 위 노을", "a cat"])
    assert texts.shape == (2, 32) and texts.dtype == np.float32
    assert not model.image_encoder.loaded  # text only: the image model stays unloaded
    photo = tmp_path / "p.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(photo)
    images = model.embed_images([photo, Image.open(photo)])
    assert images.shape == (2, 32)
    np.testing.assert_allclose(images[0], images[1], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)


def test_text_is_nfc_normalised(tiny):
    import unicodedata

    model = load_bundle(tiny.plain_bundle)
    nfc = "바다 위 노을"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    np.testing.assert_allclose(model.embed_texts([nfd]), model.embed_texts([nfc]), atol=1e-6)


def test_heads_dimension_mismatch_is_reported(tiny, tmp_path):
    bundle = tmp_path / "bad"
    bundle.mkdir()
    HanclipHeads(image_dim=64, text_dim=32, out_dim=16).save(bundle / "heads.safetensors")
    (bundle / "hanclip.json").write_text(
        json.dumps(
            {
                "format": 1,
                "name": "bad",
                "image_model": tiny.image_spec,
                "text_model": str(tiny.text_plain),
                "heads": "heads.safetensors",
            }
        )
    )
    with pytest.raises(BundleError, match="expect 64-d image embeddings"):
        load_bundle(bundle).embed_images([Image.new("RGB", (8, 8))])


def test_relative_paths_resolve_against_the_bundle_directory(tmp_path):
    (tmp_path / "b" / "text").mkdir(parents=True)
    (tmp_path / "b" / "hanclip.json").write_text(
        json.dumps(
            {
                "format": 1,
                "name": "rel",
                "image_model": "local-dir:clip",
                "text_model": "text",
                "heads": None,
            }
        )
    )
    spec = read_bundle(tmp_path / "b")
    assert spec.image_model == "local-dir:" + str((tmp_path / "b" / "clip").resolve())
    assert spec.text_model == str((tmp_path / "b" / "text").resolve())
    hub = {"format": 1, "name": "hub", "image_model": "ViT-B-32:openai", "heads": None}
    (tmp_path / "b" / "hanclip.json").write_text(json.dumps({**hub, "text_model": "org/model"}))
    assert read_bundle(tmp_path / "b").text_model == "org/model"


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"format": 2, "image_model": "a", "text_model": "b", "heads": None}, "format 2"),
        ({"format": 1, "text_model": "b", "heads": None}, "'image_model'"),
        ({"format": 1, "image_model": "a", "text_model": "b", "heads": "x.st"}, "missing"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_bundles_are_rejected(tmp_path, manifest, message):
    (tmp_path / "hanclip.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        read_bundle(tmp_path)


def test_builtin_mclip_and_unknown_names():
    spec = resolve_bundle("mclip")
    assert spec.image_model == "ViT-B-32:openai"
    assert spec.text_model == "sentence-transformers/clip-ViT-B-32-multilingual-v1"
    assert spec.heads_path is None
    with pytest.raises(BundleError, match="unknown model"):
        resolve_bundle("definitely-not-a-model")


def test_image_model_specs():
    assert parse_image_model("ViT-B-32:openai") == ("ViT-B-32", "openai")
    assert parse_image_model("ViT-B-32") == ("ViT-B-32", None)
    assert parse_image_model("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    assert parse_image_model("local-dir:/x/y") == ("local-dir:/x/y", None)


def test_fingerprint_follows_the_heads_bytes(tiny, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny.heads_bundle, copy)
    assert resolve_bundle(copy).fingerprint == resolve_bundle(tiny.heads_bundle).fingerprint
    HanclipHeads(image_dim=32, text_dim=32, out_dim=16).save(copy / "heads.safetensors")
    assert resolve_bundle(copy).fingerprint != resolve_bundle(tiny.heads_bundle).fingerprint
    assert (
        resolve_bundle(copy).image_fingerprint
        == resolve_bundle(tiny.heads_bundle).image_fingerprint
    )


def test_encoders_load_lazily(tiny):
    clip, text = ClipEncoder(tiny.image_spec, "cpu"), TextEncoder(str(tiny.text_plain), "cpu")
    assert not clip.loaded and not text.loaded
    assert clip.dim == 32 and text.dim == 32
    assert clip.embed_texts(["a photo of a cat"]).shape == (1, 32)


# -- image loading -----------------------------------------------------------------------------


def _exif_with(orientation: int | None = None, taken: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation:
        exif[274] = orientation
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    return exif


def test_exif_orientation_and_date(tmp_path):
    # Stored 60x30 landscape, left half red; orientation 6 means "rotate 90 clockwise to view".
    stored = Image.new("RGB", (60, 30), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 30))
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=_exif_with(6, "2023:07:14 18:30:05"), quality=95)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (30, 60)
    assert loaded.image.size == (30, 60)
    top = loaded.image.getpixel((15, 5))
    assert top[0] > 200 and top[2] < 60  # the red half is on top once upright
    assert loaded.taken_at == "2023-07-14T18:30:05"


def test_large_jpeg_is_decoded_in_draft_mode(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(path, quality=80)
    loaded = load_image(path, min_side=224)
    assert (loaded.width, loaded.height) == (4000, 3000)
    assert 224 <= min(loaded.image.size) < 1500  # reduced by the DCT scaler, never below need


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "I;16", "L"])
def test_unusual_modes_become_rgb(tmp_path, mode):
    image = Image.new("RGB", (20, 20), (200, 100, 50)).convert(mode if mode != "I;16" else "L")
    suffix = ".jpg" if mode in ("CMYK", "L") else ".png"
    if mode == "I;16":
        image = Image.fromarray((np.full((20, 20), 40000)).astype(np.uint16))
    if mode == "P":
        image.info["transparency"] = 0
    path = tmp_path / f"img{suffix}"
    image.save(path)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (20, 20)
    if mode == "I;16":
        assert loaded.image.getpixel((0, 0))[0] == pytest.approx(40000 / 256, abs=1)


def test_bad_files_raise_image_load_error(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(junk)
    truncated = tmp_path / "cut.jpg"
    Image.new("RGB", (300, 300), (1, 2, 3)).save(tmp_path / "whole.jpg")
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:400])
    with pytest.raises(ImageLoadError):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    # A PNG header claiming a huge size is enough: the guard must trip on the header alone.
    import struct
    import zlib

    width = height = int(MAX_PIXELS**0.5) + 10
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
    data += struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)
