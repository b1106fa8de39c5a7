"""Benchmark readers on the tiny datasets of benchdata.py, one per published format."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from benchdata import (
    KOCC3M_ROWS,
    cifar_pixels,
    kocc3m_image_path,
    stl10_pixels,
    write_caltech101,
    write_cifar10,
    write_cifar100,
    write_crossmodal3600,
    write_image,
    write_jsonl,
    write_kocc3m,
    write_kocc3m_parquet,
    write_mscoco_ko,
    write_stl10,
    write_xtd10_ko,
)

from hanclip_eval.datasets import (
    DATASETS,
    DEFAULT_TEMPLATES,
    ArrayImages,
    ClassificationSet,
    RetrievalSet,
    build_prompts,
    kocc3m_image_stem,
    load_dataset,
)
from hanclip_eval.datasets.class_names import (
    CALTECH101_KO,
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    STL10_CLASSES,
)
from hanclip_model.errors import HanclipError


def _retrieval(name: str, data_dir: Path, **options) -> RetrievalSet:
    dataset = load_dataset(name, data_dir, **options)
    assert isinstance(dataset, RetrievalSet)
    return dataset


def _classification(name: str, data_dir: Path, **options) -> ClassificationSet:
    dataset = load_dataset(name, data_dir, **options)
    assert isinstance(dataset, ClassificationSet)
    return dataset


# --- MSCOCO-Korean -------------------------------------------------------------------------


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    write_mscoco_ko(tmp_path)
    return tmp_path


def test_mscoco_karpathy_test_in_karpathy_order(coco_dir):
    dataset = _retrieval("mscoco-ko", coco_dir)
    assert dataset.name == "mscoco-ko"
    assert dataset.image_paths == [
        coco_dir / "val2014/COCO_val2014_000000000004.jpg",
        coco_dir / "val2014/COCO_val2014_000000000001.jpg",
    ]
    # NFC-normalised and stripped; the blank caption is dropped.
    assert dataset.captions == ["바다 위 노을", "바다", "고양이", "매트 위의 고양이"]
    assert dataset.caption_image.tolist() == [0, 0, 1, 1]
    assert dataset.caption_image.dtype == np.int64
    assert dataset.skipped == 0
    limited = _retrieval("mscoco-ko", coco_dir, split="karpathy-test", limit=1)
    assert (limited.captions, limited.caption_image.tolist()) == (["바다 위 노을", "바다"], [0, 0])


def test_mscoco_val_is_every_val2014_record_in_file_order(coco_dir):
    dataset = _retrieval("mscoco-ko", coco_dir, split="val")
    assert [p.name[-5:] for p in dataset.image_paths] == ["1.jpg", "2.jpg", "4.jpg"]
    assert dataset.captions == ["고양이", "매트 위의 고양이", "개", "바다 위 노을", "바다"]
    assert dataset.caption_image.tolist() == [0, 0, 1, 2, 2]


def test_mscoco_missing_files_name_what_to_get(coco_dir):
    (coco_dir / "val2014/COCO_val2014_000000000001.jpg").unlink()
    with pytest.raises(HanclipError, match=r"1 of 2 images missing, the first is .*000001\.jpg"):
        load_dataset("mscoco-ko", coco_dir)
    (coco_dir / "dataset_coco.json").unlink()
    with pytest.raises(HanclipError, match=r"dataset_coco\.json not found in .*karpathy"):
        load_dataset("mscoco-ko", coco_dir)
    with pytest.raises(HanclipError) as caught:
        load_dataset("mscoco-ko", coco_dir / "nowhere")
    message = str(caught.value)
    assert message.startswith(f"MSCOCO_train_val_Korean.json not found in {coco_dir / 'nowhere'}")
    assert "https://aihub.or.kr" in message and "\n" not in message


# --- XTD10 -------------------------------------------------------------------------------


@pytest.mark.parametrize("in_images_folder", [True, False])
def test_xtd10_pairs_line_by_line(tmp_path, in_images_folder):
    write_xtd10_ko(tmp_path, images_in_folder=in_images_folder)
    images_dir = tmp_path / "images" if in_images_folder else tmp_path
    dataset = _retrieval("xtd10-ko", tmp_path)
    assert dataset.image_paths == [images_dir / "a.jpg", images_dir / "b.jpg", images_dir / "c.jpg"]
    assert dataset.captions == ["고양이 한 마리", "바다 위 노을", "눈 덮인 산"]
    assert dataset.caption_image.tolist() == [0, 1, 2]


def test_xtd10_errors(tmp_path):
    with pytest.raises(HanclipError, match="test_1kcaptions_ko.txt not found in .*XTD10"):
        load_dataset("xtd10-ko", tmp_path)
    write_xtd10_ko(tmp_path)
    (tmp_path / "test_image_names.txt").write_text("a.jpg\n", encoding="utf-8")
    with pytest.raises(HanclipError, match="3 captions but 1 image names"):
        load_dataset("xtd10-ko", tmp_path)


# --- Crossmodal-3600 ----------------------------------------------------------------------


def test_crossmodal3600_korean_captions(tmp_path):
    write_crossmodal3600(tmp_path)
    images = tmp_path / "images"
    dataset = _retrieval("crossmodal3600", tmp_path)
    assert dataset.image_paths == [images / "k1.jpg", images / "k3.jpg", images / "k4.jpg"]
    assert dataset.captions == ["해변의 개", "개", "자전거", "비 오는 거리"]
    assert dataset.caption_image.tolist() == [0, 0, 1, 2]
    assert dataset.skipped == 1
    (images / "k3.jpg").unlink()
    with pytest.raises(HanclipError, match=r"1 of 3 images missing, .*k3\.jpg: .*images\.tgz"):
        load_dataset("crossmodal3600", tmp_path)


# --- KoCC3M -------------------------------------------------------------------------------


def test_kocc3m_finds_fetched_images_by_url_hash(tmp_path):
    pytest.importorskip("pyarrow")
    write_kocc3m(tmp_path)
    images = tmp_path / "images"
    a = images / f"{kocc3m_image_stem(KOCC3M_ROWS[0][0])}.jpg"
    b = images / f"{kocc3m_image_stem(KOCC3M_ROWS[1][0])}.png"
    c = images / f"{kocc3m_image_stem(KOCC3M_ROWS[3][0])}.jpg"
    assert a.name == "99e087d9e04c1527ebd8026fd3cc31035e6c7210.jpg"  # sha1 of the URL
    assert [kocc3m_image_path(tmp_path, url) for url, _ in KOCC3M_ROWS[:2]] == [a, b]
    dataset = _retrieval("kocc3m", tmp_path)
    assert dataset.image_paths == [a, b, c]
    assert dataset.captions == ["강아지", "도시의 밤", "산"]
    assert dataset.caption_image.tolist() == [0, 1, 2]
    assert dataset.skipped == 1
    limited = _retrieval("kocc3m", tmp_path, limit=2)
    assert (limited.image_paths, limited.skipped) == ([a, b], 0)


def test_kocc3m_file_choice_and_errors(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    with pytest.raises(HanclipError, match="kocc3m.*parquet not found in .*QuoQA-NLP/KoCC3M"):
        load_dataset("kocc3m", tmp_path)
    write_kocc3m_parquet(tmp_path / "train.parquet", KOCC3M_ROWS[:1])
    write_kocc3m_parquet(tmp_path / "validation.parquet", KOCC3M_ROWS[:1])
    with pytest.raises(HanclipError, match="several parquet files"):
        load_dataset("kocc3m", tmp_path)
    write_kocc3m_parquet(tmp_path / "KoCC3M-val.parquet", KOCC3M_ROWS[3:])
    with pytest.raises(HanclipError, match="images/ not found in"):
        load_dataset("kocc3m", tmp_path)
    write_image(tmp_path / "images" / f"{kocc3m_image_stem(KOCC3M_ROWS[3][0])}.webp.jpg")
    with pytest.raises(HanclipError, match="kocc3m: no image with a caption found"):
        load_dataset("kocc3m", tmp_path)
    write_image(tmp_path / "images" / f"{kocc3m_image_stem(KOCC3M_ROWS[3][0])}.png")
    assert _retrieval("kocc3m", tmp_path).captions == ["산"]
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(HanclipError, match=r"needs pyarrow: pip install 'hanclip\[bench\]'"):
        load_dataset("kocc3m", tmp_path)


# --- Generic JSONL ------------------------------------------------------------------------


def test_jsonl_captions_relative_to_the_file(tmp_path):
    write_jsonl(tmp_path)
    photos = tmp_path / "photos"
    for where in (tmp_path, tmp_path / "captions.jsonl"):
        dataset = _retrieval("jsonl", where)
        assert dataset.image_paths == [photos / "1.jpg", photos / "2.png", photos / "3.jpg"]
        # A repeated image keeps one index and gains the new captions.
        assert dataset.captions == ["첫 번째", "하나", "두 번째", "또 하나", "세 번째 사진"]
        assert dataset.caption_image.tolist() == [0, 0, 1, 0, 2]
    with open(tmp_path / "captions.jsonl", "a", encoding="utf-8") as f:
        f.write('{"image": "x.jpg"}\n')
    with pytest.raises(HanclipError, match=r"captions\.jsonl:5: record has no 'captions'"):
        load_dataset("jsonl", tmp_path)


# --- CIFAR --------------------------------------------------------------------------------


def test_cifar10_pixels_labels_and_names(tmp_path):
    write_cifar10(tmp_path)
    images, _ = cifar_pixels(3)
    dataset = _classification("cifar10", tmp_path)
    assert isinstance(dataset.images, ArrayImages) and len(dataset.images) == 3
    first = dataset.images[0]
    assert first.mode == "RGB" and first.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(first), images[0])
    np.testing.assert_array_equal(np.asarray(list(dataset.images[1:])[1]), images[2])
    assert dataset.labels.tolist() == [3, 0, 9]
    names = [dataset.class_names_ko[label] for label in dataset.labels]
    assert names == ["고양이", "비행기", "트럭"]
    assert dataset.class_keys[:3] == ["airplane", "automobile", "bird"]
    limited = _classification("cifar10", tmp_path / "cifar-10-batches-py", limit=2)
    assert (len(limited.images), limited.labels.tolist()) == (2, [3, 0])


def test_cifar10_meta_that_disagrees_with_the_table_is_refused(tmp_path):
    swapped = [english for english, _ in CIFAR10_CLASSES]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    write_cifar10(tmp_path, swapped)
    with pytest.raises(HanclipError, match="label 1 is 'bird' there but 'automobile' here"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_without_meta_and_missing_files(tmp_path):
    expected = r"test_batch not found in .*cifar-10-batches-py: .*cifar-10-python\.tar\.gz"
    with pytest.raises(HanclipError, match=expected):
        load_dataset("cifar10", tmp_path)
    write_cifar10(tmp_path, None)
    assert not (tmp_path / "cifar-10-batches-py" / "batches.meta").exists()
    assert _classification("cifar10", tmp_path).labels.tolist() == [3, 0, 9]


def test_cifar_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(HanclipError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_fine_labels_align_with_korean_names(tmp_path):
    write_cifar100(tmp_path)
    images, _ = cifar_pixels(3)
    dataset = _classification("cifar100", tmp_path)
    np.testing.assert_array_equal(np.asarray(dataset.images[1]), images[1])
    assert dataset.labels.tolist() == [0, 99, 2]
    assert [dataset.class_names_ko[label] for label in dataset.labels] == ["사과", "지렁이", "아기"]
    assert dataset.class_keys == [english for english, _ in CIFAR100_CLASSES]


# --- STL-10 -------------------------------------------------------------------------------


def test_stl10_column_major_images(tmp_path):
    write_stl10(tmp_path)
    images = stl10_pixels(3)
    dataset = _classification("stl10", tmp_path)
    for index in range(3):
        np.testing.assert_array_equal(np.asarray(dataset.images[index]), images[index])
    # Stored 1-based: 8, 1, 10.
    assert dataset.labels.tolist() == [7, 0, 9]
    names = [dataset.class_names_ko[label] for label in dataset.labels]
    assert names == ["원숭이", "비행기", "트럭"]
    limited = _classification("stl10", tmp_path, limit=1)
    assert (len(limited.images), limited.labels.tolist()) == (1, [7])
    names_file = tmp_path / "stl10_binary" / "class_names.txt"
    names_file.write_text(
        names_file.read_text(encoding="utf-8").replace("car", "automobile"), encoding="utf-8"
    )
    with pytest.raises(HanclipError, match="label 2 is 'automobile' there but 'car' here"):
        load_dataset("stl10", tmp_path)


# --- Caltech101 ---------------------------------------------------------------------------


def test_caltech101_labels_follow_case_sensitive_sorted_folders(tmp_path):
    write_caltech101(tmp_path)
    root = tmp_path / "101_ObjectCategories"
    assert len(list((root / "BACKGROUND_Google").iterdir())) == 2
    (root / "ant" / "notes.txt").write_text("not an image")
    dataset = _classification("caltech101", tmp_path)
    assert dataset.class_keys == ["Faces", "Leopards", "accordion", "ant"]
    assert dataset.class_names_ko == ["얼굴", "표범", "아코디언", "개미"]
    # Round-robin over classes: every class's first image, then every class's second.
    assert dataset.images == [
        root / "Faces/image_0001.jpg",
        root / "Leopards/image_0001.jpg",
        root / "accordion/image_0001.jpg",
        root / "ant/image_0001.jpg",
        root / "Faces/image_0002.jpg",
        root / "accordion/image_0002.jpg",
    ]
    assert dataset.labels.tolist() == [0, 1, 2, 3, 0, 2]
    assert _classification("caltech101", root, limit=3).labels.tolist() == [0, 1, 2]
    write_image(root / "unicorn" / "image_0001.jpg")
    with pytest.raises(HanclipError, match="folder 'unicorn' is not a Caltech101 class"):
        load_dataset("caltech101", tmp_path)


def test_caltech101_missing_folder(tmp_path):
    with pytest.raises(HanclipError, match="folder 101_ObjectCategories/ not found in .*caltech"):
        load_dataset("caltech101", tmp_path)


# --- Class tables, prompts, registry ------------------------------------------------------


def test_class_tables_follow_the_official_orders():
    cifar10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    assert [e for e, _ in CIFAR10_CLASSES] == [*cifar10, "truck"]
    stl10 = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship"]
    assert [e for e, _ in STL10_CLASSES] == [*stl10, "truck"]
    fine = [e for e, _ in CIFAR100_CLASSES]
    assert len(fine) == 100 and fine == sorted(fine)
    assert fine[:4] == ["apple", "aquarium_fish", "baby", "bear"] and fine[-1] == "worm"
    assert len(CALTECH101_KO) == 101
    assert sorted(CALTECH101_KO)[:5] == [
        "Faces",
        "Faces_easy",
        "Leopards",
        "Motorbikes",
        "accordion",
    ]
    for table in (CIFAR10_CLASSES, STL10_CLASSES, CIFAR100_CLASSES, tuple(CALTECH101_KO.items())):
        korean = [k for _, k in table]
        assert len(set(korean)) == len(korean), "two classes share a Korean name"


def test_build_prompts():
    assert build_prompts(["고양이", "개"], ["{}의 사진", "{}"]) == [
        ["고양이의 사진", "고양이"],
        ["개의 사진", "개"],
    ]
    default = build_prompts(["고양이"])
    assert len(default[0]) == len(DEFAULT_TEMPLATES) and default[0][0] == "고양이의 사진"
    with pytest.raises(HanclipError, match="exactly once"):
        build_prompts(["고양이"], ["사진"])


def test_registry_and_load_dataset_errors(tmp_path):
    assert set(DATASETS) == {
        "mscoco-ko", "xtd10-ko", "crossmodal3600", "kocc3m", "jsonl",
        "cifar10", "cifar100", "stl10", "caltech101",
    }  # fmt: skip
    kinds = {name: info.kind for name, info in DATASETS.items()}
    assert kinds["xtd10-ko"] == "retrieval" and kinds["caltech101"] == "classification"
    with pytest.raises(HanclipError, match="unknown dataset 'coco': choose one of mscoco-ko, "):
        load_dataset("coco", tmp_path)
    with pytest.raises(HanclipError, match="no split 'test': choose one of karpathy-test, val"):
        load_dataset("mscoco-ko", tmp_path, split="test")
    with pytest.raises(HanclipError, match="cifar10 has no splits"):
        load_dataset("cifar10", tmp_path, split="test")
    with pytest.raises(HanclipError, match="limit must be at least 1"):
        load_dataset("cifar10", tmp_path, limit=0)
