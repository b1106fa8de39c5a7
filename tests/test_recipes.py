"""Recipes end to end, offline: fixture files in the hub datasets' own formats (parquet with
their column names, COCO caption JSON), laid out as `--data-dir` wants them, and a stand-in
`snapshot_download` for the download path. No network."""

from __future__ import annotations

import io
import json
import shutil
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hanclip_model.errors import HanclipError
from trainer import recipes
from trainer.hub import HubFiles, find_files
from trainer.recipes import (
    RECIPES,
    Recipe,
    Source,
    coco_image_id,
    get_recipe,
    image_suffix,
    list_recipes,
    load_recipe,
)

COYO_PART = "data/part-00000-17da4908-939c-46e5-91d0-15f256041956-c000.snappy.parquet"
KARPATHY = {"test": [391895, 522418], "validation": [184613], "restval": [318219]}
KARPATHY_TRAIN = [9, 25]  # train2014 images: kept
XTD10_ID = 61849  # in XTD10's first id range, not in the Karpathy files
SEA_NFD = unicodedata.normalize("NFD", "바다 위 노을")
SEA = "바다 위 노을"


def write_parquet(path: Path, columns: dict[str, list], row_group_size: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def image_bytes(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format=fmt)
    return buffer.getvalue()


def coco_name(split: str, image_id: int) -> str:
    return f"{split}2014/COCO_{split}2014_{image_id:012d}.jpg"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Every recipe's files, small, in `<data_dir>/<owner>__<name>/<path in the repo>`."""
    root = tmp_path / "hub-data"
    english = [
        "A dog runs on the beach",
        "",
        None,
        "  A dog runs on the beach  ",  # the same caption once stripped
        "Sunset over the sea",
        "Two cats sleeping on a sofa",
        "A red bicycle by a wall",
        "Snow on the mountains",
    ]
    write_parquet(
        root / "kakaobrain__coyo-700m" / COYO_PART,
        {
            "id": list(range(len(english))),
            "url": [f"https://example.org/{i}.jpg" for i in range(len(english))],
            "text": english,
            "clip_similarity_vitb32": [0.3] * len(english),
        },
    )
    karpathy = root / "yerevann__coco-karpathy" / "data"
    for split, ids in {**KARPATHY, "train": KARPATHY_TRAIN}.items():
        write_parquet(
            karpathy / f"{split}-00000-of-00001.parquet",
            {
                "filepath": ["val2014" if split != "train" else "train2014"] * len(ids),
                "sentids": [[i] for i in ids],
                "filename": [coco_name("val", i).split("/")[1] for i in ids],
                "imgid": list(range(len(ids))),
                "split": [split] * len(ids),
                "sentences": [["a caption"]] * len(ids),
                "cocoid": ids,
                "url": [f"http://images.cocodataset.org/{i}.jpg" for i in ids],
            },
        )
    write_parquet(
        root / "kimdeoldeol__COCO_dataset" / "data" / "train-00000-of-00001.parquet",
        {
            "source": [
                coco_name("train", 9),
                coco_name("val", 391895),  # Karpathy test
                coco_name("val", 318219),  # Karpathy restval
                coco_name("train", XTD10_ID),
                "mscoco",  # no id: dropped
                coco_name("train", 25),
            ],
            "caption_ko": [
                ["고양이 두 마리가 소파에서 잔다", SEA_NFD, ""],
                ["시험 이미지의 캡션"],
                ["restval 이미지의 캡션"],
                ["XTD10 이미지의 캡션"],
                ["아이디 없는 캡션"],
                [SEA, "빨간 자전거"],
            ],
        },
    )
    kocc3m = root / "QuoQA-NLP__KoCC3M" / "data"
    for name, captions in (
        ("train-00000-of-00002-cc8e11261b9f26e1.parquet", ["해변의 개", "산 위의 눈"]),
        ("train-00001-of-00002-3d1333b77c91c8c1.parquet", ["도시의 밤", "해변의 개"]),
        ("validation-00000-of-00001-168f14d7fd7256ba.parquet", ["검증 분할 캡션"]),
    ):
        write_parquet(
            kocc3m / name,
            {
                "image_url": [f"https://example.org/{c}.jpg" for c in captions],
                "english_caption": ["an english caption"] * len(captions),
                "korean_caption": captions,
            },
        )
    coco_vi = root / "dinhanhx__coco-2017-vi" / "vi"
    coco_vi.mkdir(parents=True)
    annotations = [
        {"image_id": 9, "id": 1, "caption": "Một con chó chạy trên bãi biển."},
        {"image_id": 391895, "id": 2, "caption": "Chú thích của ảnh kiểm tra."},
        {"image_id": XTD10_ID, "id": 3, "caption": "Chú thích của ảnh XTD10."},
        {"image_id": 25, "id": 4, "caption": unicodedata.normalize("NFD", "Hoàng hôn trên biển")},
        {"image_id": 25, "id": 5, "caption": "Hoàng hôn trên biển"},
    ]
    (coco_vi / "captions_train2017_trans.json").write_text(
        json.dumps({"images": [], "annotations": annotations}, ensure_ascii=False), "utf-8"
    )
    (coco_vi / "captions_val2017_trans.json").write_text(
        json.dumps({"annotations": [{"image_id": 1, "id": 9, "caption": "không dùng"}]}),
        "utf-8",
    )
    cells = [
        (9, image_bytes((200, 0, 0))),
        (391895, image_bytes((0, 200, 0))),  # Karpathy test: held out
        (25, image_bytes((0, 0, 200), "PNG")),
        (30, image_bytes((200, 0, 0))),  # the same bytes as image 9: written once
        (31, b"not an image"),
        (32, image_bytes((90, 90, 90))),
    ]
    write_parquet(
        root / "AKCIT__coco2017-captioning" / "data" / "train-00000-of-00040.parquet",
        {
            "image": [{"bytes": data, "path": f"{i:012d}.jpg"} for i, data in cells],
            "image_id": [i for i, _ in cells],
            "text": ["a caption"] * len(cells),
            "captions": [["a caption"]] * len(cells),
            "split": ["train"] * len(cells),
        },
    )
    return root


def test_every_recipe_is_fully_specified() -> None:
    assert {"coyo-mscoco-ko", "coyo-coco-vi"} <= set(RECIPES)
    assert {recipe.language for recipe in RECIPES.values()} >= {"ko", "vi"}
    for name, recipe in RECIPES.items():
        assert recipe.name == name and recipe.description and recipe.holds_out
        for _, source in recipe.sources():
            files = source.files
            assert files.repo_type == "dataset" and files.repo_id.count("/") == 1
            assert files.allow_patterns and all(files.allow_patterns)
            assert files.revision is None or len(files.revision) == 40
            assert source.name and source.column and source.licence and source.size
            assert source.holds_out and source.docs
            assert all(url.startswith("https://") for url in source.docs)
            if source.held_out:
                assert source.id_column, f"{name}: held-out ids need an id column"
            for held in source.held_out:
                assert held.description and (held.ranges or (held.files and held.column))
    listed = list_recipes()
    assert [entry.name for entry in listed] == list(RECIPES)
    json.dumps([entry.as_json() for entry in listed])  # JSON-ready for --list-recipes --json
    first = listed[0].as_json()["sources"][0]
    assert {"role", "repo_id", "size", "licence", "holds_out", "docs"} <= set(first)


def test_korean_recipe_end_to_end(data_dir: Path) -> None:
    corpora = load_recipe("coyo-mscoco-ko", data_dir=data_dir)
    assert corpora.language == "ko" and corpora.photos is None
    assert corpora.english == [
        "A dog runs on the beach",
        "Sunset over the sea",
        "Two cats sleeping on a sofa",
        "A red bicycle by a wall",
        "Snow on the mountains",
    ]
    # NFC, the NFD and NFC forms of one caption kept once; held-out and id-less rows gone.
    assert corpora.target == ["고양이 두 마리가 소파에서 잔다", SEA, "빨간 자전거"]
    target = corpora.info["target"]
    assert target["repo_id"] == "kimdeoldeol/COCO_dataset"
    assert (target["rows"], target["held_out"], target["without_id"]) == (6, 3, 1)
    assert (target["empty"], target["duplicates"], target["kept"]) == (1, 1, 3)
    english = corpora.info["english"]
    assert (english["empty"], english["duplicates"], english["row_cap"]) == (2, 1, 1_000_000)
    assert list(english["files"]) == [COYO_PART]
    assert english["files"][COYO_PART].startswith("sha256:")
    held = corpora.info["held_out"]
    assert held["coco2014-val"]["ids"] == 4  # test, validation and restval, not train
    assert held["xtd10"]["id_ranges"][0] == [61844, 63252]
    json.dumps(corpora.info)


def test_limit_caps_each_corpus_and_stops_reading(data_dir: Path) -> None:
    corpora = load_recipe("coyo-mscoco-ko", data_dir=data_dir, limit=2)
    assert corpora.english == ["A dog runs on the beach", "Sunset over the sea"]
    assert corpora.target == ["고양이 두 마리가 소파에서 잔다", SEA]
    assert corpora.info["english"]["rows"] == 5  # of 8: the rest was never read
    assert corpora.info["target"]["row_cap"] == 2
    with pytest.raises(HanclipError, match="at least 1"):
        load_recipe("coyo-mscoco-ko", data_dir=data_dir, limit=0)


def test_kocc3m_recipe_leaves_out_the_validation_split(data_dir: Path) -> None:
    progress: list[tuple[str, int, int | None]] = []
    corpora = load_recipe(
        "coyo-kocc3m-ko", data_dir=data_dir, progress=lambda *call: progress.append(call)
    )
    assert corpora.target == ["해변의 개", "산 위의 눈", "도시의 밤"]
    assert all(name.startswith("data/train-") for name in corpora.info["target"]["files"])
    assert "held_out" not in corpora.info
    assert ("target", 3, 600_000) in progress and ("english", 5, 1_000_000) in progress


def test_vietnamese_recipe_with_images(data_dir: Path, tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    corpora = load_recipe("coyo-coco-vi", data_dir=data_dir, image_dir=image_dir)
    assert corpora.language == "vi"
    assert corpora.target == ["Một con chó chạy trên bãi biển.", "Hoàng hôn trên biển"]
    assert corpora.info["target"]["held_out"] == 2
    assert corpora.photos is not None and len(corpora.photos) == 3
    assert [Path(p).suffix for p in corpora.photos] == [".jpg", ".png", ".jpg"]
    for path in map(Path, corpora.photos):
        assert path.is_relative_to(image_dir / "AKCIT__coco2017-captioning")
        with Image.open(path) as image:
            assert image.size == (8, 8)
    images = corpora.info["images"]
    assert (images["held_out"], images["duplicates"], images["not_images"]) == (1, 1, 1)
    first = Path(corpora.photos[0])
    assert first.read_bytes() == image_bytes((200, 0, 0))
    # Written once: a second run finds the files and leaves them as they are.
    stamp = first.stat().st_mtime_ns
    again = load_recipe("coyo-coco-vi", data_dir=data_dir, image_dir=image_dir, limit=1)
    assert again.photos == corpora.photos[:1] and first.stat().st_mtime_ns == stamp
    without = load_recipe("coyo-coco-vi", data_dir=data_dir, with_images=False)
    assert without.photos is None and "images" not in without.info


def test_download_path_asks_the_hub_for_each_recipe_source(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls: list[dict] = []

    def fake_snapshot_download(repo_id: str, **kwargs) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        source = data_dir / repo_id.replace("/", "__")
        snapshot = tmp_path / "hf-cache" / repo_id.replace("/", "--") / "snapshots" / "c0ffee"
        present = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
        for name in filter_repo_objects(present, allow_patterns=kwargs["allow_patterns"]):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    recipe = get_recipe("coyo-coco-vi")
    corpora = load_recipe(recipe, image_dir=tmp_path / "images")
    wanted = {source.files for _, source in recipe.sources()} | {recipes.KARPATHY_VAL2014}
    asked = {
        HubFiles(c["repo_id"], tuple(c["allow_patterns"]), c["revision"], c["repo_type"])
        for c in calls
    }
    assert asked == wanted and len(calls) == len(wanted)
    assert corpora.info["english"]["revision"] == "c0ffee"
    assert corpora.info["english"]["origin"] == "hub"
    assert corpora.info["held_out"]["coco2014-val"]["source"]["repo_id"] == "yerevann/coco-karpathy"
    assert len(corpora.target) == 2 and corpora.photos is not None


def test_unknown_recipe_lists_the_names() -> None:
    with pytest.raises(HanclipError) as error:
        get_recipe("coco-ko")
    assert all(name in str(error.value) for name in RECIPES)


def test_data_dir_errors_name_what_is_missing(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HanclipError, match="data folder not found"):
        load_recipe("coyo-mscoco-ko", data_dir=tmp_path / "nowhere")
    shutil.rmtree(data_dir / "kimdeoldeol__COCO_dataset")
    with pytest.raises(HanclipError, match=r"kimdeoldeol__COCO_dataset/ not found in .*hub-data"):
        load_recipe("coyo-mscoco-ko", data_dir=data_dir)
    (data_dir / "yerevann__coco-karpathy" / "data" / "restval-00000-of-00001.parquet").unlink()
    with pytest.raises(HanclipError, match=r"no file matching data/restval-\*\.parquet in .*"):
        load_recipe("coyo-coco-vi", data_dir=data_dir)


def test_a_changed_column_and_an_emptied_corpus_are_errors(data_dir: Path) -> None:
    write_parquet(
        data_dir / "QuoQA-NLP__KoCC3M" / "data" / "train-00001-of-00002-3d1333b77c91c8c1.parquet",
        {"caption": ["열이 바뀌었다"]},
    )
    with pytest.raises(HanclipError, match="no column korean_caption .*it has caption"):
        load_recipe("coyo-kocc3m-ko", data_dir=data_dir)
    held_only = {"source": [coco_name("val", 391895)], "caption_ko": [["시험 캡션"]]}
    write_parquet(
        data_dir / "kimdeoldeol__COCO_dataset" / "data" / "train-00000-of-00001.parquet",
        held_only,
    )
    with pytest.raises(HanclipError, match="no target rows left .*held out 1"):
        load_recipe("coyo-mscoco-ko", data_dir=data_dir)


def test_an_unreachable_hub_points_at_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id: str, **kwargs) -> str:
        raise LocalEntryNotFoundError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(HanclipError, match="cannot reach the Hugging Face hub .*--data-dir"):
        find_files(HubFiles("kakaobrain/coyo-700m", ("data/*.parquet",)), None)


def test_a_recipe_object_can_be_loaded_directly(data_dir: Path) -> None:
    small = Recipe(
        "tiny",
        "ko",
        "KoCC3M on both sides",
        english=recipes.COYO_ENGLISH,
        target=Source(**{**recipes.KOCC3M.__dict__, "take": 1}),
    )
    assert load_recipe(small, data_dir=data_dir).target == ["해변의 개"]


def test_coco_image_ids_and_image_signatures() -> None:
    assert coco_image_id("val2014/COCO_val2014_000000391895.jpg") == 391895
    assert coco_image_id(25) == 25 and coco_image_id("000000000025") == 25
    assert coco_image_id("mscoco") is None and coco_image_id(None) is None
    assert coco_image_id(True) is None
    assert image_suffix(image_bytes((1, 2, 3))) == ".jpg"
    assert image_suffix(image_bytes((1, 2, 3), "PNG")) == ".png"
    assert image_suffix(image_bytes((1, 2, 3), "WEBP")) == ".webp"
    assert image_suffix(b"<html>") is None


def test_hidden_bookkeeping_beside_the_files_is_not_read(tmp_path: Path) -> None:
    repo = tmp_path / "owner__name"
    write_parquet(repo / "data" / "train.parquet", {"text": ["a"]})
    write_parquet(repo / ".cache" / "huggingface" / "train.parquet", {"text": ["b"]})
    found = find_files(HubFiles("owner/name", ("*.parquet",)), tmp_path)
    assert [found.relative(path) for path in found.paths] == ["data/train.parquet"]


def test_train_runs_a_recipe_end_to_end_offline(
    cli, tiny, photos, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hanclip-ko"
    result = cli(
        "train", "--recipe", "coyo-mscoco-ko", "--data-dir", data_dir, "--images", photos,
        "--base-model", tiny.heads_bundle, "--epochs", "2", "--batch-size", "8",
        "--cache-dir", tmp_path / "cache", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    expected = load_recipe("coyo-mscoco-ko", data_dir=data_dir, with_images=False)
    assert summary["language"] == "ko"
    assert summary["banks"] == {
        "english_captions": len(expected.english),
        "images": 8,
        "korean_captions": len(expected.target),
    }
    banks = json.loads((out / "hanclip.json").read_text())["training"]["banks"]
    assert banks["recipe"]["recipe"] == "coyo-mscoco-ko"
    assert banks["image_source"] == str(photos) and banks["images"] == 8


def test_a_recipe_with_images_leaves_them_when_the_user_brings_photos(
    cli, tiny, photos, data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    asked = []
    real = recipes.load_recipe

    def spy(*args, **kwargs):
        asked.append(kwargs.get("with_images"))
        return real(*args, **kwargs)

    monkeypatch.setattr(recipes, "load_recipe", spy)
    result = cli(
        "train", "--recipe", "coyo-coco-vi", "--data-dir", data_dir, "--images", photos,
        "--base-model", tiny.heads_bundle, "--epochs", "1", "--batch-size", "8",
        "--cache-dir", tmp_path / "cache", "--out", tmp_path / "vi", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert asked == [False] and result.json()["language"] == "vi"


def test_list_recipes_shows_sources_licences_and_holdouts(cli) -> None:
    listed = cli("train", "--list-recipes", "--json")
    assert listed.exit_code == 0
    assert [r["name"] for r in listed.json()] == list(RECIPES)
    table = cli("train", "--list-recipes")
    assert table.exit_code == 0
    for recipe in RECIPES.values():
        assert recipe.name in table.stdout
        for listed in list_recipes()[list(RECIPES).index(recipe.name)].sources:
            assert listed.source.files.repo_id in table.stdout
    assert "holds out" in table.stdout
