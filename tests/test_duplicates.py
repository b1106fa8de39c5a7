"""`hanclip duplicates`: the pure grouping, the graph search that proposes pairs, and the
command end to end with the tiny bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hanclip_library import duplicates
from hanclip_library.duplicates import (
    DEFAULT_THRESHOLD,
    RawVectors,
    ScoredPair,
    candidate_pairs,
    group_duplicates,
)
from hanclip_library.store import PhotoStore
from hanclip_library.vector_index import build_index

ROOT = Path(__file__).resolve().parents[1]


def _unit(*rows: list[float]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# -- the pure grouping -----------------------------------------------------------------------


def _pairs(vectors: np.ndarray, threshold: float) -> list[ScoredPair]:
    """Every pair of rows whose cosine reaches `threshold`, as the graph search finds them."""
    scores = vectors @ vectors.T
    return [
        ScoredPair(i, j, float(scores[i, j]))
        for i in range(len(vectors))
        for j in range(i + 1, len(vectors))
        if scores[i, j] >= threshold
    ]


def test_a_group_holds_photos_that_are_all_close_to_each_other():
    a, b, c, d, e, f = _unit(
        [1, 0, 0], [1, 0.1, 0], [1, 0.2, 0], [0, 1, 0], [0, 1, 0.05], [0, 0, 1]
    )
    vectors = np.stack([a, b, c, d, e, f])
    assert float(a @ c) < 0.99 <= min(float(a @ b), float(b @ c))
    groups = group_duplicates(_pairs(vectors, 0.99), 0.99)
    # the chain a~b~c is no group: b goes with its closer copy c, a stays alone
    assert [g.ids for g in groups] == [(3, 4), (1, 2)]
    assert groups[0].similarity == pytest.approx(float(d @ e))
    assert groups[1].similarity == pytest.approx(float(b @ c))


def test_groups_come_largest_first_then_most_similar():
    vectors = _unit(
        [1, 0, 0], [1, 0.05, 0], [1, 0, 0.05], [0, 1, 0], [0, 1, 0.01], [0, 0, 1], [0.03, 0, 1]
    )
    groups = group_duplicates(_pairs(vectors, 0.99), 0.99)
    assert [g.ids for g in groups] == [(0, 1, 2), (3, 4), (5, 6)]


def test_no_pair_at_the_threshold_means_no_group():
    assert group_duplicates([ScoredPair(0, 1, 0.5)], 0.9) == []


def test_every_member_of_a_burst_larger_than_k_is_found(monkeypatch):
    monkeypatch.setattr(duplicates, "FIRST_K", 2)
    rng = np.random.default_rng(0)
    burst = _unit(*([1.0, 0.0, 0.0, 0.0] + rng.normal(0, 0.01, 4) for _ in range(9)))
    others = _unit(*rng.normal(0, 1, (20, 4)))
    vectors = np.vstack([burst, others])
    ids = np.arange(100, 100 + len(vectors), dtype=np.int64)
    vindex = build_index(ids, vectors, "test", 4)
    pairs = candidate_pairs(vindex, RawVectors(ids, vectors), 0.99)
    burst_ids = set(range(100, 109))
    # every two of the nine, not only the chain that k=2 alone would find
    assert {(p.first, p.second) for p in pairs if p.first in burst_ids} == {
        (a, b) for a in burst_ids for b in burst_ids if a < b
    }
    groups = group_duplicates(pairs, 0.99)
    assert [g.ids for g in groups][:1] == [tuple(range(100, 109))]
    assert all(set(g.ids).isdisjoint(range(100, 109)) for g in groups[1:])


def test_the_default_threshold_is_the_benchmarks_measurement():
    # benchmarks/duplicates_threshold.py, random-weight ViT-B/32, 40 photos: lowest copy
    # 0.9985, highest different photo 0.9858, threshold printed 0.99.
    assert DEFAULT_THRESHOLD == 0.99
    assert "threshold (raw space)" in (ROOT / "benchmarks" / "duplicates_threshold.py").read_text()
    assert "0.99" in (ROOT / "README.md").read_text().split("hanclip duplicates", 1)[1]


# -- the command ------------------------------------------------------------------------------


def _original() -> Image.Image:
    image = Image.new("RGB", (256, 192))
    draw = ImageDraw.Draw(image)
    for y in range(192):
        draw.line([(0, y), (255, y)], fill=(40 + y, 90, 220 - y))
    draw.ellipse((30, 40, 130, 150), fill=(250, 200, 40))
    draw.rectangle((150, 20, 230, 170), fill=(20, 120, 60))
    return image


@pytest.fixture
def with_copies(photos: Path) -> tuple[Path, set[str]]:
    """`photos` plus 해변.jpg and, in 복사본/, four copies of it: re-encoded and resized."""
    original = photos / "해변.jpg"
    _original().save(original, quality=95)
    decoded = Image.open(original).convert("RGB")
    copies = photos / "복사본"
    copies.mkdir()
    decoded.save(copies / "해변_q60.jpg", quality=60)
    decoded.save(copies / "해변.png")
    decoded.resize((128, 96), Image.LANCZOS).save(copies / "해변_절반.jpg", quality=90)
    decoded.resize((64, 48), Image.LANCZOS).save(copies / "해변_4분의1.jpg", quality=90)
    return photos, {str(original), *(str(p) for p in copies.iterdir())}


def _index(cli, folder: Path, library: Path, model: Path) -> None:
    result = cli("index", folder, "--library", library, "--model", model, "--json")
    assert result.exit_code == 0, result.stderr


def _tiny_threshold(library: Path, copies: set[str]) -> float:
    """The middle of the tiny model's own gap between copies and different photos (its random
    weights are not the benchmark's ViT-B/32), asserting there is a gap."""
    store = PhotoStore(library, create=False)
    try:
        ids, raw = store.embeddings()
        paths = [store.records_by_ids([int(i)])[int(i)].path for i in ids]
    finally:
        store.close()
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    scores = unit @ unit.T
    is_copy = np.array([p in copies for p in paths])
    upper = np.triu(np.ones_like(scores, dtype=bool), k=1)
    lowest_copy = scores[upper & is_copy[:, None] & is_copy[None, :]].min()
    highest_other = scores[upper & ~(is_copy[:, None] & is_copy[None, :])].max()
    assert lowest_copy > highest_other, (lowest_copy, highest_other)
    return float((lowest_copy + highest_other) / 2)


def _duplicates(cli, library: Path, *args: str | os.PathLike):
    result = cli("duplicates", "--library", library, *args)
    assert result.exit_code == 0, result.stderr
    return result


def test_json_lists_exactly_the_copies_group(cli, tiny, with_copies, library):
    folder, copies = with_copies
    _index(cli, folder, library, tiny.heads_bundle)
    threshold = _tiny_threshold(library, copies)

    groups = _duplicates(cli, library, "--threshold", str(threshold), "--json").json()
    assert len(groups) == 1
    group = groups[0]
    assert set(group) == {"similarity", "photos"}
    assert {p["path"] for p in group["photos"]} == copies
    assert threshold <= group["similarity"] <= 1.0
    for photo in group["photos"]:
        assert set(photo) == {"path", "size", "width", "height", "taken_at", "date_source"}
        assert photo["size"] == Path(photo["path"]).stat().st_size
        with Image.open(photo["path"]) as image:
            assert (photo["width"], photo["height"]) == image.size


def test_a_threshold_of_one_or_none_in_range(cli, tiny, with_copies, library):
    folder, copies = with_copies
    _index(cli, folder, library, tiny.heads_bundle)
    assert _duplicates(cli, library, "--threshold", "1", "--json").json() == []
    for bad in ("0", "1.5", "-0.2"):
        result = cli("duplicates", "--library", library, "--threshold", bad)
        assert result.exit_code == 2
        assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0


def test_the_table_shows_paths_sizes_and_dimensions(cli, tiny, with_copies, library):
    folder, copies = with_copies
    _index(cli, folder, library, tiny.heads_bundle)
    threshold = _tiny_threshold(library, copies)
    out = _duplicates(cli, library, "--threshold", str(threshold)).stdout
    assert out.startswith("group 1: 5 photos, similarity ")
    assert "group 2" not in out
    for path in copies:
        assert path in out
    assert "256x192" in out and "64x48" in out and " kB" in out


def test_in_compares_only_photos_below_the_folders(cli, tiny, with_copies, library):
    folder, copies = with_copies
    _index(cli, folder, library, tiny.heads_bundle)
    threshold = str(_tiny_threshold(library, copies))
    inside = _duplicates(cli, library, "-t", threshold, "--in", folder / "복사본", "--json").json()
    assert len(inside) == 1
    assert {p["path"] for p in inside[0]["photos"]} == copies - {str(folder / "해변.jpg")}
    elsewhere = _duplicates(cli, library, "-t", threshold, "--in", folder / "여행", "--json")
    assert elsewhere.json() == []


def test_photos_of_an_offline_folder_are_left_out_unless_asked(
    cli, tiny, with_copies, library, tmp_path
):
    folder, copies = with_copies
    _index(cli, folder, library, tiny.heads_bundle)
    threshold = str(_tiny_threshold(library, copies))
    (folder / "복사본").rename(tmp_path / "unplugged")
    _index(cli, folder, library, tiny.heads_bundle)
    assert _duplicates(cli, library, "-t", threshold, "--json").json() == []
    kept = _duplicates(cli, library, "-t", threshold, "--include-offline", "--json").json()
    assert len(kept) == 1 and {p["path"] for p in kept[0]["photos"]} == copies


def test_an_empty_library_has_no_duplicates_and_a_missing_one_is_an_error(
    cli, tiny, photos, library
):
    _index(cli, photos, library, tiny.plain_bundle)
    assert cli("forget", photos, "--library", library).exit_code == 0
    assert _duplicates(cli, library, "--json").json() == []
    assert "no near-identical photos" in _duplicates(cli, library).stdout

    missing = cli("duplicates", "--library", library.parent / "nowhere")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: no library")
    assert "Traceback" not in missing.stderr


def test_the_console_script_prints_the_groups(tiny, with_copies, library):
    folder, copies = with_copies
    hanclip = str(Path(sys.executable).parent / "hanclip")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = ["--library", str(library)]
    indexed = subprocess.run(
        [hanclip, "index", str(folder), *common, "--model", str(tiny.heads_bundle)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert indexed.returncode == 0, indexed.stderr
    threshold = str(_tiny_threshold(library, copies))
    found = subprocess.run(
        [hanclip, "duplicates", *common, "--threshold", threshold, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    groups = json.loads(found.stdout)
    assert [{p["path"] for p in g["photos"]} for g in groups] == [copies]
    help_text = subprocess.run(
        [hanclip, "duplicates", "--help"], capture_output=True, text=True, env=env, check=False
    ).stdout
    assert "hanclip duplicates --in ~/사진" in help_text
    assert f"Default: {DEFAULT_THRESHOLD}," in help_text
