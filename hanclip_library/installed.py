"""`hanclip models`: the bundles a library can use, and installing a trained one into it.

The list holds the built-in bundles, every bundle in `<library>/models/`, and the model the
library records (or `settings.MODEL` names) when that is a bundle somewhere else; `in_use` marks
the one `choose_model` picks now, `default` the one `models/default` links to.

`install_bundle` checks the source completely (its `hanclip.json`, its heads, every file
readable) before it writes anything, copies it into a hidden folder beside `models/<name>`
and moves it into place whole (`replace_dir`), so `models/` holds the old bundle or the new
one, never half of one. Paths in the copied `hanclip.json` that lead out of the source folder
are made absolute (a heads file out there is copied in), so they resolve from the new place.

`--default` means "`hanclip search` uses it from now on": `models/default` becomes a link to
the installed folder and, when the library exists, the library records it as its model (the
recorded model wins over `models/`), under the writer lock. The library's photos are stored in
one image model's space: when the bundle's image model is another one, the library's model is
left as it was and the install says the `hanclip index ... --reembed` command that moves it.

A bundle from the hub (`hf-hub:ORG/REPO`) is downloaded, then installed by `install_bundle`
like any folder: `hub_bundles`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hanclip_library.library import (
    MODELS_DIR,
    Library,
    NoModel,
    choose_model,
    installed_bundles,
    search_model,
    writer_lock,
)
from hanclip_library.store import DB_NAME
from hanclip_model import settings
from hanclip_model.bundle import (
    BUILTIN_BUNDLES,
    LOCAL_DIR_PREFIX,
    MANIFEST_NAME,
    SEARCH_BUILTINS,
    TRAIN_BASES,
    BundleSpec,
    not_a_search_model,
    read_bundle,
)
from hanclip_model.card import CARD_NAME, NOT_TRAINED, TrainingCard
from hanclip_model.dimensions import check_dimensions
from hanclip_model.errors import HanclipError, UnknownModel
from hanclip_model.files import TMP_SUFFIX, file_sha256, replace_dir
from hanclip_model.sources import is_local, resolve_local
from hanclip_model.storage import storage_error
from hanclip_model.texts import nfc

DEFAULT_LINK = "default"
# Training's resume state and half-written files: never part of an installed bundle.
_NOT_COPIED = (".train-state",)
_BUILTIN_LANGUAGES = {name: "multilingual" for name in SEARCH_BUILTINS}
_MAX_NAME_BYTES = 200


@dataclass
class ModelEntry:
    """One model `hanclip models` shows.

    kind: "built-in", "installed" (in the library's models/), "library" (the library's
    recorded model, a bundle elsewhere) or "env" (`settings.MODEL`, a bundle elsewhere).
    """

    name: str
    kind: str
    path: str | None
    image_model: str | None
    text_model: str | None
    language: str | None
    trained_on: str
    calibrated: bool
    in_use: bool = False
    default: bool = False
    card: str | None = None
    error: str | None = None  # set when the bundle cannot be read (the other fields are None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InstallResult(ModelEntry):
    """The installed bundle, and what the install did besides copying it."""

    already_installed: bool = False  # the same bundle was there: nothing was copied
    replaced: bool = False  # a different bundle was there and --force replaced it
    library_model: bool = False  # the library now records it as its model
    reembed: str | None = None  # the command that moves the library's photos to its space
    notes: list[str] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------


def list_models(library_dir: Path) -> list[ModelEntry]:
    """The built-in search models (not `hanclip-base`, a base for `train`), then the bundles
    in `<library>/models/`, then the library's recorded model and `settings.MODEL` when either
    is a bundle elsewhere. Reads no weights."""
    models = library_dir / MODELS_DIR
    recorded, chosen = _model_choice(library_dir)
    default_target = _default_target(models)
    entries = [_builtin_entry(name, BUILTIN_BUNDLES[name]) for name in SEARCH_BUILTINS]
    for folder in _bundle_folders(models):
        is_default = folder.name == DEFAULT_LINK or _same_path(folder, default_target)
        entries.append(_folder_entry(folder, "installed", default=is_default))
    env = settings.MODEL.get()
    for model, kind in ((recorded, "library"), (env, "env")):
        if not model or model in BUILTIN_BUNDLES:
            continue
        path = Path(_where(model, models))
        if not any(_same_path(path, e.path) for e in entries):
            entries.append(_folder_entry(path, kind, default=False))
    for entry in entries:
        entry.in_use = chosen is not None and _is_choice(entry, chosen)
    return entries


def _where(model: str, models: Path) -> str:
    """Where a model name or path leads (an installed name to its folder), as well as it can
    be said: a name that leads nowhere is listed with the error reading it gives."""
    try:
        return search_model(model, models)
    except HanclipError:
        return resolve_local(model)


def _model_choice(library_dir: Path) -> tuple[str | None, str | None]:
    """(the library's recorded model, the model `choose_model` picks now: None when it picks
    none, and a search would say why); no notice shown."""
    library = Library(library_dir, create=False) if (library_dir / DB_NAME).exists() else None
    try:
        recorded = library.meta.model if library is not None else None
        try:
            return recorded, choose_model(None, library_dir, library).model
        except (UnknownModel, NoModel):
            return recorded, None
    finally:
        if library is not None:
            library.close()


def _is_choice(entry: ModelEntry, chosen: str) -> bool:
    if chosen in BUILTIN_BUNDLES:
        return entry.kind == "built-in" and entry.name == chosen
    return entry.kind != "built-in" and _same_path(Path(chosen), entry.path)


def _same_path(a: Path | str | None, b: Path | str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _bundle_folders(models: Path) -> list[Path]:
    """The bundles in `models/`: visible folders with a manifest, `default` only when it is a
    bundle of its own (a link to a folder listed already is shown as that folder's flag)."""
    found = []
    for path in installed_bundles(models):
        if path.name == DEFAULT_LINK and path.is_symlink():
            target = path.resolve()
            if target.parent == models.resolve() and not target.name.startswith("."):
                continue
        found.append(path)
    return found


def _default_target(models: Path) -> Path | None:
    link = models / DEFAULT_LINK
    return link.resolve() if (link / MANIFEST_NAME).is_file() else None


def _builtin_entry(name: str, spec: BundleSpec) -> ModelEntry:
    return ModelEntry(
        name=name,
        kind="built-in",
        path=None,
        image_model=spec.image_model,
        text_model=spec.text_model,
        language=_BUILTIN_LANGUAGES.get(name),
        trained_on=NOT_TRAINED,
        calibrated=False,
    )


def _folder_entry(folder: Path, kind: str, *, default: bool) -> ModelEntry:
    try:
        spec = read_bundle(folder)
    except HanclipError as exc:
        return ModelEntry(
            name=folder.name,
            kind=kind,
            path=str(folder),
            image_model=None,
            text_model=None,
            language=None,
            trained_on=NOT_TRAINED,
            calibrated=False,
            default=default,
            error=str(exc),
        )
    return _spec_entry(spec, folder, kind, default=default)


def _spec_entry(spec: BundleSpec, folder: Path, kind: str, *, default: bool) -> ModelEntry:
    # An installed bundle goes by its folder's name (what `--name` chose); one elsewhere by
    # its own.
    training = TrainingCard.of(spec.extra)
    card = folder / CARD_NAME
    return ModelEntry(
        name=folder.name if kind == "installed" else spec.name,
        kind=kind,
        path=str(folder),
        image_model=spec.image_model,
        text_model=spec.text_model,
        language=training.language,
        trained_on=training.trained_on,
        calibrated=training.calibrated,
        default=default,
        card=str(card) if card.is_file() else None,
    )


# -- installing ------------------------------------------------------------------------------


def install_bundle(
    library_dir: Path,
    source: str | Path,
    name: str | None = None,
    default: bool = False,
    *,
    force: bool = False,
) -> InstallResult:
    """Copy the bundle at `source` into `<library>/models/<name>` (see the module's words).

    Every check runs before anything is written: a bad source, a name that is no folder
    name, a different bundle under that name (without `force`) leave `models/` as it was.
    """
    if str(source) in TRAIN_BASES:
        raise not_a_search_model(str(source))
    if str(source) in BUILTIN_BUNDLES:
        raise HanclipError(
            f"'{source}' is a built-in model: there is nothing to install (pass --model {source})"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise HanclipError(f"no bundle at {path}: give the folder that holds {MANIFEST_NAME}")
    spec = read_bundle(path)
    bundle = spec.directory
    assert bundle is not None  # read from a folder
    folder = checked_name(name) if name is not None else folder_name(spec.name, bundle.name)
    check_source(bundle, spec, library_dir)

    models = library_dir / MODELS_DIR
    target = models / folder
    same = _already_there(bundle, spec, target)
    taken = (target.exists() or target.is_symlink()) and not same
    if taken and not force:
        raise HanclipError(
            f"another bundle is installed as {target}: pass --force to replace it, or "
            "--name to install this one beside it"
        )
    link = models / DEFAULT_LINK
    if default and link.exists() and not link.is_symlink() and not force:
        raise HanclipError(
            f"{link} is a bundle of its own, not a link to one: install it under a name "
            f"first (hanclip models install {shlex.quote(str(link))} --name NAME) or pass "
            f"--force to replace it with a link to {folder}"
        )
    old_default = link.resolve() if link.is_symlink() else None
    library_found = (library_dir / DB_NAME).exists()

    with ExitStack() as stack:
        if library_found and (default or taken):
            # Nothing is written while an `index` runs: it may be using the bundle replaced,
            # and --default writes the library's model.
            stack.enter_context(writer_lock(library_dir))
        # Opened before anything is written: a library that cannot be read stops it here.
        library = stack.enter_context(Library(library_dir, create=False)) if library_found else None
        _make_models_dir(models)
        if not same:
            _copy_in(bundle, spec, target, library_dir)
        if default:
            _link_default(models, folder)
        installed = read_bundle(target)
        result = InstallResult(
            **asdict(_spec_entry(installed, target, "installed", default=default)),
            already_installed=same,
            replaced=taken,
        )
        if library is not None:
            _settle_library(library, installed, target, result, default, old_default)
    if not default and _same_path(_default_target(models), target):
        result.default = True
    _, chosen = _model_choice(library_dir)
    result.in_use = chosen is not None and _is_choice(result, chosen)
    env = settings.MODEL.get()
    if default and env and not result.in_use:
        result.notes.append(
            f"{settings.MODEL.name} is set ({env}): it still comes first; unset it to use {folder}"
        )
    return result


def checked_name(name: str) -> str:
    """A `--name` as the folder name it must be: refused, in words, when it is none."""
    text = nfc(name).strip()
    bad = (
        not text
        or text in (".", "..")
        or "/" in text
        or "\\" in text
        or text.startswith(".")
        or any(unicodedata.category(c).startswith("C") for c in text)
    )
    if bad:
        raise HanclipError(
            f"--name {name!r} is not a folder name: no '/', '\\' or control characters, "
            "not '..', not starting with '.'"
        )
    if text == DEFAULT_LINK:
        raise HanclipError(
            "'default' names the link to the default model: pick another --name and pass --default"
        )
    if len(text.encode("utf-8")) > _MAX_NAME_BYTES:
        raise HanclipError(f"--name is too long ({len(text.encode('utf-8'))} bytes)")
    return text


def folder_name(name: str, fallback: str) -> str:
    """A bundle's own name made into a folder name (`hanclip-ko v2/x` → `hanclip-ko-v2-x`)."""
    for candidate in (name, fallback):
        text = nfc(candidate)
        text = "".join(c for c in text if not unicodedata.category(c).startswith("C"))
        text = re.sub(r"[\s/\\]+", "-", text)
        text = re.sub(r"\.{2,}", ".", text).strip(".-")
        text = text.encode("utf-8")[:_MAX_NAME_BYTES].decode("utf-8", "ignore")
        if text and text != DEFAULT_LINK:
            return text
    return "bundle"


def bundle_files(bundle: Path, library_dir: Path | None) -> Iterator[Path]:
    """Every file a copy of `bundle` takes (links followed), the skipped ones left out."""
    library = library_dir.resolve() if library_dir is not None else None

    def fail(exc: OSError) -> None:
        raise HanclipError(f"cannot read {exc.filename} in the bundle: {exc.strerror or exc}")

    for root, dirs, files in os.walk(bundle, followlinks=True, onerror=fail):
        dirs[:] = [d for d in dirs if not _skipped(Path(root) / d, library)]
        for name in files:
            if not _skipped(Path(root) / name, library):
                yield Path(root) / name


def _skipped(path: Path, library: Path | None) -> bool:
    name = path.name
    if name in _NOT_COPIED or name.endswith(TMP_SUFFIX):
        return True
    return (
        library is not None and path.is_dir() and _same_path(path, library)
    )  # a library kept inside the bundle


def check_source(bundle: Path, spec: BundleSpec, library_dir: Path) -> None:
    """Refuse, before anything is written, a bundle that would not work once copied."""
    # A heads file that is no heads file says so; so do parts that disagree on a width.
    check_dimensions(spec)
    for path in bundle_files(bundle, library_dir):
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise HanclipError(
                f"cannot read {path} in the bundle: {exc.strerror or exc}; nothing was installed"
            ) from None


def _already_there(bundle: Path, spec: BundleSpec, target: Path) -> bool:
    """Whether `target` holds this very bundle: the same folder, or the manifest and files a
    copy of it would have."""
    if not (target / MANIFEST_NAME).is_file():
        return False
    if _same_path(bundle, target):
        return True
    data, heads = copied_manifest(bundle, spec)
    try:
        there = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if there != data:
        return False
    expected = _file_hashes(bundle)
    if heads is not None:
        expected[heads[1]] = file_sha256(heads[0])
    return expected == _file_hashes(target)


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in bundle_files(folder, None)
        if p.relative_to(folder).as_posix() != MANIFEST_NAME
    }


def _make_models_dir(models: Path) -> None:
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = storage_error(exc, models.parent, what="library folder")
        raise error or HanclipError(f"cannot create {models}: {exc}") from None


def _copy_in(bundle: Path, spec: BundleSpec, target: Path, library_dir: Path) -> None:
    """Copy `bundle` into a hidden folder beside `target` (its manifest one level down, so a
    half copy is never taken for an installed bundle), then move it into place whole."""
    staging = target.parent / f".install-{uuid.uuid4().hex}{TMP_SUFFIX}"
    copy = staging / target.name
    library = library_dir.resolve()
    data, heads = copied_manifest(bundle, spec)
    try:
        shutil.copytree(
            bundle,
            copy,
            ignore=lambda root, names: {n for n in names if _skipped(Path(root) / n, library)},
        )
        if heads is not None:
            shutil.copy2(heads[0], copy / heads[1])
        manifest = copy / MANIFEST_NAME
        manifest.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
        read_bundle(copy)
        replace_dir(copy, target)
    except HanclipError:
        raise
    except (OSError, shutil.Error) as exc:
        error = storage_error(exc, target.parent, what="models folder")
        raise error or HanclipError(f"cannot copy {bundle} into {target}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def copied_manifest(bundle: Path, spec: BundleSpec) -> tuple[dict, tuple[Path, str] | None]:
    """The manifest a copy of `bundle` gets, with every path leading where it did: a path out
    of the source folder becomes absolute, an absolute one into it relative to the copy, and
    a heads file out there comes along (returned as (file, its name in the copy))."""
    data = json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))

    def place(raw: str) -> tuple[bool, str | None]:
        """(whether `raw` leads into the source folder, how it must read in the copy, or
        None when as it is)."""
        expanded = Path(os.path.expanduser(raw))
        absolute = Path(os.path.normpath(bundle / expanded))  # lexically: links stay inside
        if absolute == bundle or bundle in absolute.parents:
            if expanded.is_absolute() or raw.startswith("~"):
                return True, "./" + absolute.relative_to(bundle).as_posix()
            return True, None
        return False, None if expanded.is_absolute() else str(absolute.resolve())

    heads_copy = None
    heads = data.get("heads")
    if isinstance(heads, str) and spec.heads_path is not None:
        inside, new = place(heads.strip())
        if not inside:
            # A heads file out of the folder comes along: the installed bundle keeps working
            # when the training output it came from is deleted.
            new = _free_name(bundle, spec.heads_path.name)
            heads_copy = (spec.heads_path, new)
        if new is not None:
            data["heads"] = new
    text_model = data.get("text_model")
    if isinstance(text_model, str) and is_local(text_model.strip(), bundle):
        new = place(text_model.strip())[1]
        if new is not None:
            data["text_model"] = new
    image_model = data.get("image_model")
    if isinstance(image_model, str) and image_model.strip().startswith(LOCAL_DIR_PREFIX):
        new = place(image_model.strip()[len(LOCAL_DIR_PREFIX) :])[1]
        if new is not None:
            data["image_model"] = LOCAL_DIR_PREFIX + new
    return data, heads_copy


def _free_name(folder: Path, name: str) -> str:
    candidate, number = name, 1
    while (folder / candidate).exists():
        stem, dot, suffix = name.rpartition(".")
        candidate = f"{stem}-{number}.{suffix}" if dot else f"{name}-{number}"
        number += 1
    return candidate


def _link_default(models: Path, folder: str) -> None:
    """`models/default` → `folder`, swapped in one rename (a bundle of its own that was
    there, which --force allowed, is moved away first and removed)."""
    link = models / DEFAULT_LINK
    tmp = models / f".{DEFAULT_LINK}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    os.symlink(folder, tmp, target_is_directory=True)
    try:
        if link.exists() and not link.is_symlink():
            old = models / f".{DEFAULT_LINK}.old-{os.getpid()}"
            os.replace(link, old)
            os.replace(tmp, link)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()


def _settle_library(
    library: Library,
    installed: BundleSpec,
    target: Path,
    result: InstallResult,
    default: bool,
    old_default: Path | None,
) -> None:
    """With --default, make the library's recorded model the installed bundle when its
    photos are in the bundle's image space; else say the command that re-embeds them. Called
    under the writer lock when it writes."""
    library_dir = library.directory
    meta = library.meta
    recorded = meta.model
    stored = meta.image_fingerprint if library.store.count() else None
    fits = stored in (None, installed.image_fingerprint)
    uses_target = recorded is not None and _same_path(recorded, target)
    if fits:
        if default and not uses_target:
            meta.model = str(target)
            result.library_model = True
        elif uses_target:
            result.library_model = True
        return
    if not (default or uses_target):
        return
    if (
        default
        and recorded is not None
        and Path(recorded).name == DEFAULT_LINK
        and _same_path(Path(recorded).parent, library_dir / MODELS_DIR)
        and old_default is not None
        and (old_default / MANIFEST_NAME).is_file()
    ):
        # The library followed the old link: it keeps the bundle its photos fit.
        meta.model = str(old_default)
    roots = " ".join(shlex.quote(str(r)) for r in meta.roots) or "PATH"
    result.reembed = (
        f"hanclip index {roots} --library {shlex.quote(str(library_dir))} "
        f"--model {shlex.quote(str(target))} --reembed"
    )
    result.notes.append(
        f"the photos in {library_dir} were embedded with image model "
        f"{meta.image_model!r}, but {target.name} uses {installed.image_model!r}: "
        + (
            "search keeps using the library's model until you run: "
            if default
            else "search needs them embedded again; run: "
        )
        + result.reembed
    )
