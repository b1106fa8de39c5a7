"""index and search end to end through the CLI, with tiny offline models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from hanclip_model.encoders import ClipEncoder
from hanclip_model.fast_image.runtime import FastImageEncoder


def _index(cli, photos: Path, library: Path, model: Path, *extra: str):
    result = cli("index", photos, "--library", library, "--model", model, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return result.json()


def _search(cli, library: Path, model: Path, *args: str):
    result = cli("search", *args, "--library", library, "--model", model, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def refuse_image_encoding(monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    """Running the image encoder, through torch or ONNX Runtime, fails the test."""

    def refuse(self, images, batch_size=32):
        raise AssertionError(f"{why} ({len(images)} images)")

    monkeypatch.setattr(ClipEncoder, "embed_images", refuse)
    monkeypatch.setattr(FastImageEncoder, "embed", refuse)


@pytest.fixture
def no_image_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to run the image encoder fails the test."""
    refuse_image_encoding(monkeypatch, "image encoder called")


def test_index_reports_every_photo_added(cli, tiny, photos, library):
    report = _index(cli, photos, library, tiny.plain_bundle)
    files = [p for p in photos.rglob("*") if p.is_file()]
    assert report["added"] == len(files) == report["scanned"] == 8
    for key in ("updated", "moved", "removed", "unchanged", "failed"):
        assert report[key] == 0
    assert all(isinstance(report[k], int) for k in ("scanned", "added", "failed"))


def test_reindex_embeds_nothing(cli, tiny, photos, library, monkeypatch):
    _index(cli, photos, library, tiny.plain_bundle)

    refuse_image_encoding(monkeypatch, "re-embedded an unchanged photo")
    report = _index(cli, photos, library, tiny.plain_bundle)
    assert report["unchanged"] == 8
    assert report["added"] == report["updated"] == report["removed"] == 0


def test_text_search_returns_paths_inside_the_folder(cli, tiny, photos, library):
    _index(cli, photos, library, tiny.plain_bundle)
    hits = _search(cli, library, tiny.plain_bundle, "바다", "-n", "5")
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for hit in hits:
        path = Path(hit["path"])
        assert path.is_absolute() and path.is_file()
        assert photos.resolve() in path.resolve().parents
        assert isinstance(hit["score"], float)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_text_search_never_loads_the_image_encoder(cli, tiny, photos, library, monkeypatch):
    _index(cli, photos, library, tiny.plain_bundle)

    def refuse(*args, **kwargs):
        raise AssertionError("image encoder loaded for a text query")

    monkeypatch.setattr(ClipEncoder, "_clip", property(refuse))
    monkeypatch.setattr(FastImageEncoder, "load", classmethod(refuse))
    assert len(_search(cli, library, tiny.plain_bundle, "고양이")) == 8


def _copy_outside(photo: Path, tmp_path: Path) -> Path:
    """A copy of `photo` outside the library: an image search with it finds `photo` first
    (the query photo itself is never among its results, issue 23)."""
    copy = tmp_path / "outside" / photo.name
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(photo, copy)
    return copy


def test_image_search_leaves_the_photo_itself_out_and_ranks_a_copy_first(
    cli, tiny, photos, library, tmp_path
):
    _index(cli, photos, library, tiny.plain_bundle)
    for probe in [photos / "고양이.png", photos / "여행" / "산.jpg"]:
        hits = _search(cli, library, tiny.plain_bundle, "--image", probe, "-n", "3")
        assert len(hits) == 3 and str(probe) not in [hit["path"] for hit in hits]
        copy = _copy_outside(probe, tmp_path)
        hits = _search(cli, library, tiny.plain_bundle, "--image", copy, "-n", "3")
        assert hits[0]["path"] == str(probe)
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_image_search_with_a_photo_outside_the_library(cli, tiny, photos, library, tmp_path):
    _index(cli, photos, library, tiny.plain_bundle)
    outside = tmp_path / "outside.png"
    shutil.copy(photos / "고양이.png", outside)
    hits = _search(cli, library, tiny.plain_bundle, "--image", outside, "-n", "1")
    assert hits[0]["path"] == str(photos / "고양이.png")


def test_deleted_photo_is_pruned_and_no_longer_found(cli, tiny, photos, library):
    _index(cli, photos, library, tiny.plain_bundle)
    victim = photos / "바다_노을.jpg"
    victim.unlink()
    report = _index(cli, photos, library, tiny.plain_bundle)
    assert report["removed"] == 1 and report["unchanged"] == 7
    hits = _search(cli, library, tiny.plain_bundle, "바다 노을", "-n", "50")
    assert len(hits) == 7
    assert str(victim) not in {h["path"] for h in hits}


def test_changed_photo_is_embedded_again(cli, tiny, photos, library, tmp_path):
    _index(cli, photos, library, tiny.plain_bundle)
    target = photos / "dog.jpeg"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(target, format="JPEG")
    report = _index(cli, photos, library, tiny.plain_bundle)
    assert report["updated"] == 1 and report["unchanged"] == 7
    copy = _copy_outside(target, tmp_path)
    hits = _search(cli, library, tiny.plain_bundle, "--image", copy, "-n", "1")
    assert hits[0]["path"] == str(target)


def test_rename_and_move_are_recognised_without_embedding(cli, tiny, photos, library, monkeypatch):
    _index(cli, photos, library, tiny.plain_bundle)
    renamed = photos / "노을_바다.jpg"
    os.rename(photos / "바다_노을.jpg", renamed)
    (photos / "새폴더").mkdir()
    moved = photos / "새폴더" / "고양이.png"
    os.rename(photos / "고양이.png", moved)
    shutil.copy(photos / "dog.jpeg", photos / "dog copy.jpeg")

    refuse_image_encoding(monkeypatch, "re-embedded a renamed, moved or copied photo")
    report = _index(cli, photos, library, tiny.plain_bundle)
    assert report["moved"] == 2
    assert report["added"] == 1  # the copy, its embedding taken from the original
    assert report["removed"] == 0
    hits = _search(cli, library, tiny.plain_bundle, "노을", "-n", "20")
    paths = {h["path"] for h in hits}
    assert {str(renamed), str(moved), str(photos / "dog copy.jpeg")} <= paths
    assert len(paths) == 9


def test_unreadable_photo_is_skipped_and_reported(cli, tiny, photos, library):
    (photos / "broken.jpg").write_bytes(b"this is not a jpeg")
    result = cli("index", photos, "--library", library, "--model", tiny.plain_bundle, "--json")
    assert result.exit_code == 0
    report = result.json()
    assert report["added"] == 8 and report["failed"] == 1
    assert report["failures"][0]["path"] == str(photos / "broken.jpg")
    assert "could not be indexed" in result.stderr


def test_human_output_is_a_table(cli, tiny, photos, library, monkeypatch):
    from hanclip_cli import common

    _index(cli, photos, library, tiny.plain_bundle)
    # A terminal wide enough for the table (narrower, one record a line: test_first_hour_cli).
    monkeypatch.setattr(common.console, "width", 300)
    result = cli("search", "바다 위 노을", "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 0
    assert "score" in result.stdout
    for photo in [p for p in photos.rglob("*") if p.is_file()]:
        assert photo.name in result.stdout  # paths are wrapped whole, never cut short


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_a_one_line_error(cli, tiny, photos, library, query):
    _index(cli, photos, library, tiny.plain_bundle)
    result = cli("search", query, "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "empty" in result.stderr


def test_search_before_index_is_an_error(cli, tiny, library):
    result = cli("search", "바다", "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 2
    assert "hanclip index" in result.stderr
    assert not library.exists()


def test_unknown_model_is_a_one_line_error(cli, photos, library):
    result = cli("index", photos, "--library", library, "--model", "no-such-model")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown model 'no-such-model'" in result.stderr


def test_missing_folder_is_an_error(cli, tiny, library, tmp_path):
    result = cli("index", tmp_path / "nope", "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr


def test_bundle_with_heads_indexes_and_searches(cli, tiny, photos, library, tmp_path):
    from hanclip_library.vector_index import load_index

    _index(cli, photos, library, tiny.heads_bundle)
    copy = _copy_outside(photos / "dog.jpeg", tmp_path)
    hits = _search(cli, library, tiny.heads_bundle, "--image", copy)
    assert hits[0]["path"] == str(photos / "dog.jpeg")
    assert load_index(library).dim == 16


def test_search_with_another_bundle_reprojects_without_reindexing(
    cli, tiny, photos, library, monkeypatch
):
    from hanclip_library.vector_index import load_index
    from hanclip_model import resolve_bundle

    _index(cli, photos, library, tiny.plain_bundle)
    assert load_index(library).fingerprint == resolve_bundle(tiny.plain_bundle).fingerprint

    refuse_image_encoding(monkeypatch, "re-embedded photos to switch heads")
    hits = _search(cli, library, tiny.heads_bundle, "고양이", "-n", "3")
    assert len(hits) == 3
    assert load_index(library).fingerprint == resolve_bundle(tiny.heads_bundle).fingerprint


def test_search_uses_the_model_the_library_was_indexed_with(cli, tiny, photos, library):
    _index(cli, photos, library, tiny.heads_bundle)
    result = cli("search", "바다", "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    assert "mclip" not in result.stderr
    assert len(result.json()) == 8


def test_hidden_folders_and_files_are_skipped_unless_asked(cli, tiny, photos, library):
    # Not ".thumbnails": that one is excluded by default even when hidden ones are walked.
    hidden = photos / ".private"
    hidden.mkdir()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(hidden / "thumb.jpg")
    Image.new("RGB", (20, 20), (4, 5, 6)).save(photos / "._resource.jpg")
    assert _index(cli, photos, library, tiny.plain_bundle)["scanned"] == 8
    report = _index(cli, photos, library, tiny.plain_bundle, "--include-hidden")
    assert report["added"] == 2 and report["unchanged"] == 8


def test_exif_date_and_size_are_stored_and_shown(cli, tiny, photos, library, tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2021:05:01 09:15:00"
    Image.new("RGB", (90, 60), (0, 90, 200)).save(photos / "dated.jpg", exif=exif)
    _index(cli, photos, library, tiny.plain_bundle)
    copy = _copy_outside(photos / "dated.jpg", tmp_path)
    hits = _search(cli, library, tiny.plain_bundle, "--image", copy, "-n", "1")
    assert hits[0]["taken_at"] == "2021-05-01T09:15:00"
    assert (hits[0]["width"], hits[0]["height"]) == (90, 60)


def test_another_image_model_needs_reembed_and_says_so(cli, tiny, photos, library, tmp_path):
    from hanclip_eval.tiny_models import build_tiny_open_clip, write_bundle_dir

    other_clip = build_tiny_open_clip(tmp_path / "other-clip", embed_dim=32, seed=7)
    other = write_bundle_dir(tmp_path / "other", other_clip, tiny.text_dense, name="other")
    _index(cli, photos, library, tiny.plain_bundle)

    search = cli("search", "바다", "--library", library, "--model", other)
    assert search.exit_code == 2
    assert "--reembed" in search.stderr and f"--model {other}" in search.stderr
    assert len(search.stderr.strip().splitlines()) == 1

    refused = cli("index", photos, "--library", library, "--model", other)
    assert refused.exit_code == 2 and "--reembed" in refused.stderr
    assert _search(cli, library, tiny.plain_bundle, "바다")  # the library is untouched

    report = _index(cli, photos, library, other, "--reembed")
    assert report["added"] == 8
    copy = _copy_outside(photos / "dog.jpeg", tmp_path)
    hits = _search(cli, library, other, "--image", copy, "-n", "1")
    assert hits[0]["path"] == str(photos / "dog.jpeg")


def test_index_without_model_uses_env_then_installed_bundle(
    cli, tiny, photos, library, monkeypatch
):
    import shutil

    monkeypatch.setenv("HANCLIP_MODEL", str(tiny.plain_bundle))
    result = cli("index", photos, "--library", library, "--json")
    assert result.exit_code == 0 and "mclip" not in result.stderr
    monkeypatch.delenv("HANCLIP_MODEL")

    other = library.parent / "other-library"
    shutil.copytree(tiny.heads_bundle, other / "models" / "default")
    result = cli("index", photos, "--library", other, "--json")
    assert result.exit_code == 0, result.stderr
    from hanclip_library.vector_index import load_index

    assert load_index(other).dim == 16  # the installed heads bundle was used
