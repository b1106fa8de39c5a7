"""HanCLIP's heads on another frozen image tower (issue 25, point 4): `train --image-tower`
and the open_clip built-ins as a `--base-model`; the heads' input width follows the tower."""

from __future__ import annotations

import json

import pytest
from test_cli_train import _write_corpora

from hanclip_eval.tiny_models import build_tiny_open_clip
from hanclip_model import load_bundle
from hanclip_model.bundle import (
    BUILTIN_BUNDLES,
    SEARCH_BUILTINS,
    TRAIN_BASES,
    clip_text_source,
    train_base,
)
from trainer.heads import HanclipHeads

MINILM = BUILTIN_BUNDLES["hanclip-base"].text_model


@pytest.mark.parametrize("name", ["xlmr-b32", "siglip2-b32", "nllb-siglip-base"])
def test_an_open_clip_built_in_lends_its_image_tower_to_the_sentence_encoder(name):
    base = train_base(name)
    assert base.image_model == BUILTIN_BUNDLES[name].image_model
    assert base.text_model == MINILM and clip_text_source(base.text_model) is None


def test_an_image_tower_replaces_the_bases(tmp_path):
    by_name = train_base("hanclip-base", "siglip2-b16")
    assert by_name.image_model == "ViT-B-16-SigLIP2-256:webli" and by_name.text_model == MINILM
    by_spec = train_base("hanclip-base", "ViT-B-32:laion2b_s34b_b79k")
    assert by_spec.image_model == "ViT-B-32:laion2b_s34b_b79k"
    assert train_base("hanclip-base") == BUILTIN_BUNDLES["hanclip-base"]  # unchanged


def test_the_datacomp_base_is_for_training_only():
    base = BUILTIN_BUNDLES["hanclip-base-datacomp"]
    assert base.image_model == "ViT-B-32:datacomp_xl_s13b_b90k" and base.text_model == MINILM
    assert "hanclip-base-datacomp" in TRAIN_BASES and "hanclip-base-datacomp" not in SEARCH_BUILTINS


def test_heads_trained_on_another_tower_take_its_width(cli, tiny, photos, tmp_path):
    """A 24-d image tower in place of the tiny base's 32-d one: the heads' image side is 24
    wide, the bundle names the new tower, and it indexes and searches."""
    tower = build_tiny_open_clip(tmp_path / "tower", embed_dim=24, seed=3)
    english, korean = _write_corpora(tmp_path)
    out = tmp_path / "trained"
    result = cli(
        "train", "--english", english, "--korean", korean, "--images", photos,
        "--base-model", tiny.heads_bundle, "--image-tower", tower, "--epochs", "2",
        "--batch-size", "8", "--cache-dir", tmp_path / "cache", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "hanclip.json").read_text())
    assert manifest["image_model"] == tower and manifest["text_model"] == str(tiny.text_plain)
    heads = HanclipHeads.load(out / manifest["heads"])
    image_side, out_dim = heads.f1[0].in_features, heads.f1[-1].out_features
    assert image_side == 24
    library = tmp_path / "library"
    assert cli("index", photos, "--library", library, "--model", out).exit_code == 0
    found = cli("search", "바다 위 노을", "--library", library, "--model", out, "--json")
    assert found.exit_code == 0 and len(found.json()) == 8
    assert load_bundle(out).embed_texts(["바다"]).shape[1] == out_dim
