"""The torch-free image encoder: exported once, equal to open_clip, no torch at run time.

Tolerances: the numpy/Pillow pixels equal open_clip's transform within MAX_PIXEL_DIFF (1e-5
max abs; both run the same float32 steps, so it is 0 here), and the ONNX Runtime embeddings
agree with open_clip's within MIN_COSINE (0.999, every image).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from graph_weights import initializer_types
from onnx import TensorProto
from PIL import Image

from hanclip_eval.tiny_models import build_tiny_open_clip, write_photo_folder
from hanclip_model.encoders import ClipEncoder
from hanclip_model.errors import BundleError
from hanclip_model.fast_image import cache as fast_image_cache
from hanclip_model.fast_image import export as fast_image_export
from hanclip_model.fast_image.cache import (
    ensure_fast_image,
    fast_image_dir,
    image_fingerprint,
    refusal,
)
from hanclip_model.fast_image.export import (
    MAX_PIXEL_DIFF,
    MIN_COSINE,
    MIN_FLOAT16_COSINE,
    MIN_INT8_COSINE,
    export_image_encoder,
    preprocess_config,
    quantize_image_encoder,
    verify_export,
    verify_images,
)
from hanclip_model.fast_image.runtime import (
    CONFIG_NAME,
    ENCODER_NAME,
    QUANTIZED_ENCODER_NAME,
    FastImageConfig,
    FastImageEncoder,
    preprocess_image,
    preprocess_images,
)
from hanclip_model.half_weights import FLOAT16, FLOAT32, store_float32_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "transformers", "sentence_transformers", "open_clip")
# (width, height, mode): wide, tall, already the input size, smaller than it, odd sizes.
SHAPES = [
    (1000, 300, "RGB"),
    (300, 1000, "RGB"),
    (32, 32, "RGB"),
    (7, 5, "RGB"),
    (499, 333, "L"),
    (123, 457, "RGBA"),
    (64, 48, "P"),
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _image(width: int, height: int, mode: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + width * 7 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> Path:
    return ensure_fast_image(tiny.image_spec, tmp_path_factory.mktemp("fast-image"))


@pytest.fixture(scope="module")
def clip(tiny) -> ClipEncoder:
    return ClipEncoder(tiny.image_spec, device="cpu")


def test_export_is_verified_and_records_what_it_measured(exported, tiny):
    names = {p.name for p in exported.iterdir()}
    # One graph, its weights apart (mapped, not parsed, when a session opens).
    assert names == {CONFIG_NAME, ENCODER_NAME, f"{ENCODER_NAME}.data"}
    config = FastImageConfig.read(exported)
    assert config.spec == tiny.image_spec and config.dim == 32
    assert config.fingerprint == image_fingerprint(tiny.image_spec)
    assert config.min_cosine is not None and config.min_cosine >= MIN_COSINE
    assert config.max_pixel_diff is not None and config.max_pixel_diff <= MAX_PIXEL_DIFF
    # The weights stored in float16: every image stayed within the stricter bar of fp32.
    assert config.graph_weights == FLOAT16
    assert config.float16_cosine is not None and config.float16_cosine >= MIN_FLOAT16_COSINE
    assert initializer_types(exported / ENCODER_NAME) >= {TensorProto.FLOAT16}
    preprocess = config.preprocess
    assert (preprocess.resize_mode, preprocess.resize_size) == ("shortest", [32])
    assert (preprocess.interpolation, preprocess.crop_size) == ("bicubic", [32, 32])


@pytest.mark.parametrize(("width", "height", "mode"), SHAPES)
def test_numpy_preprocessing_equals_open_clips_transform(clip, exported, width, height, mode):
    image = _image(width, height, mode)
    ours = preprocess_image(image, FastImageConfig.read(exported).preprocess)
    theirs = clip.preprocess(image).numpy()
    assert ours.shape == theirs.shape == (3, 32, 32) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-6


@pytest.mark.parametrize(
    ("resize_mode", "interpolation", "size"),
    [("squash", "bilinear", 24), ("shortest", "bicubic", 224), ("squash", "bicubic", (20, 28))],
)
def test_other_open_clip_transforms_are_read_and_reproduced(resize_mode, interpolation, size):
    from open_clip import image_transform

    transform = image_transform(
        size, is_train=False, resize_mode=resize_mode, interpolation=interpolation
    )
    config = preprocess_config(transform)
    assert (config.resize_mode, config.interpolation) == (resize_mode, interpolation)
    for width, height, mode in SHAPES:
        image = _image(width, height, mode, seed=1)
        theirs = transform(image).numpy()
        assert np.abs(preprocess_image(image, config) - theirs).max() <= 1e-6


@pytest.mark.parametrize(("resize_mode", "size"), [("longest", 32), ("shortest", (20, 28))])
def test_a_transform_it_cannot_reproduce_is_refused(resize_mode, size):
    from open_clip import image_transform

    with pytest.raises(BundleError, match="cannot export an image transform"):
        preprocess_config(image_transform(size, is_train=False, resize_mode=resize_mode))


def test_embeddings_match_open_clip_one_by_one_and_batched(clip, exported, tmp_path):
    paths = write_photo_folder(tmp_path / "photos", count=6)
    images = [Image.open(p).convert("RGB") for p in paths] + verify_images()
    encoder = FastImageEncoder.load(exported)
    batched = encoder.embed(images, batch_size=4)
    single = np.concatenate([encoder.embed([image]) for image in images])
    reference = clip.embed_images(images)
    assert batched.shape == (len(images), 32) and batched.dtype == np.float32
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert _cosines(batched, reference).min() >= MIN_COSINE
    assert _cosines(single, reference).min() >= MIN_COSINE
    assert encoder.embed([]).shape == (0, 32)


def test_image_path_never_imports_torch_or_open_clip(exported):
    script = (
        "import json, sys\n"
        "from PIL import Image\n"
        "from hanclip_model.fast_image.runtime import FastImageEncoder\n"
        "images = [Image.new('RGB', (64, 40), (200, 30, 90)), Image.new('L', (20, 50), 128)]\n"
        f"vectors = FastImageEncoder.load({str(exported)!r}).embed(images)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'shape': list(vectors.shape), 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"shape": [2, 32], "heavy": []}


def test_ensure_reuses_the_export_then_redoes_it_when_the_weights_change(tmp_path, monkeypatch):
    spec = build_tiny_open_clip(tmp_path / "clip", embed_dim=32, seed=0)
    cache = tmp_path / "cache"
    first = ensure_fast_image(spec, cache)
    assert first == fast_image_dir(cache, spec)
    before = FastImageEncoder.load(first).embed(verify_images())

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    with monkeypatch.context() as patch:
        patch.setattr(fast_image_cache, "export_image_encoder", no_export)
        assert ensure_fast_image(spec, cache) == first  # reused, not exported again

    build_tiny_open_clip(tmp_path / "clip", embed_dim=32, seed=1)  # same place, new weights
    second = ensure_fast_image(spec, cache)
    assert second != first and not first.exists()  # the stale export is removed
    after = FastImageEncoder.load(second).embed(verify_images())
    assert _cosines(after, before).min() < 0.99
    reference = ClipEncoder(spec, device="cpu").embed_images(verify_images())
    assert _cosines(after, reference).min() >= MIN_COSINE


def test_an_export_of_other_weights_is_rejected(clip, tmp_path):
    other = ClipEncoder(build_tiny_open_clip(tmp_path / "other", embed_dim=32, seed=5), "cpu")
    out = export_image_encoder(other, tmp_path / "other-export")
    with pytest.raises(BundleError, match="disagrees with open_clip"):
        verify_export(out, clip.model, clip.preprocess)


def test_an_export_whose_preprocessing_was_changed_is_rejected(clip, exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    data = json.loads((copy / CONFIG_NAME).read_text(encoding="utf-8"))
    data["preprocess"]["std"] = [0.5, 0.5, 0.5]
    (copy / CONFIG_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BundleError, match="preprocessing differs"):
        verify_export(copy, clip.model, clip.preprocess)
    data["min_cosine"] = 0.5  # an export the cache would not take, even unchanged
    (copy / CONFIG_NAME).write_text(json.dumps(data), encoding="utf-8")
    assert not fast_image_cache.is_current(copy, clip.spec)


def test_a_broken_export_is_a_bundle_error(exported, tmp_path):
    import shutil

    with pytest.raises(BundleError):
        FastImageEncoder.load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / ENCODER_NAME).write_bytes(b"not an onnx graph")
    with pytest.raises(BundleError, match="cannot load fast image encoder"):
        FastImageEncoder.load(copy)
    (copy / CONFIG_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="cannot read"):
        FastImageEncoder.load(copy)


def test_a_graph_that_does_not_fit_its_config_is_refused(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    data = json.loads((copy / CONFIG_NAME).read_text(encoding="utf-8"))
    data["dim"] = 64
    (copy / CONFIG_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BundleError, match="does not match"):
        FastImageEncoder.load(copy)


def test_a_refused_export_is_recorded_and_not_retried(tmp_path, monkeypatch):
    import hanclip_model.fast_image.export as fast_image_export

    spec = build_tiny_open_clip(tmp_path / "clip", embed_dim=32)
    cache = tmp_path / "cache"
    monkeypatch.setattr(fast_image_export, "MIN_COSINE", 1.5)  # no export can pass
    with pytest.raises(BundleError, match="disagrees") as first:
        ensure_fast_image(spec, cache)
    target = fast_image_dir(cache, spec)
    assert not target.exists() and refusal(target) == str(first.value)
    assert [p.name for p in (cache / "fast-image").iterdir()] == [target.name + ".refused.json"]

    calls = []
    monkeypatch.setattr(fast_image_cache, "export_image_encoder", lambda *a, **k: calls.append(a))
    with pytest.raises(BundleError, match="disagrees"):
        ensure_fast_image(spec, cache)
    assert calls == []  # the recorded reason, without exporting again

    monkeypatch.undo()
    assert ensure_fast_image(spec, cache, retry=True) == target
    assert refusal(target) is None


def test_random_weights_have_nothing_to_cache():
    with pytest.raises(BundleError, match="random weights"):
        image_fingerprint("ViT-B-32")
    assert image_fingerprint("ViT-B-32:openai") == "open_clip:ViT-B-32:openai"


def test_preprocess_images_of_none_is_empty(exported):
    config = FastImageConfig.read(exported)
    assert preprocess_images([], config.preprocess).shape == (0, 3, 32, 32)


def test_a_float16_graph_that_strays_from_fp32_is_kept_in_float32(clip, exported, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_image_export, "MIN_FLOAT16_COSINE", 1.01)  # no graph can reach it
        out = export_image_encoder(clip, tmp_path / "export", fingerprint="tiny")
    config = FastImageConfig.read(out)
    # What float16 reached is recorded: the reason it was not kept.
    assert config.graph_weights == FLOAT32
    assert config.float16_cosine is not None and MIN_COSINE <= config.float16_cosine < 1.01
    assert TensorProto.FLOAT16 not in initializer_types(out / ENCODER_NAME)
    data = f"{ENCODER_NAME}.data"
    assert (out / data).stat().st_size > 1.9 * (exported / data).stat().st_size
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no float32 copy left
    assert config.min_cosine is not None and config.min_cosine >= MIN_COSINE
    # Either form is the same image space: a float16 export's vectors are the float32 one's.
    images = verify_images()
    float32 = FastImageEncoder.load(out).embed(images)
    float16 = FastImageEncoder.load(exported).embed(images)
    assert _cosines(float16, float32).min() >= MIN_FLOAT16_COSINE


def test_an_export_made_before_float16_weights_is_used_as_it_is(
    tiny, exported, tmp_path, monkeypatch
):
    """A float32 export in a user's cache, its config without the new fields: read as
    float32, current, not exported again, and the same vectors within MIN_FLOAT16_COSINE."""
    cache = tmp_path / "cache"
    old = fast_image_dir(cache, tiny.image_spec)  # the cache key is what it was
    old.mkdir(parents=True)
    store_float32_weights(exported / ENCODER_NAME, old / ENCODER_NAME)
    data = json.loads((exported / CONFIG_NAME).read_text(encoding="utf-8"))
    del data["graph_weights"], data["float16_cosine"]
    (old / CONFIG_NAME).write_text(json.dumps(data), encoding="utf-8")

    monkeypatch.setattr(fast_image_cache, "export_image_encoder", _no_export)
    assert ensure_fast_image(tiny.image_spec, cache) == old
    config = FastImageConfig.read(old)
    assert (config.graph_weights, config.float16_cosine) == (FLOAT32, None)
    images = verify_images()
    got = FastImageEncoder.load(old).embed(images)
    assert _cosines(got, FastImageEncoder.load(exported).embed(images)).min() >= MIN_FLOAT16_COSINE


def _no_export(*args, **kwargs):
    raise AssertionError("exported again")


def test_int8_is_quantised_from_the_float32_form_of_a_float16_graph(exported, tmp_path):
    """As in a bundle: the export's files hard-linked (which the `onnx` package refuses to
    read weights from), weights stored in float16 (which the quantiser would leave as they
    are)."""
    bundle = tmp_path / "image"
    bundle.mkdir()
    for part in exported.iterdir():
        os.link(part, bundle / part.name)
    config = quantize_image_encoder(bundle)
    assert config.graph_weights == FLOAT16 and config.int8_cosine >= MIN_INT8_COSINE
    types = initializer_types(bundle / QUANTIZED_ENCODER_NAME)
    assert TensorProto.INT8 in types and TensorProto.FLOAT16 not in types
    assert (bundle / ENCODER_NAME).samefile(exported / ENCODER_NAME)  # left as it was
    images = verify_images()
    int8 = FastImageEncoder.load(bundle, quantized=True).embed(images)
    assert _cosines(int8, FastImageEncoder.load(bundle).embed(images)).min() >= MIN_INT8_COSINE
