"""The index decision on plain values: what is unchanged, retried, hashed, moved, pruned."""

from __future__ import annotations

from hanclip_library.index_plan import (
    Candidate,
    FileInfo,
    HashError,
    HashFailure,
    PathUpdate,
    Pending,
    ScanFailure,
    folders_to_probe,
    plan_hashes,
    plan_index,
)
from hanclip_library.store import OfflineFolder, PhotoRecord, RecordedFailure


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


# -- offline folders and excludes ----------------------------------------------------------------


def test_rows_of_a_missing_root_are_kept_as_one_offline_folder() -> None:
    rows = [_row(1, "/usb/Photos/a.jpg", "aa"), _row(2, "/usb/Photos/2023/b.jpg", "bb")]
    probe = folders_to_probe([], [], rows, roots=["/usb/Photos"])
    assert probe == ("/usb/Photos", "/usb/Photos/2023")
    states = {"/usb/Photos": "missing", "/usb/Photos/2023": "missing"}
    plan = plan_index([], [], rows, [], roots=["/usb/Photos"], folders=states)
    assert plan.vanished == ()
    assert plan.kept == tuple(rows)
    assert plan.offline == (OfflineFolder("/usb/Photos", "missing", 2),)


def test_an_empty_root_is_offline_like_an_unmounted_drive() -> None:
    rows = [_row(i, f"/mnt/usb/{i}.jpg", f"h{i}") for i in range(11)]
    plan = plan_index([], [], rows, [], roots=["/mnt/usb"], folders={"/mnt/usb": "empty"})
    assert plan.offline == (OfflineFolder("/mnt/usb", "empty", 11),)
    assert (plan.vanished, len(plan.kept)) == ((), 11)


def test_a_folder_gone_below_a_present_root_is_offline_and_its_siblings_are_not() -> None:
    here = _row(1, "/p/여행/a.jpg", "aa")
    away = [_row(2, "/p/2023/jeju/b.jpg", "bb"), _row(3, "/p/2023/c.jpg", "cc")]
    gone_file = _row(4, "/p/d.jpg", "dd")
    files = [FileInfo("/p/여행/a.jpg", 100, 1)]
    rows = [here, *away, gone_file]
    assert folders_to_probe(files, [], rows, roots=["/p"]) == ("/p", "/p/2023", "/p/2023/jeju")
    states = {"/p": "present", "/p/2023": "missing", "/p/2023/jeju": "missing"}
    plan = plan_index(files, [], rows, [], roots=["/p"], folders=states)
    # The top-most folder that is not there is the offline one; the file gone from a folder
    # that is there has vanished.
    assert plan.offline == (OfflineFolder("/p/2023", "missing", 2),)
    assert plan.kept == tuple(away)
    assert plan.vanished == (gone_file,)
    assert plan.unchanged == (files[0],)


def test_an_empty_subfolder_that_held_photos_is_offline() -> None:
    row = _row(1, "/p/a/b.jpg", "bb")
    states = {"/p": "present", "/p/a": "empty"}
    plan = plan_index([FileInfo("/p/x.jpg", 1, 1)], [], [row], [], roots=["/p"], folders=states)
    assert plan.offline == (OfflineFolder("/p/a", "empty", 1),)


def test_photos_go_only_when_every_folder_above_them_is_there() -> None:
    rows = [_row(1, "/p/a/x.jpg", "aa"), _row(2, "/p/y.jpg", "bb")]
    states = {"/p": "present", "/p/a": "present"}
    plan = plan_index([], [], rows, [], roots=["/p"], folders=states)
    assert plan.vanished == tuple(rows)
    assert (plan.kept, plan.offline) == ((), ())


def test_a_probed_unreadable_folder_and_a_folder_the_scan_could_not_list_are_offline() -> None:
    probed, listed = _row(1, "/p/io/a.jpg", "aa"), _row(2, "/p/locked/b.jpg", "bb")
    blocked = ScanFailure("/p/locked", "cannot list folder: Permission denied", folder=True)
    # The folder the scan could not list needs no probe: it is unreadable.
    assert folders_to_probe([], [blocked], [probed, listed], roots=["/p"]) == ("/p", "/p/io")
    states = {"/p": "present", "/p/io": "unreadable"}
    plan = plan_index([], [blocked], [probed, listed], [], roots=["/p"], folders=states)
    assert plan.offline == (
        OfflineFolder("/p/io", "unreadable", 1),
        OfflineFolder("/p/locked", "unreadable", 1),
    )
    assert plan.vanished == ()


def test_a_photo_given_as_a_root_and_gone_is_offline() -> None:
    row = _row(1, "/p/a.jpg", "aa")
    assert folders_to_probe([], [], [row], roots=["/p/a.jpg"]) == ("/p/a.jpg",)
    plan = plan_index([], [], [row], [], roots=["/p/a.jpg"], folders={"/p/a.jpg": "missing"})
    assert plan.offline == (OfflineFolder("/p/a.jpg", "missing", 1),)


def test_seen_rows_need_no_probe() -> None:
    row = _row(1, "/p/a/b.jpg", "aa")
    assert folders_to_probe([FileInfo("/p/a/b.jpg", 100, 1)], [], [row], roots=["/p"]) == ()


def test_excluded_rows_are_excluded_even_in_an_offline_folder() -> None:
    thumb = _row(1, "/p/@eaDir/a.jpg", "aa")
    junk = _row(2, "/p/x/a.tmp.jpg", "bb")
    kept = _row(3, "/p/x/b.jpg", "cc")
    rows = [thumb, junk, kept]
    excludes = ["@eaDir", "*.tmp.jpg"]
    assert folders_to_probe([], [], rows, roots=["/p"], excludes=excludes) == ("/p", "/p/x")
    plan = plan_index([], [], rows, [], roots=["/p"], folders={"/p": "empty"}, excludes=excludes)
    assert plan.excluded == (thumb, junk)
    assert plan.kept == (kept,)
    assert plan.offline == (OfflineFolder("/p", "empty", 1),)


def test_only_names_below_the_root_are_matched_against_excludes() -> None:
    row = _row(1, "/home/junk/photos/a.jpg", "aa")
    plan = plan_index([], [], [row], [], roots=["/home/junk/photos"], excludes=["junk"])
    assert plan.excluded == ()
    assert plan.vanished == (row,)


def test_a_failure_under_an_offline_folder_is_not_forgotten() -> None:
    row = _row(1, "/p/a/x.jpg", "aa")
    inside = RecordedFailure("/p/a/bad.jpg", 10, 7, "broken JPEG")
    outside = RecordedFailure("/p/bad.jpg", 10, 7, "broken JPEG")
    states = {"/p": "present", "/p/a": "missing"}
    plan = plan_index([], [], [row], [inside, outside], roots=["/p"], folders=states)
    assert plan.forget == ("/p/bad.jpg",)


def test_a_renamed_folder_moves_its_rows_and_is_not_offline() -> None:
    rows = [_row(1, "/p/2023/a.jpg", "aa"), _row(2, "/p/2023/b.jpg", "bb")]
    files = [FileInfo("/p/2023 제주/a.jpg", 100, 1)]
    states = {"/p": "present", "/p/2023": "missing"}
    plan = plan_index(files, [], rows, [], roots=["/p"], folders=states)
    hashed = plan_hashes(plan, {"/p/2023 제주/a.jpg": "aa"})
    assert hashed.moved == (PathUpdate(rows[0], files[0]),)
    # b.jpg did not turn up: still offline, and counted as the only one left.
    assert hashed.kept == (rows[1],)
    assert hashed.offline == (OfflineFolder("/p/2023", "missing", 1),)
    assert (hashed.vanished, hashed.to_embed) == ((), ())
    files.append(FileInfo("/p/2023 제주/b.jpg", 100, 1))
    both = plan_hashes(
        plan_index(files, [], rows, [], roots=["/p"], folders=states),
        {"/p/2023 제주/a.jpg": "aa", "/p/2023 제주/b.jpg": "bb"},
    )
    assert len(both.moved) == 2 and both.offline == () and both.kept == ()


def test_content_of_an_unreadable_folder_found_elsewhere_is_a_copy() -> None:
    row = _row(1, "/p/locked/a.jpg", "aa")
    info = FileInfo("/p/copy.jpg", 100, 1)
    blocked = ScanFailure("/p/locked", "cannot list folder: Permission denied", folder=True)
    hashed = plan_hashes(plan_index([info], [blocked], [row], [], roots=["/p"]), {info.path: "aa"})
    assert hashed.moved == ()
    assert hashed.to_embed == (Pending(info, "aa", None),)
    assert hashed.kept == (row,)
    assert hashed.offline == (OfflineFolder("/p/locked", "unreadable", 1),)
