"""A photo library on disk: where it lives, its lock, and which model it uses."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hanclip_cli.store import DB_NAME, PhotoStore
from hanclip_model.bundle import BUILTIN_BUNDLES, MANIFEST_NAME
from hanclip_model.errors import HanclipError

# Meta key: the fingerprint of the bundle the last complete `index` ran with.
CHECKED_FINGERPRINT = "checked_fingerprint"

DEFAULT_MODEL = "mclip"
LOCK_NAME = "index.lock"
MODELS_DIR = "models"


def library_dir(explicit: Path | None) -> Path:
    """`--library`, else env HANCLIP_HOME, else the platform's user data directory."""
    if explicit is not None:
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    env = os.environ.get("HANCLIP_HOME")
    if env:
        return Path(os.path.abspath(os.path.expanduser(env)))
    from platformdirs import user_data_dir

    return Path(user_data_dir("hanclip", appauthor=False))


class LibraryBusy(HanclipError):
    """Another process holds the library's writer lock."""


class Library:
    """The library directory: `library.db`, the HNSW files, `models/`, the index lock."""

    def __init__(self, directory: Path, *, create: bool) -> None:
        self.directory = directory
        if create:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HanclipError(f"cannot create library directory {directory}: {exc}") from None
            if not os.access(directory, os.W_OK):
                raise HanclipError(f"library directory {directory} is not writable")
        self.store = PhotoStore(directory, create=create)

    @property
    def models_dir(self) -> Path:
        return self.directory / MODELS_DIR

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def writer_lock(self, *, wait: bool = False) -> Iterator[None]:
        """Only one process writes a library at a time; a second one stops with a message."""
        with open(self.directory / LOCK_NAME, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise LibraryBusy(
                    f"another `hanclip index` is running on {self.directory}; wait for it to finish"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class ModelChoice:
    """Which model a command uses and why (`notice` is shown to the user when set)."""

    model: str
    notice: str | None = None


def installed_bundle(models_dir: Path) -> Path | None:
    """`models/default`, else the only bundle in `models/`."""
    if (models_dir / "default" / MANIFEST_NAME).is_file():
        return models_dir / "default"
    if not models_dir.is_dir():
        return None
    bundles = sorted(p for p in models_dir.iterdir() if (p / MANIFEST_NAME).is_file())
    return bundles[0] if len(bundles) == 1 else None


def choose_model(
    explicit: str | None, directory: Path, library: Library | None = None
) -> ModelChoice:
    """`--model`, else env HANCLIP_MODEL, else the model the library (in `directory`, when
    it exists) was indexed with, else the bundle installed in `directory/models/`, else the
    built-in `mclip`."""
    if explicit:
        return ModelChoice(_absolute_if_path(explicit))
    env = os.environ.get("HANCLIP_MODEL")
    if env:
        return ModelChoice(_absolute_if_path(env))
    recorded = library.store.get_meta("model") if library is not None else None
    if isinstance(recorded, str) and (recorded in BUILTIN_BUNDLES or Path(recorded).exists()):
        return ModelChoice(recorded)
    bundle = installed_bundle(directory / MODELS_DIR)
    if bundle is not None:
        return ModelChoice(str(bundle))
    return ModelChoice(
        DEFAULT_MODEL,
        notice="no model given: using the built-in 'mclip' (Multilingual-CLIP); "
        "pass --model or set HANCLIP_MODEL to use another",
    )


def _absolute_if_path(name: str) -> str:
    if name in BUILTIN_BUNDLES:
        return name
    path = Path(os.path.expanduser(name))
    return str(path.resolve()) if path.exists() else name


def open_library(
    library: Path | None, model: str | None, *, for_writing: bool, device: str | None = None
):
    """The library and its model, with the notice for a default model shown.

    For writing, the model is checked completely (both encoders load and their dimensions
    fit the heads) before anything is created or changed on disk, so a bad bundle leaves no
    trace. Returns (Library, HanclipModel, the model name or path as recorded).
    """
    from hanclip_cli.common import notice
    from hanclip_model import load_bundle

    directory = library_dir(library)
    existing = Library(directory, create=False) if (directory / DB_NAME).exists() else None
    if existing is None and not for_writing:
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    choice = choose_model(model, directory, existing)
    if choice.notice:
        notice(choice.notice)
    # Reading is a search: one query, then the process exits.
    bundle = load_bundle(choice.model, device=device, few_texts=not for_writing)
    if not for_writing:
        return existing, bundle, choice.model
    # A library last indexed to the end with this very bundle (same encoder specs, same
    # heads bytes) had it checked then: a re-index need not import torch and load the image
    # model (~10 s) just to learn that nothing changed. It loads when a photo needs it.
    if existing is None or existing.store.get_meta(CHECKED_FINGERPRINT) != bundle.fingerprint:
        bundle.check_encoders()
    if existing is not None:
        existing.close()
    return Library(directory, create=True), bundle, choice.model


def library_summary(library: Path | None, *, with_errors: bool = False) -> dict[str, object]:
    """What `hanclip info` shows; loads no model and changes nothing on disk."""
    from hanclip_cli.vector_index import index_health

    directory = library_dir(library)
    if not (directory / DB_NAME).exists():
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    store = Library(directory, create=False).store
    failures = list(store.failures())
    summary: dict[str, object] = {
        "library": str(directory),
        "photos": store.count(),
        "failed": len(failures),
        "model": store.get_meta("model"),
        "image_model": store.get_meta("image_model"),
        "roots": store.get_meta("roots") or [],
        "index": index_health(directory, store),
    }
    if with_errors:
        summary["errors"] = failures
    store.close()
    return summary
