"""The index decision on plain values: what is unchanged, retried, hashed, moved, pruned."""

from __future__ import annotations

from hanclip_cli.index_plan import (
    Candidate,
    FileInfo,
    HashError,
    HashFailure,
    PathUpdate,
    Pending,
    RecordedFailure,
    ScanFailure,
    plan_hashes,
    plan_index,
)
from hanclip_cli.store import PhotoRecord


def _row(photo_id: int, path: str, sha256: str, size: int = 100, mtime_ns: int = 1) -> PhotoRecord:
    return PhotoRecord(id=photo_id, path=path, size=size, mtime_ns=mtime_ns, sha256=sha256)


def test_a_file_with_its_rows_size_and_mtime_is_unchanged() -> None:
    plan = plan_index([FileInfo("/p/a.jpg", 100, 1)], [], [_row(1, "/p/a.jpg", "aa")], [])
    assert plan.unchanged == (FileInfo("/p/a.jpg", 100, 1),)
    assert plan.candidates == ()
    assert plan.vanished == ()
    assert plan.forget == ()


def test_a_changed_size_or_mtime_makes_a_candidate_with_its_row() -> None:
    a, b = _row(1, "/p/a.jpg", "aa"), _row(2, "/p/b.jpg", "bb")
    files = [FileInfo("/p/a.jpg", 101, 1), FileInfo("/p/b.jpg", 100, 2)]
    plan = plan_index(files, [], [a, b], [])
    assert plan.unchanged == ()
    assert plan.candidates == (Candidate(files[0], a), Candidate(files[1], b))


def test_a_new_file_is_a_candidate_without_a_row() -> None:
    plan = plan_index([FileInfo("/p/new.jpg", 5, 5)], [], [], [])
    assert plan.candidates == (Candidate(FileInfo("/p/new.jpg", 5, 5), None),)


def test_a_failure_is_retried_only_when_the_file_changed() -> None:
    same = RecordedFailure("/p/same.jpg", 10, 7, "broken JPEG")
    changed = RecordedFailure("/p/changed.jpg", 10, 7, "broken JPEG")
    files = [FileInfo("/p/same.jpg", 10, 7), FileInfo("/p/changed.jpg", 10, 8)]
    plan = plan_index(files, [], [], [same, changed])
    assert plan.failed_before == (same,)
    assert plan.candidates == (Candidate(files[1], None),)
    assert plan.forget == ()


def test_rows_whose_files_were_not_seen_have_vanished() -> None:
    here, gone = _row(1, "/p/here.jpg", "aa"), _row(2, "/p/gone.jpg", "bb")
    plan = plan_index([FileInfo("/p/here.jpg", 100, 1)], [], [here, gone], [])
    assert plan.vanished == (gone,)
    assert plan.kept == ()


def test_a_row_under_a_folder_that_could_not_be_listed_is_kept() -> None:
    inside, beside = _row(1, "/p/locked/a.jpg", "aa"), _row(2, "/p/lockedout.jpg", "bb")
    blocked = ScanFailure("/p/locked", "cannot list folder: Permission denied", folder=True)
    plan = plan_index([], [blocked], [inside, beside], [])
    assert plan.kept == (inside,)
    assert plan.vanished == (beside,)


def test_a_file_whose_scan_failed_is_not_a_vanished_folder() -> None:
    # A failed stat stands for that file only, not for a folder below it.
    row = _row(1, "/p/a.jpg", "aa")
    plan = plan_index([], [ScanFailure("/p/a.jpg", "broken symbolic link")], [row], [])
    assert plan.kept == ()
    assert plan.vanished == (row,)


def test_the_failure_of_a_file_whose_scan_failed_is_not_forgotten() -> None:
    old = RecordedFailure("/p/a.jpg", 0, 0, "broken symbolic link")
    plan = plan_index([], [ScanFailure("/p/a.jpg", "broken symbolic link")], [], [old])
    assert plan.forget == ()


def test_failures_of_files_no_longer_present_are_forgotten() -> None:
    gone = RecordedFailure("/p/gone.jpg", 10, 7, "broken JPEG")
    still = RecordedFailure("/p/still.jpg", 10, 7, "broken JPEG")
    plan = plan_index([FileInfo("/p/still.jpg", 10, 7)], [], [], [gone, still])
    assert plan.forget == ("/p/gone.jpg",)
    assert plan.failed_before == (still,)


def test_same_content_at_the_same_path_is_touched_only() -> None:
    row = _row(1, "/p/a.jpg", "aa")
    info = FileInfo("/p/a.jpg", 100, 9)
    hashed = plan_hashes(plan_index([info], [], [row], []), {"/p/a.jpg": "aa"})
    assert hashed.touched == (PathUpdate(row, info),)
    assert (hashed.moved, hashed.to_embed, hashed.vanished) == ((), (), ())


def test_changed_content_at_the_same_path_replaces_its_row() -> None:
    row = _row(1, "/p/a.jpg", "aa")
    info = FileInfo("/p/a.jpg", 120, 9)
    hashed = plan_hashes(plan_index([info], [], [row], []), {"/p/a.jpg": "cc"})
    assert hashed.to_embed == (Pending(info, "cc", row),)
    assert hashed.touched == ()


def test_a_renamed_file_moves_its_row() -> None:
    row = _row(1, "/p/old.jpg", "aa")
    info = FileInfo("/p/new.jpg", 100, 1)
    hashed = plan_hashes(plan_index([info], [], [row], []), {"/p/new.jpg": "aa"})
    assert hashed.moved == (PathUpdate(row, info),)
    assert hashed.vanished == ()
    assert hashed.to_embed == ()


def test_a_copy_of_content_still_present_goes_to_embedding() -> None:
    # Not a move: the original stays; embedding reuses its stored vector by hash.
    original = _row(1, "/p/a.jpg", "aa")
    files = [FileInfo("/p/a.jpg", 100, 1), FileInfo("/p/copy.jpg", 100, 3)]
    plan = plan_index(files, [], [original], [])
    hashed = plan_hashes(plan, {"/p/copy.jpg": "aa"})
    assert hashed.to_embed == (Pending(files[1], "aa", None),)
    assert (hashed.moved, hashed.vanished) == ((), ())
    assert plan.unchanged == (files[0],)


def test_two_vanished_twins_and_one_new_file_move_one_and_prune_the_other() -> None:
    first, second = _row(1, "/p/x.jpg", "aa"), _row(2, "/p/y.jpg", "aa")
    info = FileInfo("/p/z.jpg", 100, 1)
    hashed = plan_hashes(plan_index([info], [], [first, second], []), {"/p/z.jpg": "aa"})
    # The last vanished row with that hash is the one that moves.
    assert hashed.moved == (PathUpdate(second, info),)
    assert hashed.vanished == (first,)
    assert hashed.to_embed == ()


def test_a_changed_file_matching_a_vanished_row_is_embedded_not_moved() -> None:
    # It has a row of its own, so it replaces that row; the vanished row is pruned.
    own, gone = _row(1, "/p/a.jpg", "aa"), _row(2, "/p/b.jpg", "bb")
    info = FileInfo("/p/a.jpg", 100, 5)
    hashed = plan_hashes(plan_index([info], [], [own, gone], []), {"/p/a.jpg": "bb"})
    assert hashed.to_embed == (Pending(info, "bb", own),)
    assert hashed.moved == ()
    assert hashed.vanished == (gone,)


def test_a_hash_error_is_a_failure_and_nothing_else() -> None:
    row = _row(1, "/p/a.jpg", "aa")
    info = FileInfo("/p/new.jpg", 100, 1)
    plan = plan_index([info], [], [row], [])
    hashed = plan_hashes(plan, {"/p/new.jpg": HashError("Permission denied")})
    assert hashed.failed == (HashFailure(info, "Permission denied"),)
    assert (hashed.touched, hashed.moved, hashed.to_embed) == ((), (), ())
    assert hashed.vanished == (row,)
