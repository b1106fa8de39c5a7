"""Bundles that carry their ONNX encoders (`hanclip export`), and indexing without torch.

A bundle after `hanclip export` indexes and searches in a fresh interpreter that never
imports torch or open_clip, with an empty cache and its source models gone (a copy on
another machine); a bundle without them uses the cache's export, or torch, saying why; and
where torch is missing too, the command fails in one line naming what to install.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hanclip_eval.tiny_models import (
    build_tiny_open_clip,
    build_tiny_sentence_transformer,
    write_bundle_dir,
)
from hanclip_model import device as device_module
from hanclip_model import model as model_module
from hanclip_model.bundle import IMAGE_ENCODER_DIR, BundleError, read_bundle, resolve_bundle
from hanclip_model.encoders import ClipEncoder
from hanclip_model.fast_image import runtime as fast_image_runtime
from hanclip_model.fast_image.export import MIN_COSINE, MIN_INT8_COSINE, quantize_image_encoder
from hanclip_model.model import load_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "open_clip", "transformers", "sentence_transformers")


@pytest.fixture
def own_models(tmp_path: Path) -> Path:
    """A bundle whose model folders are its own to delete (models/ beside bundle/)."""
    image_spec = build_tiny_open_clip(tmp_path / "models" / "clip", embed_dim=32)
    text = build_tiny_sentence_transformer(tmp_path / "models" / "text", out_dim=32)
    return write_bundle_dir(tmp_path / "bundle", image_spec, text, heads=None, name="own")


@pytest.fixture
def exported(cli, own_models: Path) -> Path:
    result = cli("export", own_models, "--json")
    assert result.exit_code == 0, result.stderr
    return own_models


def test_export_writes_verified_encoders_and_names_them(cli, own_models: Path) -> None:
    before = json.loads((own_models / "hanclip.json").read_text())
    result = cli("export", own_models, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["bundle"] == str(own_models.resolve()) and not report["already"]
    assert report["image_min_cosine"] >= MIN_COSINE
    assert report["image_int8"] is False and report["image_int8_cosine"] is None
    assert report["encoders_bytes"] > 0

    manifest = json.loads((own_models / "hanclip.json").read_text())
    assert manifest["encoders"] == {
        "image": "encoders/image",
        "text": "encoders/text",
        "image_int8": False,
    }
    assert {k: v for k, v in manifest.items() if k != "encoders"} == before
    spec = read_bundle(own_models)
    assert spec.image_export == (own_models / "encoders" / "image").resolve()
    assert (spec.image_export / "fast_image.json").is_file()
    assert (spec.text_export / "fast_text.json").is_file()
    # The encoders are the same space: the fingerprints do not move.
    assert spec.image_fingerprint == resolve_bundle(str(own_models)).image_fingerprint
    assert not list(own_models.glob(".encoders.tmp-*"))


def test_a_second_export_changes_nothing_unless_forced(cli, exported: Path) -> None:
    stamp = (exported / "encoders" / "image" / "fast_image.json").stat().st_mtime_ns
    again = cli("export", exported, "--json")
    assert again.exit_code == 0 and again.json()["already"] is True
    assert (exported / "encoders" / "image" / "fast_image.json").stat().st_mtime_ns == stamp
    forced = cli("export", exported, "--force", "--json")
    assert forced.exit_code == 0 and forced.json()["already"] is False
    text = cli("export", exported)
    assert text.exit_code == 0 and "carries its ONNX encoders already" in text.stdout


def _run_fresh(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    """`hanclip ARGS` in a fresh interpreter; its exit code, output, and which heavy modules
    it imported by the end."""
    script = (
        "import json, sys\n"
        "from hanclip_cli.entry import main\n"
        f"sys.argv = ['hanclip', *{args!r}]\n"
        "code = 0\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code or 0\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('@@' + json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd
    )
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1].removeprefix("@@"))
    report["stdout"] = "\n".join(lines[:-1])
    report["stderr"] = done.stderr
    return report


def test_a_copied_bundle_indexes_and_searches_without_torch(
    exported: Path, photos: Path, tmp_path: Path
) -> None:
    """The bundle moved elsewhere, its source models deleted, an empty cache: the bundle's own
    encoders do all the work, and neither torch nor open_clip is ever imported."""
    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(exported, copy)
    shutil.rmtree(tmp_path / "models")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HANCLIP_CACHE": str(tmp_path / "empty-cache"),
        "HANCLIP_FAST_CLI": "1",
    }
    library = tmp_path / "library"
    index = _run_fresh(
        ["index", str(photos), "--model", str(copy), "--library", str(library), "--json"],
        env,
        tmp_path,
    )
    assert index["code"] == 0, index["stderr"]
    assert index["heavy"] == []
    report = json.loads(index["stdout"])
    assert report["added"] == 8 and report["failed"] == 0

    search = _run_fresh(
        ["search", "바다 위 노을", "--library", str(library), "--json", "-n", "3"], env, tmp_path
    )
    assert search["code"] == 0, search["stderr"]
    assert search["heavy"] == []
    assert [hit["rank"] for hit in json.loads(search["stdout"])] == [1, 2, 3]
    assert not (tmp_path / "empty-cache" / "fast-image").exists()


def test_onnx_and_torch_index_the_same_vectors(
    cli, exported: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library indexed through torch is the same space as one indexed through ONNX: its
    vectors agree (cosine >= 0.999) and switching to the exported bundle embeds nothing."""
    monkeypatch.setenv("HANCLIP_FAST_IMAGE", "0")
    torch_model = load_bundle(exported)
    paths = sorted(p for p in photos.rglob("*") if p.is_file())
    through_torch = torch_model.raw_image_embeddings([str(p) for p in paths])
    assert torch_model.image_backend == "torch"
    monkeypatch.delenv("HANCLIP_FAST_IMAGE")
    onnx_model = load_bundle(exported)
    through_onnx = onnx_model.raw_image_embeddings([str(p) for p in paths])
    assert onnx_model.image_backend == "onnx" and onnx_model.fast_image_error is None
    assert np.einsum("ij,ij->i", through_torch, through_onnx).min() >= MIN_COSINE

    library = tmp_path / "library"
    monkeypatch.setenv("HANCLIP_FAST_IMAGE", "0")
    first = cli("index", photos, "--library", library, "--model", exported, "--json")
    assert first.exit_code == 0, first.stderr
    assert "went through torch" in first.stderr and "HANCLIP_FAST_IMAGE=0" in first.stderr
    monkeypatch.delenv("HANCLIP_FAST_IMAGE")
    again = cli("index", photos, "--library", library, "--model", exported, "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["unchanged"] == 8 and again.json()["added"] == 0


def test_a_bundle_without_encoders_exports_to_the_cache_on_first_use(
    tiny, photos: Path, library: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_bundle(tiny.plain_bundle)
    assert model.image_backend == "onnx"  # the cache's export, made now or earlier
    assert not model.image_encoder.loaded or model.fast_image_error is None

    def refuse(self, images, batch_size=32):
        raise AssertionError("photos went through torch")

    monkeypatch.setattr(ClipEncoder, "embed_images", refuse)
    result = cli("index", photos, "--library", library, "--model", tiny.plain_bundle, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 8
    assert "went through torch" not in result.stderr


def test_an_export_that_fails_falls_back_to_torch_and_says_why(
    own_models: Path, photos: Path, library: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args, **kwargs):
        raise BundleError("export of the tiny model disagrees with open_clip (cosine 0.5)")

    monkeypatch.setattr("hanclip_model.fast_image.cache.ensure_fast_image", refused)
    result = cli("index", photos, "--library", library, "--model", own_models, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 8
    line = "note: photos went through torch, not ONNX Runtime: export of the tiny model"
    assert line in result.stderr


def _without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a slim install: torch is not there (the real one is checked by .ci/slim)."""
    monkeypatch.setattr(device_module, "torch_available", lambda: False)
    monkeypatch.setattr(model_module, "torch_available", lambda: False)


def test_without_torch_an_unexported_model_is_one_line_naming_the_extra(
    own_models: Path, photos: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path / "empty-cache"))
    _without_torch(monkeypatch)
    library = tmp_path / "library"
    result = cli("index", photos, "--library", library, "--model", own_models)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs torch, which is not installed" in lines[0]
    assert "pip install 'hanclip[train]'" in lines[0] and "hanclip export" in lines[0]
    assert not library.exists()  # nothing was created for a model that cannot work


def test_without_torch_an_exported_bundle_still_works(
    exported: Path, photos: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path / "empty-cache"))
    _without_torch(monkeypatch)
    library = tmp_path / "library"
    result = cli("index", photos, "--library", library, "--model", exported, "--json")
    assert result.exit_code == 0, result.stderr
    search = cli("search", "고양이", "--library", library, "--json")
    assert search.exit_code == 0 and len(search.json()) == 8
    export = cli("export", exported, "--force")
    assert export.exit_code != 0 and "hanclip export needs torch" in export.stderr


def test_int8_images_are_kept_only_when_accurate_and_are_their_own_space(
    cli, exported: Path, photos: Path, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    assert cli("index", photos, "--library", library, "--model", exported).exit_code == 0
    fp32 = read_bundle(exported)
    result = cli("export", exported, "--quantize-images", "--json")
    if result.exit_code != 0:  # the tiny random model may stray: then nothing changed
        assert "strays too far from fp32" in result.stderr
        assert read_bundle(exported) == fp32
        return
    report = result.json()
    assert report["image_int8"] is True and report["image_int8_cosine"] >= MIN_INT8_COSINE
    int8 = read_bundle(exported)
    assert int8.image_int8 and int8.image_fingerprint != fp32.image_fingerprint
    assert load_bundle(exported).raw_image_embeddings([str(photos / "고양이.png")]).shape == (1, 32)
    # The library holds fp32 vectors: it does not mix them with int8 ones.
    mixed = cli("index", photos, "--library", library, "--model", exported)
    assert mixed.exit_code != 0 and "--reembed" in mixed.stderr
    moved = cli("index", photos, "--library", library, "--model", exported, "--reembed", "--json")
    assert moved.exit_code == 0 and moved.json()["added"] == 8


def test_quantizing_leaves_the_root_logger_as_it_was(exported: Path) -> None:
    """ONNX Runtime's quantizer advises through `logging.warning`: that must neither reach the
    user nor leave the root logger a stderr handler for the rest of the process."""
    root = logging.getLogger()
    before = list(root.handlers)
    root.handlers.clear()  # as in a process that configured no logging
    try:
        try:
            quantize_image_encoder(exported / IMAGE_ENCODER_DIR)
        except BundleError as exc:  # the tiny random model may stray: still quiet
            assert "strays too far from fp32" in str(exc)
        assert root.handlers == []
    finally:
        root.handlers[:] = before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["mclip"], "built-in model with no folder of its own"),
        (["{bundle}", "--out", "{tmp}/x"], "--out is for built-in models"),
        (["{tmp}/nowhere"], "unknown model"),
    ],
)
def test_export_errors_are_one_line(cli, own_models: Path, tmp_path: Path, args, words) -> None:
    given = [a.format(bundle=own_models, tmp=tmp_path) for a in args]
    result = cli("export", *given)
    assert result.exit_code != 0
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_built_in_export_refuses_a_folder_holding_something_else(cli, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "사진.jpg").write_bytes(b"x")
    result = cli("export", "mclip", "--out", out)
    assert result.exit_code != 0 and "other files in it" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["사진.jpg"]


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ("not an object", "'encoders' must be an object"),
        ({"image": 3}, "encoders 'image' must be a folder name"),
        ({"image": "missing"}, "ONNX image encoder"),
        ({"text": "encoders/text", "image_int8": True}, "'image_int8' needs an 'image'"),
        ({"image": "encoders/image", "image_int8": "yes"}, "'image_int8' must be true or false"),
    ],
)
def test_a_bad_encoders_block_is_a_bundle_error(exported: Path, block, words: str) -> None:
    manifest = exported / "hanclip.json"
    data = json.loads(manifest.read_text())
    data["encoders"] = block
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=words.replace("(", r"\(").replace("'", "'")):
        read_bundle(exported)


def test_a_cuda_device_uses_onnx_runtimes_provider_when_it_has_one(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without onnxruntime-gpu (as here), CUDA goes to torch as before, saying why; with it,
    the session is opened with the CUDA provider first."""
    model = load_bundle(exported, device="cuda")
    assert model._onnx_image_device() is None
    assert "no provider" in (model.fast_image_error or "")

    monkeypatch.setattr(model_module, "onnx_cuda_available", lambda: True)
    opened: dict[str, str] = {}

    def fake_session(path, *, preoptimized=False, device="cpu", **kwargs):
        opened.update(path=Path(path).name, device=device)
        raise BundleError("stop here")

    monkeypatch.setattr(fast_image_runtime, "inference_session", fake_session)
    model = load_bundle(exported, device="cuda:1")
    assert model._onnx_image_device() == "cuda:1"
    with pytest.raises(BundleError):
        fast_image_runtime.FastImageEncoder.load(model.spec.image_export, device="cuda:1")
    # The plain graph on CUDA: the pre-optimised one was fused for the CPU.
    assert opened == {"path": "encoder.onnx", "device": "cuda:1"}


def test_train_export_writes_the_encoders_into_the_trained_bundle(
    cli, tiny, photos: Path, tmp_path: Path
) -> None:
    english = tmp_path / "en.txt"
    english.write_text("\n".join(["a sunset over the sea", "a cute cat", "a dog"] * 6), "utf-8")
    korean = tmp_path / "ko.txt"
    korean.write_text("\n".join(["바다 위의 노을", "귀여운 고양이", "공원의 강아지"] * 5), "utf-8")
    out = tmp_path / "trained"
    args = [
        "train", "--english", english, "--korean", korean, "--images", photos,
        "--base-model", tiny.heads_bundle, "--epochs", "1", "--batch-size", "8",
        "--cache-dir", tmp_path / "banks", "--out", out, "--export", "--json",
    ]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    export = result.json()["export"]
    assert export["bundle"] == str(out.resolve()) and export["image_min_cosine"] >= MIN_COSINE
    spec = read_bundle(out)
    assert spec.image_export is not None and spec.text_export is not None
    assert spec.heads_path is not None  # the trained heads stay
