"""The built-ins whose text side is the open_clip model's own text tower (`open_clip-text:`):
their names, and tiny versions of each text-tower kind (XLM-R, NLLB, SigLIP 2) run index ->
search through the torch path offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hanclip_eval.tiny_models import TINY_CLIP_TEXT_KINDS, build_tiny_clip_text_model
from hanclip_model.bundle import (
    BUILTIN_BUNDLES,
    SEARCH_BUILTINS,
    clip_text_model,
    clip_text_source,
    read_bundle,
    resolve_bundle,
)
from hanclip_model.encoders import QUERY_LANGUAGE, ClipEncoder, TextEncoder
from hanclip_model.errors import BundleError

OPEN_CLIP_BUILTINS = {
    "xlmr-b32": "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k",
    "siglip2-b32": "ViT-B-32-SigLIP2-256:webli",
    "siglip2-b16": "ViT-B-16-SigLIP2-256:webli",
    "nllb-siglip-base": "nllb-clip-base-siglip:mrl",
    "nllb-siglip-large": "nllb-clip-large-siglip:mrl",
}


@pytest.fixture(scope="module")
def tiny_towers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("clip-text")
    return {kind: build_tiny_clip_text_model(root / kind, kind) for kind in TINY_CLIP_TEXT_KINDS}


def _bundle(directory: Path, model_spec: str, name: str) -> Path:
    """A bundle written as an outside tool would: plain JSON, both towers one model's."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": 1,
        "name": name,
        "image_model": model_spec,
        "text_model": clip_text_model(model_spec),
        "heads": None,
    }
    (directory / "hanclip.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


# -- names -----------------------------------------------------------------------------------


def test_the_new_built_ins_name_open_clip_models_open_clip_knows():
    import open_clip

    known = set(open_clip.list_pretrained())
    for name, model in OPEN_CLIP_BUILTINS.items():
        spec = resolve_bundle(name)
        assert name in SEARCH_BUILTINS and spec.image_model == model
        assert clip_text_source(spec.text_model) == model and spec.heads_path is None
        assert tuple(model.split(":")) in known
    # mclip and the train base are what they were.
    assert BUILTIN_BUNDLES["mclip"].text_model.endswith("clip-ViT-B-32-multilingual-v1")
    assert clip_text_source(BUILTIN_BUNDLES["mclip"].text_model) is None
    assert "hanclip-base" not in SEARCH_BUILTINS


def test_a_relative_text_tower_resolves_against_the_bundle(tiny_towers, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_towers["xlmr"].removeprefix("local-dir:"), bundle / "model")
    manifest = {
        "format": 1,
        "image_model": "local-dir:model",
        "text_model": "open_clip-text:local-dir:model",
        "heads": None,
    }
    (bundle / "hanclip.json").write_text(json.dumps(manifest), encoding="utf-8")
    spec = read_bundle(bundle)
    assert spec.text_model == clip_text_model(spec.image_model)
    assert spec.image_model == "local-dir:" + str((bundle / "model").resolve())
    manifest["text_model"] = "open_clip-text:"
    (bundle / "hanclip.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match="names no open_clip model"):
        read_bundle(bundle)


# -- the torch encoders ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", TINY_CLIP_TEXT_KINDS)
def test_the_text_tower_is_the_open_clip_models_own(tiny_towers, kind):
    import torch

    spec = tiny_towers[kind]
    encoder = TextEncoder(clip_text_model(spec), device="cpu")
    texts = ["바다 위 노을", "a cat on the sofa"]
    vectors = encoder.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (2, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert encoder.embed([]).shape == (0, encoder.dim)
    # The same vectors as open_clip's own tokenizer + encode_text on the whole model.
    clip = ClipEncoder(spec, device="cpu")
    assert clip.dim == encoder.dim
    tokenizer = clip._clip.tokenizer
    if kind == "nllb":
        tokenizer.tokenizer.src_lang = QUERY_LANGUAGE
    with torch.inference_mode():
        reference = clip.model.encode_text(tokenizer(texts), normalize=True).numpy()
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_nllb_queries_are_marked_korean(tiny_towers):
    encoder = TextEncoder(clip_text_model(tiny_towers["nllb"]), device="cpu")
    encoder.embed(["바다"])
    tokenizer = encoder._tower.tokenizer
    first = tokenizer(["바다"])[0][0].item()
    assert tokenizer.tokenizer.convert_ids_to_tokens(first) == QUERY_LANGUAGE


def test_a_sentence_transformers_loader_refuses_a_text_tower(tiny_towers):
    from hanclip_model.encoders import load_sentence_transformer

    with pytest.raises(BundleError, match="open_clip text tower"):
        load_sentence_transformer(clip_text_model(tiny_towers["xlmr"]), "cpu")


# -- index -> search ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TINY_CLIP_TEXT_KINDS)
def test_index_then_search_through_torch(
    cli, tiny_towers, photos, library, tmp_path, monkeypatch, kind
):
    monkeypatch.setenv("HANCLIP_FAST_TEXT", "0")
    monkeypatch.setenv("HANCLIP_FAST_IMAGE", "0")
    bundle = _bundle(tmp_path / "bundle", tiny_towers[kind], f"tiny-{kind}")
    index = cli("index", photos, "--library", library, "--model", bundle, "--json")
    assert index.exit_code == 0, index.stderr
    assert index.json()["added"] == 8
    search = cli("search", "바다 위 노을", "--library", library, "--model", bundle, "--json")
    assert search.exit_code == 0, search.stderr
    hits = search.json()
    assert len(hits) == 8
    # The scores are the cosines of the torch text vector with the stored photos'.
    from hanclip_model import load_bundle

    model = load_bundle(bundle, device="cpu")
    query = model.embed_texts(["바다 위 노을"])[0]
    photos_vectors = model.embed_images([h["path"] for h in hits])
    np.testing.assert_allclose([h["score"] for h in hits], photos_vectors @ query, atol=1e-4)


@pytest.mark.parametrize("kind", TINY_CLIP_TEXT_KINDS)
def test_index_then_search_with_the_default_paths(
    cli, tiny_towers, photos, library, tmp_path, kind
):
    """Whatever the ONNX paths make of these towers (an export, or a refusal kept as the
    reason), index and search work."""
    bundle = _bundle(tmp_path / "bundle", tiny_towers[kind], f"tiny-{kind}")
    index = cli("index", photos, "--library", library, "--model", bundle, "--json")
    assert index.exit_code == 0, index.stderr
    search = cli("search", "고양이", "--library", library, "--model", bundle, "--json")
    assert search.exit_code == 0, search.stderr
    assert len(search.json()) == 8
