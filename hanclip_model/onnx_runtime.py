"""What the fast text and the fast image runtimes share: ONNX Runtime sessions, the provider
for a device, a quiet quantizer, the cosine their verifications measure, the rule of the
export cache (one folder per model, named by a fingerprint of its weights, used as it is
while current, the stale ones of the same model swept away), and the record of an export
that was refused (`<folder>.refused.json`: the reason, kept while the libraries that made and
checked the graph are the same versions, so a refused model is not exported again each run).

onnxruntime is imported only when a session is opened; this module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from hanclip_model.device import is_cuda, usable_cores
from hanclip_model.errors import BundleError
from hanclip_model.files import atomic_write_text

NOT_DOWNLOADED = "not-downloaded"
REFUSED_SUFFIX = ".refused.json"


def inference_session(
    path: Path,
    *,
    preoptimized: bool = False,
    prepack: bool = True,
    device: str = "cpu",
) -> Any:
    """A session for one short query on a small CPU: every core on one operator at a time.

    The graph is optimised for this CPU as it opens, unless `preoptimized`: a graph an earlier
    export saved already optimised (exports store one graph now; see `fast_image.runtime`).
    `device` "cuda[:N]": ONNX Runtime's CUDA provider first (needs `onnxruntime-gpu`), the CPU
    for what it lacks."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    levels = ort.GraphOptimizationLevel
    if preoptimized:
        options.graph_optimization_level = levels.ORT_DISABLE_ALL
    else:
        options.graph_optimization_level = levels.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = usable_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # keep optimiser notices out of the CLI's output
    # Waiting threads sleep instead of spinning: on a busy machine spinning threads steal the
    # cores the query needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=providers(device))


def providers(device: str) -> list[str | tuple[str, dict[str, int]]]:
    """ONNX Runtime's execution providers for `device`, in the order it should try them."""
    chosen: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
    if is_cuda(device):
        index = int(device.partition(":")[2] or "0")
        chosen.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    return chosen


@contextmanager
def root_logger_muted() -> Iterator[None]:
    """ONNX Runtime's quantizer advises through `logging.warning`, which would also give the
    root logger a stderr handler for the rest of the process (whatever its level); a temporary
    NullHandler takes the advice."""
    root = logging.getLogger()
    absorb = logging.NullHandler()
    root.addHandler(absorb)
    try:
        yield
    finally:
        root.removeHandler(absorb)


def worst_cosine(embed, texts, reference: np.ndarray) -> float:
    """The worst cosine to `reference` (a row per text) of `texts` embedded by `embed` one at
    a time and in one padded batch: how an export is verified."""
    single = np.concatenate([embed([text]) for text in texts])
    batched = embed(list(texts))
    return float(min(row_cosines(single, reference).min(), row_cosines(batched, reference).min()))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of `a` with the same row of `b`, in float64 so a recorded worst
    cosine shows how far below 1 it is."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
    )


# -- the export cache ------------------------------------------------------------------------


class ExportConfig(Protocol):
    """What every export's config records of its source: the model and its weights."""

    @property
    def spec(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...


Config = TypeVar("Config", bound=ExportConfig)


def export_dir(
    cache_root: str | Path, kind: str, format: int, spec: str, fingerprint: str | None
) -> Path:
    """The cache folder of `spec`'s export under `cache_root/kind`: the name hashes the export
    format, the spec and the weights' `fingerprint` (None: a hub model not downloaded yet), so
    changed weights or a new format name a new folder."""
    key = f"{format}\n{spec}\n{fingerprint or NOT_DOWNLOADED}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return Path(cache_root) / kind / digest


def current_config(
    directory: Path,
    config_name: str,
    read: Callable[[Path], Config],
    spec: str,
    fingerprint: Callable[[str], str | None],
) -> Config | None:
    """The config of the export in `directory` when it is one of `spec` with the weights
    `fingerprint(spec)` names now; None when there is none, it cannot be read, or it is stale.
    What else makes an export usable (its verification) the caller checks on what comes back."""
    if not (directory / config_name).is_file():
        return None
    try:
        config = read(directory)
    except BundleError:
        return None
    if config.spec != spec or config.fingerprint != fingerprint(spec):
        return None
    return config


def remove_other_exports(
    keep: Path, spec: str, config_name: str, read_spec: Callable[[Path], str]
) -> list[Path]:
    """Remove the export folders beside `keep` of the model `spec` (stale weights: an export
    is hundreds of MB): those holding a `config_name` that `read_spec` reads as `spec` (one it
    cannot read, BundleError, is left alone). Returns the folders removed."""
    removed = []
    for other in keep.parent.iterdir():
        # Dot-folders are other processes' exports still being built or swapped in.
        if other == keep or other.name.startswith(".") or not (other / config_name).is_file():
            continue
        try:
            stale = read_spec(other) == spec
        except BundleError:
            continue
        if stale:
            shutil.rmtree(other, ignore_errors=True)
            removed.append(other)
    return removed


# -- refused exports ---------------------------------------------------------------------------


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """The installed version of each of `packages` (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def refusal_path(directory: Path) -> Path:
    """Where the refusal of the export folder `directory` is recorded: beside it."""
    return directory.with_name(directory.name + REFUSED_SUFFIX)


def recorded_refusal(directory: Path, versions: dict[str, str | None]) -> str | None:
    """The reason recorded why `directory`'s model was not exported, if it was recorded with
    these `versions` of the libraries that make and check the export; else None."""
    try:
        record = json.loads(refusal_path(directory).read_text(encoding="utf-8"))
        if record["versions"] != versions:
            return None
        return str(record["reason"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None


def record_refusal(
    directory: Path, reason: str, versions: dict[str, str | None], **about: object
) -> None:
    """Record beside `directory` that its export was refused for `reason` with `versions`
    installed; `about` (format, spec) is kept in the record for a reader."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    record = {**about, "reason": reason, "versions": versions}
    atomic_write_text(refusal_path(directory), json.dumps(record, ensure_ascii=False) + "\n")


def clear_refusal(directory: Path) -> None:
    refusal_path(directory).unlink(missing_ok=True)


def settle_export(
    settled: Path, spec: str, config_name: str, read_spec: Callable[[Path], str]
) -> Path:
    """After a verified export into `settled`: its refusal record cleared, and the model's
    stale exports beside it removed (`remove_other_exports`) with theirs. Returns `settled`."""
    clear_refusal(settled)
    for stale in remove_other_exports(settled, spec, config_name, read_spec):
        clear_refusal(stale)
    return settled
