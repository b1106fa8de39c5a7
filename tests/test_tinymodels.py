"""The offline test models behave like the real ones: they load through the public APIs."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from hanclip_eval.tiny_models import (
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    build_tiny_open_clip,
    build_tiny_sentence_transformer,
    write_bundle_dir,
    write_photo_folder,
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a network connection, and tell the HF stack it is offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_open_clip_loads_from_local_dir(tmp_path: Path, no_network: None) -> None:
    import open_clip

    spec = build_tiny_open_clip(tmp_path / "clip", embed_dim=16, image_size=32)
    assert spec == f"local-dir:{tmp_path / 'clip'}"
    assert (tmp_path / "clip" / OPEN_CLIP_CONFIG).is_file()
    assert (tmp_path / "clip" / OPEN_CLIP_WEIGHTS).is_file()

    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    tokenizer = open_clip.get_tokenizer(spec)
    photos = write_photo_folder(tmp_path / "photos", count=3)
    images = torch.stack([preprocess(Image.open(path)) for path in photos])
    assert images.shape == (3, 3, 32, 32)
    with torch.no_grad():
        image_features = model.encode_image(images)
        text_features = model.encode_text(tokenizer(["a cat", "바다 위 노을"]))

    assert image_features.shape == (3, 16)
    assert text_features.shape == (2, 16)
    assert not torch.allclose(image_features[0], image_features[1])
    assert not torch.allclose(text_features[0], text_features[1])


def test_open_clip_weights_are_seeded(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        build_tiny_open_clip(tmp_path / name, seed=seed)
        return load_file(tmp_path / name / OPEN_CLIP_WEIGHTS)

    first, again, other = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["visual.proj"], other["visual.proj"])


@pytest.mark.parametrize(("out_dim", "expected_dim"), [(None, 32), (24, 24)])
def test_sentence_transformer_loads_offline(
    tmp_path: Path, no_network: None, out_dim: int | None, expected_dim: int
) -> None:
    from sentence_transformers import SentenceTransformer

    directory = build_tiny_sentence_transformer(tmp_path / "text", out_dim=out_dim)
    assert directory == tmp_path / "text"

    model = SentenceTransformer(str(directory), device="cpu")
    embeddings = model.encode(["바다 위 노을", "a cat"])

    assert embeddings.shape == (2, expected_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1])


def test_sentence_transformer_is_seeded(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    def encode(name: str, seed: int) -> np.ndarray:
        directory = build_tiny_sentence_transformer(tmp_path / name, out_dim=8, seed=seed)
        return SentenceTransformer(str(directory), device="cpu").encode(["고양이 사진"])

    first, again, other = encode("a", 0), encode("b", 0), encode("c", 1)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_tokenizer_knows_korean_and_english_words(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(build_tiny_sentence_transformer(tmp_path)), device="cpu")
    words = [
        "바다",
        "노을",
        "고양이",
        "강아지",
        "산",
        "도시",
        "사진",
        "sea",
        "sunset",
        "cat",
        "dog",
        "mountain",
        "city",
        "photo",
    ]

    assert model.tokenizer.tokenize(" ".join(words)) == words
    assert 300 <= len(model.tokenizer) <= 1000
    unseen = model.tokenizer.tokenize("고양이들이 바다에서")
    assert model.tokenizer.unk_token not in unseen


def test_photo_folder_holds_distinct_readable_photos(tmp_path: Path) -> None:
    paths = write_photo_folder(tmp_path, count=8)

    assert len(paths) == 8
    assert all(path.is_file() and path.is_relative_to(tmp_path) for path in paths)
    names = {path.relative_to(tmp_path).as_posix() for path in paths}
    assert {"바다_노을.jpg", "고양이.png", "여행/산.jpg"} <= names
    if features.check("webp"):
        assert "city.webp" in names

    pixels = []
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (64, 48)
            pixels.append(image.convert("RGB").tobytes())
    assert len(set(pixels)) == len(paths)


def test_photo_folder_is_seeded(tmp_path: Path) -> None:
    def contents(name: str, seed: int) -> list[bytes]:
        return [path.read_bytes() for path in write_photo_folder(tmp_path / name, seed=seed)]

    assert contents("a", 0) == contents("b", 0)
    assert contents("a", 0) != contents("c", 1)


def test_bundle_dir_is_readable_by_hanclip(tmp_path: Path) -> None:
    from hanclip_model.bundle import read_bundle

    directory = write_bundle_dir(
        tmp_path / "bundle", "local-dir:../clip", tmp_path / "text", heads=None, name="시험"
    )

    data = json.loads((directory / "hanclip.json").read_text(encoding="utf-8"))
    assert data == {
        "format": 1,
        "name": "시험",
        "image_model": "local-dir:../clip",
        "text_model": str(tmp_path / "text"),
        "heads": None,
    }
    spec = read_bundle(directory)
    assert spec.name == "시험"
    assert spec.image_model == f"local-dir:{(tmp_path / 'clip').resolve()}"
    assert spec.text_model == str(tmp_path / "text")
