"""`hanclip train` end to end: embeddings mode on a synthetic world, corpora mode on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hanclip_model import load_bundle
from hanclip_model.encoders import TextEncoder
from trainer.synthetic import make_world


def _recall_at_1(queries: np.ndarray, gallery: np.ndarray) -> float:
    best = np.argmax(queries @ gallery.T, axis=1)
    return float(np.mean(best == np.arange(len(queries))))


@pytest.fixture(scope="module")
def world_files(tmp_path_factory) -> tuple[Path, object]:
    world = make_world(2000, 2000, 2000, 500, d_img=128, d_txt=96, seed=0)
    folder = tmp_path_factory.mktemp("emb")
    for name, array in {
        "eI.npy": world.banks.english_clip,
        "eK.npy": world.banks.english_text,
        "k.npy": world.banks.korean_bank,
        "v.npy": world.banks.image_bank,
    }.items():
        np.save(folder / name, np.asarray(array, dtype=np.float32))
    return folder, world


def _embedding_args(folder: Path) -> list:
    return [
        "--english-clip-emb", folder / "eI.npy",
        "--english-text-emb", folder / "eK.npy",
        "--korean-emb", folder / "k.npy",
        "--image-emb", folder / "v.npy",
    ]  # fmt: skip


def test_train_from_embeddings_aligns_korean_and_images(cli, world_files, tmp_path):
    folder, world = world_files
    out = tmp_path / "bundle"
    result = cli(
        "train", *_embedding_args(folder),
        "--image-model", "ViT-B-32:openai",
        "--text-model", "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        "--epochs", "4", "--batch-size", "128", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["banks"] == {"english_captions": 2000, "images": 2000, "korean_captions": 2000}
    assert len(summary["loss_history"]) == 4
    assert summary["loss_history"][-1] < summary["loss_history"][0]

    manifest = json.loads((out / "hanclip.json").read_text())
    assert manifest["format"] == 1 and manifest["heads"] == "heads.safetensors"
    assert manifest["image_model"] == "ViT-B-32:openai"
    assert manifest["training"]["hyperparameters"]["epochs"] == 4
    assert not (out / ".train-state").exists()

    model = load_bundle(out)
    images = model.project_images(world.test_images)
    korean = model.project_texts(world.test_korean)
    chance = 1 / len(images)
    assert _recall_at_1(images, korean) >= 0.5 > 20 * chance
    assert _recall_at_1(korean, images) >= 0.5


def test_train_rejects_mixed_or_incomplete_inputs(cli, world_files, tmp_path, monkeypatch):
    folder, _ = world_files
    both = cli("train", *_embedding_args(folder), "--english", folder / "x.txt", "--out", tmp_path)
    assert both.exit_code == 2 and "either corpora" in both.stderr
    partial = cli("train", *_embedding_args(folder)[:4], "--out", tmp_path / "b")
    assert partial.exit_code == 2 and "--korean-emb, --image-emb" in partial.stderr

    np.save(tmp_path / "short.npy", np.ones((10, 96), dtype=np.float32))
    args = _embedding_args(folder)
    args[3] = tmp_path / "short.npy"
    mismatch = cli("train", *args, "--out", tmp_path / "c")
    assert mismatch.exit_code == 2 and "same English caption" in mismatch.stderr
    assert len(mismatch.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def _write_corpora(folder: Path) -> tuple[Path, Path]:
    english = folder / "en.txt"
    english.write_text(
        "\n".join(
            ["a photo of the sea at sunset", "a cute cat sleeping", "a dog running in the park"] * 6
        ),
        encoding="utf-8",
    )
    korean = folder / "ko.jsonl"
    lines = [{"text": t} for t in ["바다 위의 노을", "귀여운 고양이", "공원의 강아지"] * 5]
    korean.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), "utf-8")
    return english, korean


def test_train_from_corpora_writes_a_usable_bundle(cli, tiny, photos, tmp_path, monkeypatch):
    english, korean = _write_corpora(tmp_path)
    out, cache = tmp_path / "trained", tmp_path / "cache"
    args = [
        "train", "--english", english, "--korean", korean, "--images", photos,
        "--base-model", tiny.heads_bundle, "--epochs", "2", "--batch-size", "8",
        "--cache-dir", cache, "--out", out, "--json",
    ]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.json()["banks"] == {"english_captions": 18, "images": 8, "korean_captions": 15}
    assert len(list(cache.glob("*.npy"))) == 4

    manifest = json.loads((out / "hanclip.json").read_text())
    assert manifest["text_model"] == str(tiny.text_plain)
    model = load_bundle(out)
    assert model.embed_texts(["바다"]).shape == (1, 32)

    # The banks are cached: a second run encodes nothing.
    def refuse(self, texts, batch_size=64):
        raise AssertionError("re-encoded a cached bank")

    monkeypatch.setattr(TextEncoder, "embed", refuse)
    again = cli(*args[:-3], "--out", tmp_path / "again", "--json")
    assert again.exit_code == 0, again.stderr
    monkeypatch.undo()

    library = tmp_path / "lib"
    assert cli("index", photos, "--library", library, "--model", out).exit_code == 0
    search = cli("search", "바다 위 노을", "--library", library, "--model", out, "--json")
    assert search.exit_code == 0 and len(search.json()) == 8


def test_missing_caption_file_is_a_one_line_error(cli, tiny, photos, tmp_path):
    result = cli(
        "train", "--english", tmp_path / "nope.txt", "--korean", tmp_path / "nope.txt",
        "--images", photos, "--base-model", tiny.heads_bundle, "--out", tmp_path / "o",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "caption file not found" in result.stderr
