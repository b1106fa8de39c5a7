"""Benchmark readers on tiny datasets written here in each published format."""

from __future__ import annotations

import json
import pickle
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanclip_model.errors import HanclipError
from trainer.datasets import (
    DATASETS,
    DEFAULT_TEMPLATES,
    ArrayImages,
    ClassificationSet,
    RetrievalSet,
    build_prompts,
    kocc3m_image_stem,
    load_dataset,
)
from trainer.datasets.class_names import (
    CALTECH101_KO,
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    STL10_CLASSES,
)


def _image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix == ".png" else "JPEG"
    Image.new("RGB", (4, 4), (value, value, value)).save(path, fmt)
    return path


def _retrieval(name: str, data_dir: Path, **options) -> RetrievalSet:
    dataset = load_dataset(name, data_dir, **options)
    assert isinstance(dataset, RetrievalSet)
    return dataset


def _classification(name: str, data_dir: Path, **options) -> ClassificationSet:
    dataset = load_dataset(name, data_dir, **options)
    assert isinstance(dataset, ClassificationSet)
    return dataset


# --- MSCOCO-Korean -------------------------------------------------------------------------

COCO_RECORDS = [
    {
        "file_path": "val2014/COCO_val2014_000000000001.jpg",
        "id": 1,
        "captions": ["a cat", "a cat on a mat"],
        "caption_ko": ["고양이", "매트 위의 고양이"],
    },
    {
        "file_path": "val2014/COCO_val2014_000000000002.jpg",
        "id": 2,
        "captions": ["a dog"],
        "caption_ko": ["개"],
    },
    {
        "file_path": "train2014/COCO_train2014_000000000003.jpg",
        "id": 3,
        "captions": ["a bus"],
        "caption_ko": ["버스"],
    },
    {
        "file_path": "val2014/COCO_val2014_000000000004.jpg",
        "id": 4,
        "captions": ["a sunset", "sea", "x"],
        "caption_ko": [unicodedata.normalize("NFD", " 바다 위 노을 "), "바다", "  "],
    },
]
KARPATHY = {
    "images": [
        {"split": "test", "cocoid": 4, "filepath": "val2014", "filename": "..."},
        {"split": "val", "cocoid": 2, "filepath": "val2014", "filename": "..."},
        {"split": "train", "cocoid": 3, "filepath": "train2014", "filename": "..."},
        {"split": "test", "cocoid": 1, "filepath": "val2014", "filename": "..."},
    ]
}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    text = json.dumps(COCO_RECORDS, ensure_ascii=False)
    (tmp_path / "MSCOCO_train_val_Korean.json").write_text(text, encoding="utf-8")
    (tmp_path / "dataset_coco.json").write_text(json.dumps(KARPATHY), encoding="utf-8")
    for record in COCO_RECORDS:
        _image(tmp_path / record["file_path"])
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


def _write_xtd(data_dir: Path, images_dir: Path) -> None:
    (data_dir / "test_1kcaptions_ko.txt").write_text(
        "고양이 한 마리\n바다 위 노을\n\n", encoding="utf-8"
    )
    (data_dir / "test_image_names.txt").write_text("a.jpg\nb.jpg\n", encoding="utf-8")
    _image(images_dir / "a.jpg")
    _image(images_dir / "b.jpg")


@pytest.mark.parametrize("in_images_folder", [True, False])
def test_xtd10_pairs_line_by_line(tmp_path, in_images_folder):
    images_dir = tmp_path / "images" if in_images_folder else tmp_path
    _write_xtd(tmp_path, images_dir)
    dataset = _retrieval("xtd10-ko", tmp_path)
    assert dataset.image_paths == [images_dir / "a.jpg", images_dir / "b.jpg"]
    assert dataset.captions == ["고양이 한 마리", "바다 위 노을"]
    assert dataset.caption_image.tolist() == [0, 1]


def test_xtd10_errors(tmp_path):
    with pytest.raises(HanclipError, match="test_1kcaptions_ko.txt not found in .*XTD10"):
        load_dataset("xtd10-ko", tmp_path)
    _write_xtd(tmp_path, tmp_path / "images")
    (tmp_path / "test_image_names.txt").write_text("a.jpg\n", encoding="utf-8")
    with pytest.raises(HanclipError, match="2 captions but 1 image names"):
        load_dataset("xtd10-ko", tmp_path)


# --- Crossmodal-3600 ----------------------------------------------------------------------


def test_crossmodal3600_korean_captions(tmp_path):
    lines = [
        {"image/key": "k1", "ko": {"caption": ["해변의 개", "개"]}, "en": {"caption": ["a dog"]}},
        {"image/key": "k2", "en": {"caption": ["no korean here"]}},
        {"image/key": "k3", "ko": {"caption": ["자전거"]}},
    ]
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    (tmp_path / "captions.jsonl").write_text(text + "\n", encoding="utf-8")
    for key in ("k1", "k3"):
        _image(tmp_path / "images" / f"{key}.jpg")
    dataset = _retrieval("crossmodal3600", tmp_path)
    assert dataset.image_paths == [tmp_path / "images/k1.jpg", tmp_path / "images/k3.jpg"]
    assert dataset.captions == ["해변의 개", "개", "자전거"]
    assert dataset.caption_image.tolist() == [0, 0, 1]
    assert dataset.skipped == 1
    (tmp_path / "images/k3.jpg").unlink()
    with pytest.raises(HanclipError, match=r"1 of 2 images missing, .*k3\.jpg: .*images\.tgz"):
        load_dataset("crossmodal3600", tmp_path)


# --- KoCC3M -------------------------------------------------------------------------------


def _write_parquet(path: Path, rows: list[tuple[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls, captions = zip(*rows, strict=True)
    table = pa.table(
        {
            "image_url": list(urls),
            "english_caption": ["english"] * len(rows),
            "korean_caption": list(captions),
        }
    )
    pq.write_table(table, path)


KOCC3M_ROWS = [
    ("http://example.com/a.jpg", "강아지"),
    ("http://example.com/b.PNG?size=large", "도시의 밤"),
    ("http://example.com/missing.jpg", "가져오지 못한 사진"),
    ("http://example.com/c", "산"),
]


def test_kocc3m_finds_fetched_images_by_url_hash(tmp_path):
    pytest.importorskip("pyarrow")
    _write_parquet(tmp_path / "kocc3m_validation.parquet", KOCC3M_ROWS)
    images = tmp_path / "images"
    a = _image(images / f"{kocc3m_image_stem(KOCC3M_ROWS[0][0])}.jpg")
    b = _image(images / f"{kocc3m_image_stem(KOCC3M_ROWS[1][0])}.png")
    c = _image(images / f"{kocc3m_image_stem(KOCC3M_ROWS[3][0])}.jpg")
    assert a.name == "99e087d9e04c1527ebd8026fd3cc31035e6c7210.jpg"  # sha1 of the URL
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
    _write_parquet(tmp_path / "train.parquet", KOCC3M_ROWS[:1])
    _write_parquet(tmp_path / "validation.parquet", KOCC3M_ROWS[:1])
    with pytest.raises(HanclipError, match="several parquet files"):
        load_dataset("kocc3m", tmp_path)
    _write_parquet(tmp_path / "KoCC3M-val.parquet", KOCC3M_ROWS[3:])
    with pytest.raises(HanclipError, match="images/ not found in"):
        load_dataset("kocc3m", tmp_path)
    _image(tmp_path / "images" / f"{kocc3m_image_stem(KOCC3M_ROWS[3][0])}.webp.jpg")
    with pytest.raises(HanclipError, match="kocc3m: no image with a caption found"):
        load_dataset("kocc3m", tmp_path)
    _image(tmp_path / "images" / f"{kocc3m_image_stem(KOCC3M_ROWS[3][0])}.png")
    assert _retrieval("kocc3m", tmp_path).captions == ["산"]
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(HanclipError, match=r"needs pyarrow: pip install 'hanclip\[bench\]'"):
        load_dataset("kocc3m", tmp_path)


# --- Generic JSONL ------------------------------------------------------------------------


def test_jsonl_captions_relative_to_the_file(tmp_path):
    lines = [
        {"image": "photos/1.jpg", "captions": ["첫 번째", "하나"]},
        {"image": "photos/2.png", "captions": "두 번째"},
        {"image": "photos/1.jpg", "captions": ["또 하나"]},
    ]
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    (tmp_path / "captions.jsonl").write_text(text, encoding="utf-8")
    first = _image(tmp_path / "photos/1.jpg")
    second = _image(tmp_path / "photos/2.png")
    for where in (tmp_path, tmp_path / "captions.jsonl"):
        dataset = _retrieval("jsonl", where)
        assert dataset.image_paths == [first, second]
        # A repeated image keeps one index and gains the new captions.
        assert dataset.captions == ["첫 번째", "하나", "두 번째", "또 하나"]
        assert dataset.caption_image.tolist() == [0, 0, 1, 0]
    (tmp_path / "captions.jsonl").write_text(text + '\n{"image": "x.jpg"}\n', encoding="utf-8")
    with pytest.raises(HanclipError, match=r"captions\.jsonl:4: record has no 'captions'"):
        load_dataset("jsonl", tmp_path)


# --- CIFAR --------------------------------------------------------------------------------


def _python2_style_pickle(path: Path, content: dict) -> None:
    """Protocol 2 with numpy.core names, as in the published (Python 2) CIFAR files."""
    raw = pickle.dumps(content, protocol=2)
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def _cifar_pixels(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 32, 32, 3] with distinct values, and the same as CIFAR rows [n, 3072]."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return images, images.transpose(0, 3, 1, 2).reshape(n, 3072)


def _write_cifar10(data_dir: Path, label_names: list[str] | None) -> np.ndarray:
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, rows = _cifar_pixels(3)
    batch = {b"batch_label": b"testing batch 1 of 1", b"data": rows, b"labels": [3, 0, 9]}
    _python2_style_pickle(folder / "test_batch", batch)
    if label_names is not None:
        meta = {b"label_names": [n.encode() for n in label_names], b"num_vis": 3072}
        _python2_style_pickle(folder / "batches.meta", meta)
    return images


def test_cifar10_pixels_labels_and_names(tmp_path):
    images = _write_cifar10(tmp_path, [english for english, _ in CIFAR10_CLASSES])
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
    _write_cifar10(tmp_path, swapped)
    with pytest.raises(HanclipError, match="label 1 is 'bird' there but 'automobile' here"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_without_meta_and_missing_files(tmp_path):
    expected = r"test_batch not found in .*cifar-10-batches-py: .*cifar-10-python\.tar\.gz"
    with pytest.raises(HanclipError, match=expected):
        load_dataset("cifar10", tmp_path)
    _write_cifar10(tmp_path, None)
    assert _classification("cifar10", tmp_path).labels.tolist() == [3, 0, 9]


def test_cifar_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(HanclipError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_fine_labels_align_with_korean_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _, rows = _cifar_pixels(3)
    fine_names = [english for english, _ in CIFAR100_CLASSES]
    test = {b"data": rows, b"fine_labels": [0, 99, 2], b"coarse_labels": [4, 13, 14]}
    _python2_style_pickle(folder / "test", test)
    _python2_style_pickle(folder / "meta", {b"fine_label_names": [n.encode() for n in fine_names]})
    dataset = _classification("cifar100", tmp_path)
    assert dataset.labels.tolist() == [0, 99, 2]
    assert [dataset.class_names_ko[label] for label in dataset.labels] == ["사과", "지렁이", "아기"]
    assert dataset.class_keys == fine_names


# --- STL-10 -------------------------------------------------------------------------------


def test_stl10_column_major_images(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    # On disk each image is [channel, column, row]: the transpose of [row, column, channel].
    images.transpose(0, 3, 2, 1).tofile(folder / "test_X.bin")
    np.array([8, 1], dtype=np.uint8).tofile(folder / "test_y.bin")
    names = "\n".join(english for english, _ in STL10_CLASSES) + "\n"
    (folder / "class_names.txt").write_text(names, encoding="utf-8")
    dataset = _classification("stl10", tmp_path)
    np.testing.assert_array_equal(np.asarray(dataset.images[0]), images[0])
    np.testing.assert_array_equal(np.asarray(dataset.images[1]), images[1])
    assert dataset.labels.tolist() == [7, 0]
    assert [dataset.class_names_ko[label] for label in dataset.labels] == ["원숭이", "비행기"]
    limited = _classification("stl10", tmp_path, limit=1)
    assert (len(limited.images), limited.labels.tolist()) == (1, [7])
    (folder / "class_names.txt").write_text(names.replace("car", "automobile"), encoding="utf-8")
    with pytest.raises(HanclipError, match="label 2 is 'automobile' there but 'car' here"):
        load_dataset("stl10", tmp_path)


# --- Caltech101 ---------------------------------------------------------------------------


def test_caltech101_labels_follow_case_sensitive_sorted_folders(tmp_path):
    root = tmp_path / "101_ObjectCategories"
    for folder, count in [
        ("ant", 1),
        ("accordion", 2),
        ("Leopards", 1),
        ("Faces", 2),
        ("BACKGROUND_Google", 2),
    ]:
        for i in range(count):
            _image(root / folder / f"image_{i + 1:04d}.jpg")
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
    _image(root / "unicorn" / "image_0001.jpg")
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
