"""A photo library on disk: where it lives, its lock, which model it uses, and the library
opened with that model (`OpenLibrary`), which every command works on."""

from __future__ import annotations

import fcntl
import os
import shlex
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hanclip_library.meta import LibraryMeta
from hanclip_library.store import (
    DB_NAME,
    LibraryDamaged,
    OfflineFolder,
    PhotoStore,
    RecordedFailure,
    read_only_folder,
)
from hanclip_model import settings
from hanclip_model.bundle import (
    BUILTIN_BUNDLES,
    MANIFEST_NAME,
    SEARCH_BUILTINS,
    not_a_search_model,
    unknown_model,
)
from hanclip_model.errors import HanclipError, StorageError
from hanclip_model.sources import resolve_local
from hanclip_model.storage import unwritable

if TYPE_CHECKING:
    from hanclip_library.photo_text import TextCounts, TextFailure
    from hanclip_library.vector_index import IndexHealth
    from hanclip_model.model import HanclipModel

DEFAULT_MODEL = "mclip"  # the default before any cost was measured, and the rule's baseline
LOCK_NAME = "index.lock"
MODELS_DIR = "models"


def library_dir(explicit: Path | None) -> Path:
    """`--library`, else `settings.HOME`, else the platform's user data directory."""
    chosen = explicit if explicit is not None else settings.HOME.get()
    if chosen:
        return Path(os.path.abspath(os.path.expanduser(chosen)))
    from platformdirs import user_data_dir

    return Path(user_data_dir("hanclip", appauthor=False))


def _unwritable_library(directory: Path) -> StorageError:
    return unwritable(directory, what="library folder").saving("nothing was changed")


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
            if read_only_folder(directory):
                raise _unwritable_library(directory)
        self.store = PhotoStore(directory, create=create)

    @property
    def read_only(self) -> bool:
        """Opened for reading in a folder that cannot be written (`read_only_folder`)."""
        return self.store.read_only

    @property
    def models_dir(self) -> Path:
        return self.directory / MODELS_DIR

    @property
    def meta(self) -> LibraryMeta:
        return self.store.meta

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def writer_lock(self, *, wait: bool = False) -> AbstractContextManager[None]:
        """The writer lock; refused as a StorageError in a folder that cannot be written, so
        a reader that would write there too (the search index) reads only."""
        if self.read_only:
            raise _unwritable_library(self.directory)
        return writer_lock(self.directory, wait=wait)


@contextmanager
def writer_lock(directory: Path, *, wait: bool = False) -> Iterator[None]:
    """Only one process writes a library at a time; a second one stops with a message.

    Taken on the directory, not the database, so `repair` holds it over a damaged one.
    """
    with open(directory / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LibraryBusy(
                f"another `hanclip index` is running on {directory}; wait for it to finish"
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


def installed_bundles(models_dir: Path) -> list[Path]:
    """The bundles in `models_dir` (`<library>/models/`), by name: its visible folders (or
    links to folders) that hold a manifest."""
    if not models_dir.is_dir():
        return []
    return sorted(
        path
        for path in models_dir.iterdir()
        if not path.name.startswith(".") and (path / MANIFEST_NAME).is_file()
    )


def installed_bundle(models_dir: Path) -> Path | None:
    """`models/default`, else the only bundle in `models/`."""
    if (models_dir / "default" / MANIFEST_NAME).is_file():
        return models_dir / "default"
    bundles = installed_bundles(models_dir)
    return bundles[0] if len(bundles) == 1 else None


class NoModel(HanclipError):
    """The library records no model (its settings were lost) and none is given."""


def choose_model(
    explicit: str | None, directory: Path, library: Library | None = None
) -> ModelChoice:
    """`--model`, else `settings.MODEL`, else the model the library (in `directory`, when
    it exists) was indexed with, else the bundle installed in `directory/models/`, else the
    built-in `default_model()` for a library that has no photos yet.

    A library with photos but no recorded model (its settings lost, see `repair`) gets no
    model picked for it: another model's search would rank its photos in a space they are
    not in."""
    chosen = explicit or settings.MODEL.get()
    if chosen:
        return ModelChoice(search_model(chosen, directory / MODELS_DIR))
    recorded = library.meta.model if library is not None else None
    if recorded is not None and (recorded in SEARCH_BUILTINS or Path(recorded).exists()):
        return ModelChoice(recorded)
    bundle = installed_bundle(directory / MODELS_DIR)
    if bundle is not None:
        return ModelChoice(str(bundle))
    if recorded is None and library is not None and library.store.count():
        raise NoModel(
            f"the library {directory} records no model (its settings were lost): pass "
            f"--model NAME (or set {settings.MODEL.name}), or make one its default with "
            "`hanclip models install BUNDLE --default`"
        )
    default = default_model()
    return ModelChoice(
        default,
        notice=f"no model given: using the built-in {default!r} (the default; "
        f"`hanclip models` says why); pass --model or set {settings.MODEL.name} to use another",
    )


def default_model() -> str:
    """The built-in a library without a model of its own gets: the one the stated rule picks
    from the published Korean figures and the costs measured on the benchmark's machine
    (`hanclip_model.catalog.pick_default`). A library keeps the model it was indexed with:
    its recorded model comes first in `choose_model`, so a new default never re-embeds it."""
    from hanclip_model.catalog import CATALOG, pick_default, read_measured

    return pick_default(CATALOG, read_measured(), baseline=DEFAULT_MODEL).model


def search_model(name: str, models_dir: Path) -> str:
    """A `--model` (or `settings.MODEL`) for searching and indexing, as the library records
    it: a built-in search model's name, else the absolute path of the bundle folder it
    names, else that of the bundle installed under that name in `models_dir`."""
    if name in SEARCH_BUILTINS:
        return name
    if name in BUILTIN_BUNDLES:
        raise not_a_search_model(name)
    path = resolve_local(name)
    if Path(path).exists():
        return path
    installed = {bundle.name: bundle for bundle in installed_bundles(models_dir)}
    if name in installed:
        return str(installed[name])
    raise unknown_model(name, installed=installed)


class ImageSpaceMismatch(HanclipError):
    """The library's embeddings come from another image model than the chosen bundle's."""


@dataclass
class OpenLibrary:
    """A library opened with the model it is indexed or searched with.

    `model_name` is the name recorded in the library: a built-in name or a bundle's absolute
    path, as the user chose it (`--model`, HANCLIP_MODEL, or the library's own choice).
    """

    library: Library
    model: HanclipModel
    model_name: str

    @property
    def directory(self) -> Path:
        return self.library.directory

    @property
    def store(self) -> PhotoStore:
        return self.library.store

    @property
    def meta(self) -> LibraryMeta:
        return self.library.meta

    def close(self) -> None:
        self.library.close()

    def __enter__(self) -> OpenLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def image_space_differs(self) -> bool:
        """Whether photos are stored in another image model's space than the model's."""
        recorded = self.meta.image_fingerprint
        differs = recorded not in (None, self.model.spec.image_fingerprint)
        return differs and self.store.count() > 0

    def check_image_space(self) -> None:
        """Stored raw embeddings are only usable with the image model that made them: say
        so, with the exact command that embeds them again, when the model's is another."""
        if not self.image_space_differs:
            return
        roots = " ".join(shlex.quote(str(r)) for r in self.meta.roots) or "PATH"
        raise ImageSpaceMismatch(
            f"the photos in {self.directory} were embedded with image model "
            f"{self.meta.image_model!r}, but model {self.model.name!r} uses "
            f"{self.model.spec.image_model!r}; run: hanclip index {roots} --library "
            f"{shlex.quote(str(self.directory))} --model {shlex.quote(self.model_name)} --reembed "
            "(or use another --library)"
        )


class Notices(Protocol):
    """How opening a library tells the user something: a one-line notice (the model chosen
    by default), and a wait that is worth saying (the first check of a model)."""

    def notice(self, message: str) -> None: ...

    def waiting(self, message: str) -> AbstractContextManager[object]: ...


class Silent:
    """Notices nobody reads (tests, benchmarks, library code used on its own)."""

    def notice(self, message: str) -> None:
        pass

    def waiting(self, message: str) -> AbstractContextManager[object]:
        return nullcontext()


SILENT = Silent()


def open_library(
    library: Path | None,
    model: str | None,
    *,
    for_writing: bool,
    device: str | None = None,
    few_texts: bool | None = None,
    notices: Notices = SILENT,
) -> OpenLibrary:
    """The library and its model, with the notice for a default model given to `notices`.

    `few_texts` (default: when reading) tunes the text encoder for a process that embeds a
    query or two and exits; a server answering many queries passes False.

    For writing, the model is checked completely (both encoders load and their dimensions
    fit the heads) before anything is created or changed on disk, so a bad bundle leaves no
    trace.
    """
    from hanclip_model import load_bundle

    directory = library_dir(library)
    found = (directory / DB_NAME).exists()
    if for_writing and found and read_only_folder(directory):
        # Before SQLite opens it: on a read-only disk a library cannot even be read (its
        # write-ahead log needs a writable folder), and SQLite's error would not say why.
        raise _unwritable_library(directory)
    existing = Library(directory, create=False) if found else None
    if existing is None and not for_writing:
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    choice = choose_model(model, directory, existing)
    if choice.notice:
        notices.notice(choice.notice)
    # Reading is a search: one query, then the process exits.
    few = not for_writing if few_texts is None else few_texts
    bundle = load_bundle(choice.model, device=device, few_texts=few)
    if not for_writing:
        return OpenLibrary(existing, bundle, choice.model)
    # A library last indexed to the end with this very bundle (same encoder specs, same
    # heads bytes) had it checked then: a re-index need not import torch and load the image
    # model just to learn that nothing changed. It loads when a photo needs it.
    if existing is None or existing.meta.checked_fingerprint != bundle.fingerprint:
        # The first time a model is used, its encoders are exported to ONNX and verified
        # against torch: a wait long enough to be worth saying what it is.
        with notices.waiting("checking the model (the first time: exporting it to ONNX)"):
            bundle.check_encoders()
    if existing is not None:
        existing.close()
    return OpenLibrary(Library(directory, create=True), bundle, choice.model)


@dataclass(frozen=True)
class DatabaseHealth:
    """`info`'s "database": what SQLite's quick_check found wrong first; None when nothing."""

    problem: str | None

    @property
    def status(self) -> str:
        return "damaged" if self.problem else "ok"

    def as_json(self) -> dict[str, str | None]:
        return {"status": self.status, "detail": self.problem}


@dataclass(frozen=True)
class LibraryContents:
    """What a library whose database reads holds, as `hanclip info` shows it."""

    photos: int
    failed: int
    model: str | None
    image_model: str | None
    roots: tuple[str, ...]
    index: IndexHealth
    # Probed again, as search does: a folder back since the last `index` is online.
    offline_folders: tuple[OfflineFolder, ...]
    excludes: tuple[str, ...]
    text: TextCounts  # the photos by the text read in them (`photo_text.py`)

    def as_json(self) -> dict[str, object]:
        return {
            "photos": self.photos,
            "failed": self.failed,
            "model": self.model,
            "image_model": self.image_model,
            "roots": list(self.roots),
            "index": self.index.as_json(),
            "offline_folders": [asdict(folder) for folder in self.offline_folders],
            "excludes": list(self.excludes),
            "text": self.text.as_json(),
        }


@dataclass(frozen=True)
class LibrarySummary:
    """What `hanclip info` shows. `contents` is None when the damage leaves not even it
    readable; `errors` is None unless asked for (and the contents read)."""

    library: str
    database: DatabaseHealth
    contents: LibraryContents | None = None
    errors: tuple[RecordedFailure, ...] | None = None
    # The photos whose text could not be read, with why; None unless `errors` is asked for.
    text_errors: tuple[TextFailure, ...] | None = None

    def as_json(self) -> dict[str, object]:
        """As `hanclip info --json` prints it."""
        contents = self.contents.as_json() if self.contents is not None else {}
        errors: dict[str, object] = {}
        if self.errors is not None:
            errors["errors"] = [e.as_json() for e in self.errors]
        if self.text_errors is not None:
            errors["text_errors"] = [e.as_json() for e in self.text_errors]
        return {"library": self.library, **contents, "database": self.database.as_json(), **errors}


def library_summary(library: Path | None, *, with_errors: bool = False) -> LibrarySummary:
    """What `hanclip info` shows; loads no model and changes nothing on disk.

    A damaged database is a finding here, not an error: `database` holds what SQLite's
    quick_check found first.
    """
    directory = library_dir(library)
    if not (directory / DB_NAME).exists():
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    try:
        return _readable_summary(directory, with_errors=with_errors)
    except LibraryDamaged as exc:
        return LibrarySummary(str(directory), DatabaseHealth(exc.problem))


def _readable_summary(directory: Path, *, with_errors: bool) -> LibrarySummary:
    from hanclip_library.folders import still_offline
    from hanclip_library.photo_text import PhotoText
    from hanclip_library.vector_index import index_health

    with Library(directory, create=False) as lib:
        store, meta = lib.store, lib.meta
        problem = store.quick_check()
        failures = tuple(store.failures())
        texts = PhotoText(store.conn)
        contents = LibraryContents(
            photos=store.count(),
            failed=len(failures),
            model=meta.model,
            image_model=meta.image_model,
            roots=tuple(str(root) for root in meta.roots),
            index=index_health(directory, store),
            offline_folders=tuple(still_offline(store.offline_folders())),
            excludes=tuple(meta.excludes),
            text=texts.counts(),
        )
        text_failures = tuple(texts.failures()) if with_errors else None
    return LibrarySummary(
        str(directory),
        DatabaseHealth(problem),
        contents,
        failures if with_errors else None,
        text_failures,
    )
