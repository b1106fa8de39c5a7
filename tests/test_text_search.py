"""Search by the text in photos: the fusion with the look, the switches, the output, repair."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from entrypoint import run_entry
from text_photos import BROKEN, PLAIN, SCREENSHOT, FakeEngine, use_engine, write_text_photos

from hanclip_library.photo_text import grams, match_expression, searchable_words, text_match
from hanclip_library.repair import salvage_into, table_copies
from hanclip_library.store import DB_NAME
from hanclip_library.text_engines import Word


@pytest.fixture
def indexed(cli, tiny, tmp_path, library, monkeypatch):
    """(library, photos by name): the text photos indexed and read by the fake engine."""
    photos = write_text_photos(tmp_path / "사진")
    use_engine(monkeypatch, FakeEngine())
    result = cli("index", photos[BROKEN].parent, "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 0, result.stderr
    return library, photos


def search(monkeypatch, capsys, tiny, library, *args, fast=True):
    argv = ["search", *args, "--library", str(library), "--model", str(tiny.plain_bundle)]
    code, out, err = run_entry(monkeypatch, capsys, argv, fast)
    return code, out, err


def search_json(monkeypatch, capsys, tiny, library, *args, fast=True):
    code, out, err = search(monkeypatch, capsys, tiny, library, *args, "--json", fast=fast)
    assert code == 0, err
    import json

    return json.loads(out)


@pytest.mark.parametrize("fast", [True, False])
def test_a_screenshot_is_found_first_by_its_words(indexed, tiny, monkeypatch, capsys, fast):
    library, photos = indexed
    hits = search_json(monkeypatch, capsys, tiny, library, "스타벅스", "영수증", fast=fast)
    assert hits[0]["path"] == str(photos["screenshot.png"])
    match = hits[0]["text_match"]
    assert "스타벅스 영수증" in match["snippet"]
    assert [match["snippet"][s:e] for s, e in match["spans"]] == ["스타벅스", "영수증"]
    assert [box["text"] for box in match["boxes"]] == ["스타벅스", "영수증"]
    assert all("text_match" not in hit for hit in hits[1:])  # the rest by their look
    assert len(hits) == len(photos)


def test_two_syllable_words_and_loose_spacing_are_found(indexed, tiny, monkeypatch, capsys):
    library, photos = indexed
    for words, name in (
        (["카톡"], "chat.png"),
        (["영수"], "screenshot.png"),
        (["4500원"], "screenshot.png"),
    ):
        hits = search_json(monkeypatch, capsys, tiny, library, *words, "--text-only")
        assert [hit["path"] for hit in hits] == [str(photos[name])], words


def test_a_text_free_photo_is_never_a_text_match(indexed, tiny, monkeypatch, capsys):
    library, photos = indexed
    hits = search_json(monkeypatch, capsys, tiny, library, "바다", "노을")
    assert all("text_match" not in hit for hit in hits)
    code, out, err = search(monkeypatch, capsys, tiny, library, "바다", "--text-only")
    assert code == 0 and out == "" and "no photo matched" in err


def test_no_text_is_the_look_alone_and_text_only_the_text_alone(indexed, tiny, monkeypatch, capsys):
    library, photos = indexed
    look = search_json(monkeypatch, capsys, tiny, library, "스타벅스", "--no-text")
    assert all("text_match" not in hit for hit in look) and len(look) == len(photos)
    text = search_json(monkeypatch, capsys, tiny, library, "스타벅스", "--text-only")
    assert [hit["path"] for hit in text] == [str(photos["screenshot.png"])]
    code, _, err = search(monkeypatch, capsys, tiny, library, "x", "--text-only", "--no-text")
    assert code != 0 and "choose one: --text-only or --no-text" in err


def test_without_text_matches_the_look_ranking_is_unchanged(indexed, tiny, monkeypatch, capsys):
    library, _ = indexed
    plain = search_json(monkeypatch, capsys, tiny, library, "고양이", "-n", "5")
    look = search_json(monkeypatch, capsys, tiny, library, "고양이", "-n", "5", "--no-text")
    assert plain == look


def test_exactly_n_with_filters(indexed, tiny, monkeypatch, capsys):
    library, photos = indexed
    for n in (1, 3, 20):
        hits = search_json(monkeypatch, capsys, tiny, library, "카톡", "-n", str(n))
        assert len(hits) == min(n, len(photos)) and hits[0]["path"] == str(photos["chat.png"])
    folder = photos[BROKEN].parent / "아래"
    folder.mkdir()
    moved = folder / PLAIN[0]
    photos[PLAIN[0]].rename(moved)
    use_engine(monkeypatch, FakeEngine())
    code, _, err = run_entry(
        monkeypatch,
        capsys,
        [
            "index",
            str(photos[BROKEN].parent),
            "--library",
            str(library),
            "--model",
            str(tiny.plain_bundle),
        ],
        False,
    )
    assert code == 0, err
    inside = search_json(monkeypatch, capsys, tiny, library, "카톡", "-n", "3", "--in", str(folder))
    assert [hit["path"] for hit in inside] == [str(moved)]
    combined = search_json(monkeypatch, capsys, tiny, library, "카톡", "+", "바다", "-n", "2")
    assert len(combined) == 2 and "text_match" not in combined[0]  # 바다 is in no text


def test_the_table_marks_text_hits_and_paths_stay_plain(indexed, tiny, monkeypatch, capsys):
    library, photos = indexed
    code, out, _ = search(monkeypatch, capsys, tiny, library, "카톡", "-n", "2")
    assert code == 0 and "text" in out.splitlines()[0] and "카톡 메시지" in out
    code, out, _ = search(monkeypatch, capsys, tiny, library, "카톡", "-n", "2", "--paths")
    assert out.splitlines()[0] == str(photos["chat.png"]) and len(out.splitlines()) == 2


def test_info_counts_the_text(indexed, cli):
    library, _ = indexed
    result = cli("info", "--library", library)
    assert "text         8 read (2 with text, 5 without, 1 failed), 0 not read yet" in result.stdout


def test_repair_copies_the_readings_and_rebuilds_the_text_index(indexed, tmp_path):
    library, photos = indexed
    work = tmp_path / "work"
    work.mkdir()
    salvage = salvage_into(library / DB_NAME, work)
    assert salvage.saved == len(photos)
    with closing(sqlite3.connect(work / DB_NAME)) as fresh:
        copied = {table.name for table in table_copies(fresh)}
        assert "photo_text" in copied and not any(n.startswith("photo_text_fts") for n in copied)
        (rows,) = fresh.execute("SELECT COUNT(*) FROM photo_text").fetchone()
        found = fresh.execute(
            "SELECT t.text FROM photo_text_fts JOIN photo_text t ON t.id = photo_text_fts.rowid "
            "WHERE photo_text_fts MATCH ?",
            [match_expression(["영수"])],
        ).fetchall()
        assert fresh.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert rows == len(photos) and found == [(SCREENSHOT,)]


def test_words_are_found_whatever_the_spacing_but_not_across_lines():
    assert grams("스타 벅스") == "스타 타벅 벅스"
    assert grams("AB\nC") == "ab brk c"
    assert searchable_words(["책", "카톡", "A"]) == ("카톡",)
    assert match_expression(["스타벅스", "12,500"]) == '"스타 타벅 벅스" AND "12 25 50 00"'
    match = text_match("영수증: 스타 벅스", [Word("스타", 0, 0, 5, 5, 1.0)], ["스타벅스"])
    assert match.snippet == "영수증: 스타 벅스" and match.spans == ((5, 10),)
    assert [w.text for w in match.boxes] == ["스타"]  # a word holding a part of it
