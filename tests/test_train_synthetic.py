"""Training on a synthetic world: a real effect, determinism, resuming, and the bundle."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hanclip_model.bundle import read_bundle
from hanclip_model.errors import HanclipError
from hanclip_model.heads import load_heads
from trainer.heads import HanclipHeads
from trainer.synthetic import SyntheticWorld, make_world
from trainer.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainProgress,
    TrainResult,
    epoch_batches,
    init_heads,
    train_heads,
    write_trained_bundle,
)

# Small dimensions and a small world keep the whole file to seconds on two CPU cores.
D_IMG, D_TXT, N_TEST = 128, 96, 500
CONFIG = TrainConfig(epochs=4, batch_size=128, seed=0, device="cpu")

# Tensors this small gain nothing from two threads (see conftest.py).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def recall_at_1(query: np.ndarray, gallery: np.ndarray) -> float:
    """Share of queries whose most similar gallery row is their own pair (same index)."""
    return float(np.mean(np.argmax(query @ gallery.T, axis=1) == np.arange(len(query))))


def test_recall_at_1() -> None:
    gallery = np.eye(3, dtype=np.float32)
    assert recall_at_1(gallery, gallery) == 1.0
    assert recall_at_1(gallery[[1, 0, 2]], gallery) == pytest.approx(1 / 3)


def both_ways_recall(heads: HanclipHeads, world: SyntheticWorld) -> tuple[float, float]:
    with torch.no_grad():
        images = heads.project_image(torch.from_numpy(world.test_images)).numpy()
        korean = heads.project_text(torch.from_numpy(world.test_korean)).numpy()
    return recall_at_1(images, korean), recall_at_1(korean, images)


def assert_same_weights(a: HanclipHeads, b: HanclipHeads) -> None:
    state_b = b.state_dict()
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, state_b[name]), name


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return make_world(2000, 2000, 2000, N_TEST, d_img=D_IMG, d_txt=D_TXT, seed=0)


@pytest.fixture(scope="module")
def trained(world: SyntheticWorld) -> TrainResult:
    return train_heads(world.banks, CONFIG)


def test_untrained_heads_retrieve_at_chance(world: SyntheticWorld) -> None:
    heads = init_heads(D_IMG, D_TXT, D_IMG, seed=0).eval()
    image_to_korean, korean_to_image = both_ways_recall(heads, world)
    assert image_to_korean < 0.02 and korean_to_image < 0.02


def test_trained_heads_retrieve_korean_for_images(
    world: SyntheticWorld, trained: TrainResult
) -> None:
    assert 1 / N_TEST <= 0.01  # chance level
    image_to_korean, korean_to_image = both_ways_recall(trained.heads, world)
    assert image_to_korean >= 0.5 and korean_to_image >= 0.5
    assert not trained.heads.training
    assert len(trained.loss_history) == CONFIG.epochs
    assert trained.loss_history[-1] < trained.loss_history[0]
    assert set(trained.stage_seconds) == {"pseudo_pairs", "training"}


def test_training_is_deterministic(world: SyntheticWorld) -> None:
    banks = replace(
        world.banks,
        english_clip=world.banks.english_clip[:300],
        english_text=world.banks.english_text[:300],
    )
    config = replace(CONFIG, epochs=2)
    first = train_heads(banks, config)
    assert_same_weights(first.heads, train_heads(banks, config).heads)
    other_seed = train_heads(banks, replace(config, seed=1)).heads
    assert not torch.equal(first.heads.f1[0].weight, other_seed.f1[0].weight)


def test_bad_banks_and_config_are_user_errors(world: SyntheticWorld) -> None:
    with pytest.raises(HanclipError, match="same captions"):
        replace(world.banks, english_text=world.banks.english_text[:10])
    with pytest.raises(HanclipError, match="same CLIP model"):
        replace(world.banks, image_bank=world.banks.image_bank[:, :64])
    with pytest.raises(HanclipError, match="batch size"):
        TrainConfig(batch_size=1)
    with pytest.raises(HanclipError, match="tau_inter"):
        TrainConfig(tau_inter=0.0)


def test_epoch_batches_drop_a_last_single_row() -> None:
    batches = epoch_batches(9, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]
    assert [len(b) for b in epoch_batches(10, 4, seed=0, epoch=0)] == [4, 4, 2]
    assert sorted(np.concatenate(epoch_batches(10, 4, seed=0, epoch=1))) == list(range(10))
    assert not np.array_equal(epoch_batches(10, 10, 0, 0)[0], epoch_batches(10, 10, 0, 1)[0])


def test_interrupted_run_resumes_to_the_same_result(
    world: SyntheticWorld, trained: TrainResult, tmp_path: Path
) -> None:
    def interrupt_in_epoch_3(update: TrainProgress) -> None:
        if update.stage == "training" and update.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_heads(world.banks, CONFIG, checkpoint_dir=tmp_path, progress=interrupt_in_epoch_3)
    assert (tmp_path / CHECKPOINT_NAME).is_file()

    resumed = train_heads(world.banks, CONFIG, checkpoint_dir=tmp_path)
    assert resumed.epochs_resumed == 2
    assert resumed.loss_history == trained.loss_history
    assert_same_weights(resumed.heads, trained.heads)

    finished = train_heads(world.banks, CONFIG, checkpoint_dir=tmp_path)
    assert finished.epochs_resumed == CONFIG.epochs
    assert_same_weights(finished.heads, trained.heads)

    with pytest.raises(HanclipError, match="config"):
        train_heads(world.banks, replace(CONFIG, lr=5e-4), checkpoint_dir=tmp_path)


def test_bundle_heads_agree_in_numpy_and_torch(
    world: SyntheticWorld, trained: TrainResult, tmp_path: Path
) -> None:
    manifest = write_trained_bundle(
        trained,
        tmp_path / "bundle",
        name="synthetic",
        image_model="ViT-B-32:openai",
        text_model="paraphrase-multilingual-MiniLM-L12-v2",
        cfg=CONFIG,
        banks_info=world.banks.sizes(),
    )
    spec = read_bundle(manifest.parent)
    assert spec.heads_path == (tmp_path / "bundle" / "heads.safetensors").resolve()
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["dims"] == {"image": D_IMG, "text": D_TXT, "output": D_IMG}
    training = data["training"]
    assert training["hyperparameters"]["batch_size"] == CONFIG.batch_size
    assert training["banks"] == {
        "english_captions": 2000,
        "images": 2000,
        "korean_captions": 2000,
    }
    assert training["loss"]["last"] == trained.loss_history[-1]

    numpy_heads = load_heads(spec.heads_path)
    with torch.no_grad():
        torch_images = trained.heads.project_image(torch.from_numpy(world.test_images)).numpy()
        torch_korean = trained.heads.project_text(torch.from_numpy(world.test_korean)).numpy()
    np.testing.assert_allclose(numpy_heads.image(world.test_images), torch_images, atol=1e-5)
    np.testing.assert_allclose(numpy_heads.text(world.test_korean), torch_korean, atol=1e-5)
