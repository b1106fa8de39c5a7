"""The hanclip checkout `benchmarks/scale.py` measures, from the outside: its commands run as
`python -m hanclip_cli` with PYTHONPATH=CHECKOUT, so an older commit can be measured on the
same fabricated libraries."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchkit.processes import BenchmarkError, ProcessRun, log, run_process
from benchkit.workspace import EMBEDDING_ONLY, Workspace, isolated_env, photo_rows

from scalebench.library import raw_dim, template_jpeg, unique_jpeg

PAGE = 10  # results per search: `-n 10`
# A search that neither asks a running `hanclip serve` nor starts one (serve/discovery.py).
ON_ITS_OWN = {"HANCLIP_VIA_SERVER": "0", "HANCLIP_RESIDENT": "0"}


@dataclass(frozen=True)
class Checkout:
    """A hanclip source tree, run as `python -m hanclip_cli` with PYTHONPATH set to it."""

    path: Path
    commit: str  # short HEAD, "+changes" when its product files differ from it
    key: str  # names its measured libraries: the path and HEAD

    @classmethod
    def at(cls, path: Path) -> Checkout:
        path = path.resolve()
        if not (path / "hanclip_cli" / "__main__.py").is_file():
            raise BenchmarkError(f"{path} is not a hanclip checkout (no hanclip_cli/__main__.py)")
        head = _git(path, "rev-parse", "--short", "HEAD") or "unknown"
        changes = _git(path, "status", "--porcelain", "--", "hanclip_cli", "hanclip_model")
        commit = f"{head}+changes" if changes else head
        digest = hashlib.sha1(f"{path}\0{head}".encode()).hexdigest()[:10]
        return cls(path, commit, f"{head}-{digest}")

    @property
    def has_text(self) -> bool:
        """Whether it reads the text in photos (issue 24): `photo_text`, `index --no-ocr`,
        `search --no-text`."""
        return (self.path / "hanclip_library" / "photo_text.py").is_file()

    @property
    def label(self) -> str:
        return f"{self.path} @ {self.commit}"

    def workspace(self, work: Path, bundle: Path) -> Workspace:
        """Its commands on `bundle`, caches under `work`; PYTHONSAFEPATH keeps the current
        directory (another checkout, perhaps) off the path. `index` is not polled."""
        env = {**isolated_env(work), "PYTHONPATH": str(self.path), "PYTHONSAFEPATH": "1"}
        return Workspace(
            work, bundle, env, [sys.executable, "-m", "hanclip_cli"], watch_index=False
        )


def _git(path: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def index(
    ws: Workspace, folder: Path, library: Path, *, no_ocr: bool = False
) -> tuple[ProcessRun, dict[str, int]]:
    """`hanclip index FOLDER --json` and the counts it printed. `no_ocr` (a checkout that
    reads text only): no recognition pass, which would read every fabricated photo."""
    run, _ = ws.index(folder, library, device=None, options=EMBEDDING_ONLY if no_ocr else ())
    return run, json.loads(run.stdout)


def search(
    ws: Workspace, query: str, library: Path, *options: str, on_its_own: bool = False
) -> tuple[ProcessRun, list[dict]]:
    """`hanclip search QUERY --json -n PAGE OPTIONS...` and its hits. `on_its_own`: neither
    asking a running server nor starting one (a checkout from before issue 16 ignores the two
    variables and always searches on its own)."""
    env = ON_ITS_OWN if on_its_own else None
    run = ws.search(query, library, "-n", str(PAGE), *options, env=env)
    hits = json.loads(run.stdout)
    if not hits:
        raise BenchmarkError(f"hanclip search {query!r} found nothing in {library}")
    return run, hits


def probe(ws: Workspace, what: str, library: Path) -> dict[str, float | int | None]:
    """`_PROBE` in a fresh process: "load" or "sync" timed in process."""
    cmd = [sys.executable, "-c", _PROBE, what, str(library), str(ws.bundle)]
    return json.loads(run_process(cmd, ws.env).stdout.strip().splitlines()[-1])


# In a fresh process of the measured checkout: "load" times `load_index(directory)`; "sync"
# times `sync_index(directory, store, model, write=False)` (the freshness check and the load
# it makes), then the id read of the check before issue 16 (`store.ids()`, `labels`).
_PROBE = r"""
import json, sys, time
from pathlib import Path
what, directory, bundle = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
import hnswlib, numpy
from hanclip_library import vector_index
out = {}
if what == "load":
    start = time.perf_counter()
    vindex = vector_index.load_index(directory)
    out["load_s"] = time.perf_counter() - start
else:
    from hanclip_library.store import PhotoStore
    from hanclip_model import load_bundle
    model = load_bundle(bundle, device="cpu", few_texts=True)
    model.fingerprint
    store = PhotoStore(directory, create=False)
    start = time.perf_counter()
    vindex = vector_index.sync_index(directory, store, model, write=False)
    out["sync_s"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        store.ids()
        vindex.labels
        out["id_read_s"] = time.perf_counter() - start
    except AttributeError:
        out["id_read_s"] = None
out["vectors"] = None if vindex is None else len(vindex)
print(json.dumps(out))
"""


def seed_dim(ws: Workspace, *, no_ocr: bool = False) -> int:
    """The bundle's raw image dimension, as the checkout stores it: one small JPEG indexed
    into a seed library (kept per bundle); `no_ocr` as for `index`."""
    digest = hashlib.sha1(str(ws.bundle.resolve()).encode()).hexdigest()[:10]
    seed = ws.root / "seed" / digest
    library = seed / "library"
    if not (library / "library.db").is_file() or photo_rows(library / "library.db") != 1:
        shutil.rmtree(seed, ignore_errors=True)
        (seed / "photo").mkdir(parents=True)
        (seed / "photo" / "seed.jpg").write_bytes(unique_jpeg(template_jpeg(), 0))
        log("seed: indexing one photo to learn the bundle's raw dimension")
        _, counts = index(ws, seed / "photo", library, no_ocr=no_ocr)
        if counts.get("added") != 1:
            raise BenchmarkError(f"the seed index added {counts.get('added')} of 1: {counts}")
    return raw_dim(library)
