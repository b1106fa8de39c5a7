"""The libraries `benchmarks/scale.py` fabricates, of 100k and 1M photos, in plain SQL.

Everything done to a library goes through the measured checkout's own commands (`python -m
hanclip_cli` with PYTHONPATH=CHECKOUT) or through plain SQL that holds on schema 4 and on
anything a later migration adds: a library is fabricated at schema 4 and migrated by the
first `hanclip index` the measured checkout runs on it.

A fabricated library: `size` rows with 512-d (the bundle's raw image dimension) random unit
embeddings drawn around a few hundred centres. The first min(size, real_files) rows are real
small files on disk (tiny JPEGs, each with its own comment segment, so each file is distinct),
with each file's real size, mtime_ns and sha256: a re-index of their root finds every one
unchanged. Each other row is a hard link to one empty file, in a synthetic folder of the work
directory (`ensure_synthetic_files`, made once and grown as a larger size needs): search
leaves out a hit whose file is gone, so every row must have a file for the library to be a
healthy one. The synthetic folder is no root of any measured `index` (a walked root would
update or drop its rows), so the re-index still walks the real files alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from benchkit.processes import BenchmarkError, log
from benchkit.vectors import around

FORMAT = 2  # of the fabricated libraries and files: bump when what is fabricated changes
REAL_FILES = 100_000
FOLDERS = 100  # the real files' subfolders
SYNTHETIC_PER_FOLDER = 1_000  # the synthetic rows' files per subfolder
CENTRES = 256  # the embeddings' clusters
SPREAD = 1.5  # noise around a centre, relative to the centre's length (both random normal)
BATCH_ROWS = 10_000

# Schema 4 of `hanclip_library/migrations.py`, in plain SQL (the indexes are created after the
# rows, which is faster and gives the same schema).
SCHEMA_VERSION = 4
_TABLES = (
    "CREATE TABLE photos (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, "
    "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, "
    "width INTEGER, height INTEGER, taken_at TEXT, embedding BLOB NOT NULL, indexed_at TEXT)",
    "CREATE TABLE failures (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
    "error TEXT, failed_at TEXT)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE offline_folders (path TEXT PRIMARY KEY, reason TEXT NOT NULL, "
    "photos INTEGER NOT NULL, since TEXT NOT NULL)",
)
_INDEXES = (
    "CREATE UNIQUE INDEX idx_photos_path ON photos (path)",
    "CREATE INDEX idx_photos_sha256 ON photos (sha256)",
    "CREATE INDEX idx_photos_taken_at ON photos (taken_at)",
    "CREATE INDEX idx_photos_date ON photos (taken_at, mtime_ns)",
)


def template_jpeg(side: int = 64) -> bytes:
    """A small valid JPEG (a few hundred bytes)."""
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), -1)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=50)
    return out.getvalue()


def unique_jpeg(template: bytes, number: int) -> bytes:
    """`template` with a comment segment (COM) naming `number` after its SOI marker: a valid
    JPEG whose bytes, and so sha256, no other number's copy shares."""
    payload = f"hanclip-scale {number}".encode()
    return (
        template[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + template[2:]
    )


@dataclass(frozen=True)
class RealFile:
    path: str
    size: int
    mtime_ns: int
    sha256: str


def real_file_path(root: Path, number: int, count: int) -> Path:
    per_folder = max(1, -(-count // FOLDERS))
    return root / f"d{number // per_folder:03d}" / f"p{number:06d}.jpg"


def ensure_real_files(work: Path, count: int) -> tuple[Path, list[RealFile]]:
    """`count` distinct small JPEGs in FOLDERS subfolders of one root, written once per work
    directory (a marker beside the root says they are whole); their stat and sha256."""
    root = work / f"files-{count}-f{FORMAT}"
    marker = root.with_name(root.name + ".complete")
    template = template_jpeg()
    if not marker.is_file():
        log(f"files: writing {count:,} small JPEGs under {root}")
        shutil.rmtree(root, ignore_errors=True)
        for number in range(count):
            path = real_file_path(root, number, count)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(unique_jpeg(template, number))
        marker.write_text(json.dumps({"count": count, "format": FORMAT}))
    files = []
    for number in range(count):
        path = real_file_path(root, number, count)
        data = unique_jpeg(template, number)
        st = os.stat(path)
        if st.st_size != len(data):
            raise BenchmarkError(f"{path} changed since it was written: remove {marker}")
        files.append(
            RealFile(str(path), st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
        )
    return root, files


def synthetic_folder(work: Path, real_files: int) -> Path:
    """Where the synthetic rows of libraries with `real_files` real files have their files
    (never a root of a measured `index`)."""
    return work / f"synthetic-r{real_files}-f{FORMAT}"


def synthetic_path(root: Path, number: int) -> str:
    return f"{root}/{number // SYNTHETIC_PER_FOLDER:04d}/{number:07d}.jpg"


def ensure_synthetic_files(work: Path, real_files: int, size: int) -> Path:
    """An empty file at `synthetic_path` for every row number from `real_files` to `size`:
    in each subfolder, hard links to its first file (a directory entry each, no inode; a
    file system caps the links of one file), made once per work directory and extended when
    a larger size asks; a marker beside the folder says up to where they are whole. Returns
    the folder."""
    root = synthetic_folder(work, real_files)
    marker = root.with_name(root.name + ".complete")
    try:
        done = int(json.loads(marker.read_text())["upto"])
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(root, ignore_errors=True)
        done = real_files
    if done >= size:
        return root
    log(f"synthetic files: rows {done:,} to {size:,} under {root}")
    started = time.perf_counter()
    first = ""
    for number in range(done, size):
        path = synthetic_path(root, number)
        if number == done or number % SYNTHETIC_PER_FOLDER == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            first = synthetic_path(root, max(real_files, number - number % SYNTHETIC_PER_FOLDER))
            with open(first, "ab"):
                pass
        if path != first:
            with contextlib.suppress(FileExistsError):  # made by an interrupted run
                os.link(first, path)
        if number and number % 200_000 == 0:
            log(f"synthetic files: {number:,} of {size:,}")
    log(f"synthetic files: {size - done:,} made in {time.perf_counter() - started:.1f} s")
    marker.write_text(json.dumps({"upto": size, "format": FORMAT}))
    return root


def fabricate_library(
    directory: Path,
    size: int,
    files: Sequence[RealFile],
    dim: int,
    synthetic: Path,
    seed: int = 0,
) -> None:
    """A schema-4 `library.db` in `directory` (made in a staging folder, then renamed in):
    one row per real file, then synthetic rows up to `size`, at their files under `synthetic`
    (`ensure_synthetic_files`)."""
    if len(files) > size:
        raise ValueError(f"{len(files)} real files for a library of {size}")
    staging = directory.with_name(directory.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    conn = sqlite3.connect(str(staging / "library.db"))
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        with conn:
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                [json.dumps(SCHEMA_VERSION)],
            )
        for start in range(0, size, BATCH_ROWS):
            count = min(BATCH_ROWS, size - start)
            vectors = around(rng, centres, count, SPREAD)
            rows = []
            for offset in range(count):
                number = start + offset
                blob = vectors[offset].tobytes()
                if number < len(files):
                    f = files[number]
                    rows.append((f.path, f.size, f.mtime_ns, f.sha256, 64, 64, blob, now))
                else:
                    mtime = 1_600_000_000_000_000_000 + number * 1_000_000_000
                    row = (synthetic_path(synthetic, number), 3_500_000, mtime, f"{number:064x}")
                    rows.append((*row, 4032, 3024, blob, now))
            with conn:
                conn.executemany(
                    "INSERT INTO photos (path, size, mtime_ns, sha256, width, height, taken_at, "
                    "embedding, indexed_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    rows,
                )
            if start and start % 200_000 == 0:
                log(f"library: {start:,} of {size:,} rows")
        with conn:
            for statement in _INDEXES:
                conn.execute(statement)
        conn.execute("PRAGMA journal_mode=WAL")  # as `hanclip index` leaves a library
    finally:
        conn.close()
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def raw_dim(directory: Path) -> int:
    """The length of the stored embeddings of a library (float32)."""
    with closing(sqlite3.connect(f"file:{directory / 'library.db'}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT length(embedding) FROM photos LIMIT 1").fetchone()
    if row is None:
        raise BenchmarkError(f"no photo in {directory}")
    return int(row[0]) // 4


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.is_file() else 0.0


def hnsw_mb(library: Path) -> float:
    return sum(file_mb(p) for p in library.glob("hnsw-*.bin"))
