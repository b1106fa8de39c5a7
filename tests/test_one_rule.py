"""The helpers that hold one rule each: device, cores, local path or hub id, atomic writes,
NFC, and the error kinds that callers tell apart by type."""

from __future__ import annotations

import hashlib
import os
import unicodedata

import pytest

from hanclip_model.device import pick_device, usable_cores
from hanclip_model.errors import BundleError, UnknownModel
from hanclip_model.files import atomic_path, atomic_write_text, file_sha256, replace_dir
from hanclip_model.sources import is_local, require_local_dir, resolve_local
from hanclip_model.texts import clean_text, nfc_texts


def test_device_flag_then_env_then_hardware(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("HANCLIP_DEVICE", raising=False)
    assert pick_device() == "cuda"
    monkeypatch.setenv("HANCLIP_DEVICE", "cpu")
    assert pick_device() == "cpu"
    assert pick_device("cuda:1") == "cuda:1"


def test_train_respects_hanclip_device(monkeypatch):
    """`train` with no --device follows HANCLIP_DEVICE, even where CUDA looks available.

    CUDA is made to look available only while the device is chosen (the optimizer asks
    torch about CUDA too, and there is none here to run on)."""
    import torch

    import trainer.retrieval
    import trainer.train
    from trainer.synthetic import make_world

    chosen = []

    def choose_with_a_gpu_in_sight(requested=None):
        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: True)
            chosen.append(pick_device(requested))
        return chosen[-1]

    monkeypatch.setattr(trainer.train, "pick_device", choose_with_a_gpu_in_sight)
    monkeypatch.setattr(trainer.retrieval, "pick_device", choose_with_a_gpu_in_sight)
    monkeypatch.setenv("HANCLIP_DEVICE", "cpu")
    world = make_world(64, 64, 64, 8, d_img=16, d_txt=12, seed=0)
    config = trainer.train.TrainConfig(epochs=1, batch_size=32)
    result = trainer.train.train_heads(world.banks, config)
    assert result.device == "cpu" and chosen and set(chosen) == {"cpu"}
    monkeypatch.delenv("HANCLIP_DEVICE")
    assert choose_with_a_gpu_in_sight() == "cuda"  # without the variable, the GPU is chosen


def test_usable_cores_follows_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_local_path_or_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bundle" / "text").mkdir(parents=True)
    assert not is_local("sentence-transformers/clip-ViT-B-32-multilingual-v1")
    assert is_local("./missing") and is_local("../x") and is_local("~/x") and is_local("/abs")
    assert is_local("text", base=tmp_path / "bundle")  # exists beside the bundle
    assert not is_local("text")  # ...but not in the working directory
    assert resolve_local("org/name") == "org/name"
    assert resolve_local("text", tmp_path / "bundle") == str(tmp_path / "bundle" / "text")
    assert resolve_local("./missing") == str(tmp_path / "missing")
    require_local_dir("org/name", "text model")  # a hub id is the hub's business
    require_local_dir(str(tmp_path / "bundle"), "text model")
    with pytest.raises(BundleError, match="text model directory not found"):
        require_local_dir("./missing", "text model")


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "hnsw.json"
    atomic_write_text(target, "첫 번째")
    atomic_write_text(target, "두 번째")
    assert target.read_text(encoding="utf-8") == "두 번째"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("killed mid-write")
    assert target.read_text(encoding="utf-8") == "두 번째"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hnsw.json"]  # no temp file left


def test_replace_dir_and_file_hash(tmp_path):
    new, target = tmp_path / "new", tmp_path / "target"
    new.mkdir()
    (new / "a").write_bytes(b"new")
    target.mkdir()
    (target / "b").write_bytes(b"old")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["a"] and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert file_sha256(target / "a") == hashlib.sha256(b"new").hexdigest()


def test_text_is_composed_where_it_comes_in():
    nfd = unicodedata.normalize("NFD", "바다 위 노을")
    assert nfd != "바다 위 노을"
    assert nfc_texts([nfd]) == ["바다 위 노을"]
    assert clean_text(f"  {nfd}\n") == "바다 위 노을"
    assert clean_text("   ") is None and clean_text(3) is None


def test_unknown_model_is_its_own_error_kind(tmp_path):
    from hanclip_eval.baselines import load_embedder
    from hanclip_model.bundle import resolve_bundle

    with pytest.raises(UnknownModel, match="unknown model 'no-such-model'"):
        resolve_bundle("no-such-model")
    with pytest.raises(UnknownModel) as caught:
        load_embedder("no-such-model")
    assert "clip-translate" in str(caught.value) and "koclip" in str(caught.value)
    (tmp_path / "hanclip.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError) as broken:
        load_embedder(str(tmp_path))
    assert not isinstance(broken.value, UnknownModel)  # a broken bundle is not "unknown"


def test_an_error_naming_a_path_with_brackets_prints_it_as_written(capsys) -> None:
    """Messages are text, never rich markup: `[/]` or `[bold]` in a file name stays."""
    import pytest

    from hanclip_cli.common import fail, notice

    notice("skipped /사진/[bold]/a[/].jpg")
    with pytest.raises(SystemExit) as exit_info:
        fail("cannot read /사진/[/]x.jpg")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "/사진/[bold]/a[/].jpg" in err and "cannot read /사진/[/]x.jpg" in err
