"""Where `hanclip train`'s corpora come from: the library's own photos as the image bank (no
photo opened), any target language (Vietnamese), `--limit`, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hanclip_eval.tiny_models import build_tiny_open_clip, write_bundle_dir

ENGLISH = ["a photo of the sea at sunset", "a cute cat sleeping", "a dog running in the park"]
KOREAN = ["바다 위의 노을", "귀여운 고양이", "공원의 강아지"]
VIETNAMESE = ["hoàng hôn trên biển", "con mèo dễ thương đang ngủ", "con chó chạy trong công viên"]


def _captions(folder: Path, name: str, lines: list[str], times: int) -> Path:
    path = folder / name
    path.write_text("\n".join(lines * times), encoding="utf-8")
    return path


def _train(cli, *args) -> object:
    return cli("train", "--epochs", "2", "--batch-size", "8", "--json", *args)


@pytest.fixture
def indexed(cli, tiny, photos, tmp_path) -> Path:
    library = tmp_path / "library"
    result = cli("index", photos, "--library", library, "--model", tiny.heads_bundle)
    assert result.exit_code == 0, result.stderr
    return library


def test_the_library_is_the_image_bank_and_no_photo_is_opened(
    cli, tiny, photos, indexed, tmp_path, monkeypatch
) -> None:
    english = _captions(tmp_path, "en.txt", ENGLISH, 6)
    korean = _captions(tmp_path, "ko.txt", KOREAN, 5)
    # The photos are made unreadable, and reading any image would fail the test.
    for photo in photos.rglob("*.*"):
        photo.write_bytes(b"not an image any more")

    def no_photo(*args, **kwargs):
        raise AssertionError("a photo was opened")

    import PIL.Image

    import hanclip_model.images as images
    import trainer.banks as banks

    monkeypatch.setattr(images, "load_image", no_photo)
    monkeypatch.setattr(banks, "load_image", no_photo, raising=False)
    monkeypatch.setattr(PIL.Image, "open", no_photo)
    out = tmp_path / "mine"
    result = _train(
        cli, "--english", english, "--target", korean, "--images-from-library",
        "--library", indexed, "--base-model", tiny.heads_bundle,
        "--cache-dir", tmp_path / "cache", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["banks"] == {"english_captions": 18, "images": 8, "korean_captions": 15}
    banks_info = json.loads((out / "hanclip.json").read_text())["training"]["banks"]
    assert banks_info["image_source"] == f"library {indexed}" and banks_info["images"] == 8
    assert not list((tmp_path / "cache").glob("images-*"))  # no image bank was encoded


def test_the_library_must_hold_the_base_models_image_space(cli, tiny, indexed, tmp_path) -> None:
    other_clip = build_tiny_open_clip(tmp_path / "other-clip", embed_dim=32, seed=5)
    other = write_bundle_dir(tmp_path / "other", other_clip, tiny.text_plain, heads=None)
    english = _captions(tmp_path, "en.txt", ENGLISH, 2)
    korean = _captions(tmp_path, "ko.txt", KOREAN, 2)
    result = _train(
        cli, "--english", english, "--target", korean, "--images-from-library",
        "--library", indexed, "--base-model", other, "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "were embedded with image model" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--images-from-library", "--images", "PHOTOS"], "one image source"),
        ([], "missing an image source"),
        (["--images-from-library", "--library", "NOWHERE"], "no library at"),
    ],
)
def test_image_source_errors_are_one_line(cli, tiny, photos, tmp_path, extra, words) -> None:
    english = _captions(tmp_path, "en.txt", ENGLISH, 2)
    korean = _captions(tmp_path, "ko.txt", KOREAN, 2)
    extra = [{"PHOTOS": photos, "NOWHERE": tmp_path / "nowhere"}.get(arg, arg) for arg in extra]
    result = _train(
        cli, "--english", english, "--target", korean, *extra,
        "--base-model", tiny.heads_bundle, "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


def test_a_vietnamese_target_trains_and_searches(cli, tiny, photos, tmp_path) -> None:
    english = _captions(tmp_path, "en.txt", ENGLISH, 6)
    vietnamese = _captions(tmp_path, "vi.txt", VIETNAMESE, 5)
    out = tmp_path / "hanclip-vi"
    result = _train(
        cli, "--english", english, "--target", vietnamese, "--language", "vi",
        "--images", photos, "--base-model", tiny.heads_bundle,
        "--cache-dir", tmp_path / "cache", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["language"] == "vi"
    assert summary["banks"]["korean_captions"] == 15  # the target bank, whatever its language
    assert list((tmp_path / "cache").glob("vi-text-*.npy"))
    manifest = json.loads((out / "hanclip.json").read_text())
    assert manifest["language"] == manifest["training"]["banks"]["language"] == "vi"
    # The search path takes the bundle as it is: a Vietnamese query finds the photos.
    library = tmp_path / "library"
    assert cli("index", photos, "--library", library, "--model", out).exit_code == 0
    found = cli("search", "hoàng hôn trên biển", "--library", library, "--json", "-n", "3")
    assert found.exit_code == 0, found.stderr
    assert len(found.json()) == 3


def test_korean_is_the_first_name_of_target_and_limit_cuts_each_corpus(
    cli, tiny, photos, tmp_path
) -> None:
    english = _captions(tmp_path, "en.txt", ENGLISH, 6)
    korean = _captions(tmp_path, "ko.txt", KOREAN, 5)
    result = _train(
        cli, "--english", english, "--korean", korean, "--limit", "10", "--images", photos,
        "--base-model", tiny.heads_bundle, "--cache-dir", tmp_path / "cache",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["banks"] == {"english_captions": 10, "images": 8, "korean_captions": 10}
    assert summary["language"] == "ko"


def test_recipe_and_caption_files_do_not_mix(cli, tiny, photos, tmp_path) -> None:
    english = _captions(tmp_path, "en.txt", ENGLISH, 2)
    result = _train(
        cli, "--recipe", "anything", "--english", english, "--images", photos,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 2 and "--recipe brings its own captions" in result.stderr
