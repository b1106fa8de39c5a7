"""The open_clip built-ins (`xlmr-b32`, `siglip2-*`, `nllb-siglip-*`) on the ONNX paths: both
towers exported and verified (`hanclip export`), then index and search in a fresh interpreter
where torch, transformers and open_clip cannot be imported, giving the torch path's scores.

Each text-tower kind at tiny size with random weights and a stand-in tokenizer of its kind
(`hanclip_eval.tiny_models.build_tiny_clip_text_model`): XLM-R and NLLB beside a tiny ViT, and
SigLIP 2's TextTransformer beside a timm ViT with SigLIP's attention pooling, squashed to its
input size with its own mean and std.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_builtin_models import _bundle  # the same bundle, as an outside tool writes it

from hanclip_eval.tiny_models import (
    TINY_CLIP_TEXT_KINDS,
    build_tiny_clip_text_model,
    write_photo_folder,
)
from hanclip_model.bundle import clip_text_model, read_bundle
from hanclip_model.errors import BundleError
from hanclip_model.fast_clip_text import cache as clip_text_cache
from hanclip_model.fast_clip_text.export import MIN_COSINE
from hanclip_model.fast_clip_text.runtime import FastClipTextConfig, FastClipTextEncoder
from hanclip_model.fast_image.runtime import FastImageConfig
from hanclip_model.model import load_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["바다 위 노을", "누워있는 고양이", "a dog in the park"]
BLOCKED = ("torch", "torchvision", "transformers", "open_clip", "sentence_transformers", "timm")
# Run before anything else in the fresh interpreter: the heavy packages look uninstalled
# (`importlib.util.find_spec` answers None, an import fails), as in the slim install.
NO_TORCH = (
    "import sys\n"
    "class Blocked:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {BLOCKED!r}:\n"
    "            raise ImportError(f'{name} is blocked')\n"
    "sys.meta_path.insert(0, Blocked())\n"
    f"sys.modules.update(dict.fromkeys({BLOCKED!r}))\n"
)


@pytest.fixture(scope="module", params=TINY_CLIP_TEXT_KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def exported(kind, tmp_path_factory) -> tuple[Path, dict]:
    """A bundle of a tiny model of `kind`, its encoders exported by `hanclip export` into a
    cache of its own; (the bundle, the export's report)."""
    from hanclip_model.bundle_export import export_bundle

    root = tmp_path_factory.mktemp(f"onnx-{kind}")
    spec = build_tiny_clip_text_model(root / "models" / kind, kind)
    bundle = _bundle(root / "bundle", spec, f"tiny-{kind}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANCLIP_CACHE", str(root / "cache"))
        patch.setenv("HANCLIP_DEVICE", "cpu")
        report = export_bundle(str(bundle))
    return bundle, vars(report)


@pytest.fixture(scope="module")
def torch_vectors(exported, tmp_path_factory) -> dict:
    """The torch path's vectors of QUERIES and of the photos, from the source model."""
    bundle, _ = exported
    photos = tmp_path_factory.mktemp("photos") / "사진"
    paths = write_photo_folder(photos, count=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANCLIP_FAST_TEXT", "0")
        patch.setenv("HANCLIP_FAST_IMAGE", "0")
        plain = json.loads((bundle / "hanclip.json").read_text(encoding="utf-8"))
        plain.pop("encoders")
        torch_bundle = tmp_path_factory.mktemp("torch-bundle")
        (torch_bundle / "hanclip.json").write_text(json.dumps(plain), encoding="utf-8")
        model = load_bundle(torch_bundle, device="cpu")
        texts, images = model.embed_texts(QUERIES), model.embed_images(paths)
        assert model.image_backend == "torch" and not model.fast_text
    return {"photos": photos, "paths": paths, "texts": texts, "images": images}


def _fresh(script: str, cwd: Path, cache: Path) -> str:
    """What `script` prints, run in a fresh interpreter without the heavy packages (checked:
    none of them was loaded by its end)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HANCLIP_CACHE": str(cache)}
    env |= {"HANCLIP_DEVICE": "cpu", "HANCLIP_VIA_SERVER": "0", "HANCLIP_RESIDENT": "0"}
    env["HANCLIP_HOME"] = str(cwd / "home")
    script = (
        NO_TORCH
        + "try:\n"
        + "".join(f"    {line}\n" for line in script.splitlines())
        + "finally:\n"
        + f"    loaded = [m for m in {BLOCKED!r} if sys.modules.get(m) is not None]\n"
        + "    print('@@' + repr(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    *output, loaded = done.stdout.strip().splitlines()
    assert loaded == "@@[]", loaded
    return "\n".join(output)


def _hanclip_without_torch(args: list[str], cwd: Path, cache: Path) -> object:
    script = (
        "from hanclip_cli.entry import main\n"
        f"sys.argv = ['hanclip', *{[str(a) for a in args]!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    return json.loads(_fresh(script, cwd, cache))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- hanclip export ----------------------------------------------------------------------------


def test_export_writes_both_towers_verified_and_names_them(kind, exported):
    bundle, report = exported
    assert report["image_min_cosine"] >= 0.999 and report["text_min_cosine"] >= MIN_COSINE
    manifest = json.loads((bundle / "hanclip.json").read_text(encoding="utf-8"))
    assert manifest["encoders"] == {
        "image": "encoders/image",
        "text": "encoders/text",
        "image_int8": False,
    }
    spec = read_bundle(bundle)
    text = FastClipTextConfig.read(spec.text_export)
    assert text.spec == spec.image_model and text.min_cosine >= MIN_COSINE
    assert text.language == ("kor_Hang" if kind == "nllb" else None)
    image = FastImageConfig.read(spec.image_export)
    # open_clip's preprocessing for these models: squashed to the input size, their mean/std.
    side = 160 if kind == "siglip" else 32
    assert image.preprocess.resize_mode == "squash" and image.preprocess.crop_size == [side] * 2
    assert image.preprocess.mean == [0.5] * 3 and image.preprocess.interpolation == "bicubic"
    assert image.max_pixel_diff == 0.0 and image.min_cosine >= 0.999


# -- index and search without torch --------------------------------------------------------------


def test_vectors_without_torch_equal_the_torch_paths(exported, torch_vectors, tmp_path):
    bundle, _ = exported
    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle, copy)
    paths = [str(p) for p in torch_vectors["paths"]]
    script = (
        "import json\n"
        "from hanclip_model import load_bundle\n"
        f"model = load_bundle({str(copy)!r})\n"
        f"texts = model.embed_texts({QUERIES!r})\n"
        f"images = model.embed_images({paths!r})\n"
        "assert model.fast_text and model.image_backend == 'onnx'\n"
        "print(json.dumps({'texts': texts.tolist(), 'images': images.tolist()}))\n"
    )
    onnx = json.loads(_fresh(script, tmp_path, tmp_path / "empty-cache"))
    assert _cosines(np.array(onnx["texts"]), torch_vectors["texts"]).min() >= MIN_COSINE
    assert _cosines(np.array(onnx["images"]), torch_vectors["images"]).min() >= 0.999


def test_index_then_search_without_torch_gives_the_torch_scores(exported, torch_vectors, tmp_path):
    bundle, _ = exported
    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle, copy)
    library, cache = tmp_path / "library", tmp_path / "empty-cache"
    photos = torch_vectors["photos"]
    index = _hanclip_without_torch(
        ["index", photos, "--model", copy, "--library", library, "--json"], tmp_path, cache
    )
    assert index["added"] == 8 and index["failed"] == 0
    hits = _hanclip_without_torch(
        ["search", QUERIES[0], "--model", copy, "--library", library, "--json"], tmp_path, cache
    )
    assert len(hits) == 8
    by_path = {p.resolve(): i for i, p in enumerate(torch_vectors["paths"])}
    rows = [by_path[Path(hit["path"]).resolve()] for hit in hits]
    expected = torch_vectors["images"][rows] @ torch_vectors["texts"][0]
    np.testing.assert_allclose([hit["score"] for hit in hits], expected, atol=1e-3)
    assert not cache.exists() or not any(cache.rglob("*.onnx"))  # the bundle's own encoders


# -- the cache: made on first use, or refused with the reason kept -------------------------------


@pytest.fixture
def plain_tiny(kind, tmp_path) -> Path:
    spec = build_tiny_clip_text_model(tmp_path / "models" / kind, kind)
    return _bundle(tmp_path / "bundle", spec, f"tiny-{kind}")


def test_a_bundle_without_encoders_queries_through_the_cached_export(plain_tiny, tmp_path):
    model = load_bundle(plain_tiny, device="cpu")
    vectors = model.embed_texts(QUERIES)
    assert model.fast_text and model.fast_text_error is None
    assert isinstance(model._fast_text_encoder, FastClipTextEncoder)
    cached = clip_text_cache.cached_fast_clip_text(model.spec.text_model, _cache())
    assert cached is not None and cached == model._text_export_found
    reference = load_bundle(plain_tiny, device="cpu")
    reference.fast_text = False
    assert _cosines(vectors, reference.embed_texts(QUERIES)).min() >= MIN_COSINE
    # Without torch, the cached export serves the query as it is.
    script = (
        "import json\n"
        "from hanclip_model import load_bundle\n"
        f"model = load_bundle({str(plain_tiny)!r}, few_texts=True)\n"
        f"print(json.dumps(model.embed_texts({QUERIES!r}).tolist()))\n"
    )
    without_torch = np.array(json.loads(_fresh(script, tmp_path, _cache())))
    assert _cosines(without_torch, vectors).min() >= 0.99999


def test_a_refused_export_is_recorded_kept_as_the_reason_and_not_retried(plain_tiny):
    from hanclip_model.fast_clip_text import export as clip_text_export

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clip_text_export, "MIN_COSINE", 1.5)  # no export can pass
        model = load_bundle(plain_tiny, device="cpu")
        vectors = model.embed_texts(QUERIES)  # through torch
    assert not model.fast_text and "disagrees with open_clip" in model.fast_text_error
    assert vectors.shape[0] == len(QUERIES)
    text_model = model.spec.text_model
    target = clip_text_cache.fast_clip_text_dir(_cache(), text_model)
    assert not target.exists() and clip_text_cache.refusal(target) == model.fast_text_error
    record = json.loads(target.with_name(target.name + ".refused.json").read_text())
    assert set(record["versions"]) >= {"torch", "open_clip_torch", "transformers"}

    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clip_text_cache, "export_clip_text_encoder", lambda *a: calls.append(a))
        again = load_bundle(plain_tiny, device="cpu")
        again.embed_texts(QUERIES[:1])
    assert calls == [] and again.fast_text_error == model.fast_text_error

    assert clip_text_cache.ensure_fast_clip_text(text_model, _cache(), retry=True) == target
    assert clip_text_cache.refusal(target) is None
    assert load_bundle(plain_tiny, device="cpu")._fast_text_encoder is not None


def test_random_weights_have_nothing_to_cache_and_go_through_torch():
    with pytest.raises(BundleError, match="random weights"):
        clip_text_cache.fast_clip_text_dir(_cache(), clip_text_model("ViT-B-32-SigLIP2-256"))
    assert clip_text_cache.cached_fast_clip_text(clip_text_model("ViT-B-32"), _cache()) is None
    with pytest.raises(BundleError, match="not an open_clip text tower"):
        clip_text_cache.open_clip_source("sentence-transformers/clip-ViT-B-32-multilingual-v1")


def _cache() -> Path:
    return Path(os.environ["HANCLIP_CACHE"])


# -- a library keeps its model -----------------------------------------------------------------


def test_a_library_indexed_with_an_exported_bundle_keeps_it_when_the_default_changes(
    cli, exported, photos, library, monkeypatch
):
    from hanclip_library import library as library_module
    from hanclip_library.library import Library

    bundle, _ = exported
    monkeypatch.setattr(library_module, "default_model", lambda: str(bundle))
    assert cli("index", photos, "--library", library, "--json").exit_code == 0
    # A built-in whose weights are not here: a library that followed it could not search.
    monkeypatch.setattr(library_module, "default_model", lambda: "nllb-siglip-large")
    search = cli("search", "바다", "--library", library, "--json")
    assert search.exit_code == 0, search.stderr
    assert len(search.json()) == 8
    again = cli("index", photos, "--library", library, "--json")
    assert again.exit_code == 0 and again.json()["added"] == 0
    with Library(library, create=False) as opened:
        assert opened.meta.model == str(bundle)
