"""Bundles on the Hugging Face hub: `hanclip models install hf-hub:ORG/REPO[@REVISION]` and
`hanclip models publish BUNDLE --repo ORG/REPO`.

A bundle repository is a bundle folder as it is on disk: `hanclip.json` at its top, the heads,
the model card as `README.md`, and the ONNX encoders where the bundle carries them.

Installing downloads the repository into the Hugging Face cache (`hanclip_model.hub`: files
already there are not fetched again, one cut short is resumed next time), then installs that
folder exactly as a local one is installed (`installed.install_bundle`: every check first,
copied in whole). A repository is refused before anything is written when it holds no
`hanclip.json`, names a file or model folder outside itself (a path on the publisher's
machine), or fails the checks a folder fails; a download that stops leaves `models/` as it
was.

Publishing uploads what installing a copy of the folder would copy (`installed.bundle_files`,
hidden files left out), its manifest with every path leading inside (a heads file outside the
folder comes along, as an install takes it), and the model card (`MODEL_CARD.md`, rendered
from the manifest when the bundle has none) as `README.md`, in one commit.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hanclip_library.installed import (
    InstallResult,
    bundle_files,
    check_source,
    copied_manifest,
    folder_name,
    install_bundle,
)
from hanclip_library.library import MODELS_DIR, search_model
from hanclip_library.progress import NO_PROGRESS, ProgressReporter
from hanclip_model.bundle import (
    BUILTIN_BUNDLES,
    LOCAL_DIR_PREFIX,
    MANIFEST_NAME,
    clip_text_source,
    read_bundle,
)
from hanclip_model.card import CARD_NAME, TrainingCard
from hanclip_model.errors import BundleError, HanclipError
from hanclip_model.hub import (
    HUB_PREFIX,
    HubRepo,
    Transfer,
    UploadFile,
    download_snapshot,
    upload_files,
)
from hanclip_model.sources import is_local

README_NAME = "README.md"
_ISO_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass
class HubInstallResult(InstallResult):
    """An install from the hub: `hub` names the exact files, `hf-hub:ORG/REPO@COMMIT`."""

    hub: str = ""


@dataclass
class PublishResult:
    """What `hanclip models publish` uploaded."""

    bundle: str  # the folder published
    repo: str
    url: str
    commit: str
    files: list[str] = field(default_factory=list)  # paths in the repository
    encoders: list[str] = field(default_factory=list)  # the ONNX encoders carried ("image", "text")
    card: str = ""  # where README.md came from: the bundle's MODEL_CARD.md, or "rendered"
    install: str = ""  # the command that installs it

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- installing ------------------------------------------------------------------------------


def install_from_hub(
    library_dir: Path,
    spec: str,
    name: str | None = None,
    default: bool = False,
    *,
    force: bool = False,
    progress: ProgressReporter = NO_PROGRESS,
) -> HubInstallResult:
    """Download `spec` (`hf-hub:ORG/REPO[@REVISION]`) and install it into `<library>/models/`
    under `name` (default: the bundle's own name, else the repository's)."""
    repo = HubRepo.parse(spec)
    snapshot = download_snapshot(repo, _TransferStage(progress, f"downloading {repo}"))
    folder = snapshot.path
    if not (folder / MANIFEST_NAME).is_file():
        raise BundleError(
            f"{repo} holds no {MANIFEST_NAME}: it is no hanclip bundle; nothing was installed"
        )
    try:
        # Before anything reads a file it names: a path out of the repository may lead anywhere.
        outside = leading_out(folder.resolve(), _manifest(folder))
        if outside:
            raise BundleError(
                f"its {MANIFEST_NAME} names {outside[0]}, outside the repository (a path on "
                "the machine it was published from)"
            )
        read_bundle(folder)
        if name is None:
            own = _manifest(folder).get("name")
            fallback = repo.repo_id.split("/")[1]
            name = folder_name(own if isinstance(own, str) and own.strip() else fallback, fallback)
        result = install_bundle(library_dir, folder, name, default, force=force)
    except BundleError as exc:
        said = str(exc).removesuffix("; nothing was installed")
        raise BundleError(f"{repo} is refused: {said}; nothing was installed") from None
    return HubInstallResult(**asdict(result), hub=f"{HUB_PREFIX}{repo.repo_id}@{snapshot.commit}")


class _TransferStage:
    """A download's bytes as one stage of a `ProgressReporter`, begun again (at what has come)
    whenever the total grows, as it does when each file starts."""

    def __init__(self, progress: ProgressReporter, description: str) -> None:
        self._progress = progress
        self._description = description
        self._total: int | None = None
        self._shown = 0
        self._lock = threading.Lock()  # reports come from the download's threads

    def __call__(self, transfer: Transfer) -> None:
        with self._lock:
            if transfer.total != self._total:
                self._total = transfer.total
                self._progress.stage(self._description, transfer.total or None)
                self._shown = 0
            if transfer.done > self._shown:
                self._progress.advance(transfer.done - self._shown)
                self._shown = transfer.done


def _manifest(folder: Path) -> dict[str, Any]:
    """The manifest as written; empty when unreadable (`read_bundle` says why)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def leading_out(bundle: Path, data: dict[str, Any]) -> list[str]:
    """The local paths a manifest names (heads, a text model folder, a `local-dir:` image
    model, the ONNX encoders) that lead out of `bundle`, in words; lexically, as `install`
    reads them (a link inside stays inside)."""

    def out(raw: str) -> bool:
        absolute = Path(os.path.normpath(bundle / Path(os.path.expanduser(raw))))
        return not (absolute == bundle or bundle in absolute.parents)

    found = []
    heads = data.get("heads")
    if isinstance(heads, str) and out(heads.strip()):
        found.append(f"the heads file {heads.strip()!r}")
    text = data.get("text_model")
    text = text.strip() if isinstance(text, str) else ""
    tower = clip_text_source(text)  # an open_clip model's own text tower
    if tower is not None:
        if tower.startswith(LOCAL_DIR_PREFIX) and out(tower[len(LOCAL_DIR_PREFIX) :]):
            found.append(f"the text model {text!r}")
    elif text and is_local(text, bundle) and out(text):
        found.append(f"the text model {text!r}")
    image = data.get("image_model")
    image = image.strip() if isinstance(image, str) else ""
    if image.startswith(LOCAL_DIR_PREFIX) and out(image[len(LOCAL_DIR_PREFIX) :]):
        found.append(f"the image model {image!r}")
    encoders = data.get("encoders")
    for side in ("image", "text"):
        value = encoders.get(side) if isinstance(encoders, dict) else None
        if isinstance(value, str) and out(value.strip()):
            found.append(f"the ONNX {side} encoder {value.strip()!r}")
    return found


# -- publishing ------------------------------------------------------------------------------


def publish_bundle(
    library_dir: Path,
    source: str,
    repo_id: str,
    *,
    render_card: Callable[[dict[str, Any]], str],
    private: bool = False,
) -> PublishResult:
    """Upload the bundle `source` (an installed bundle's name or a bundle folder) to the
    model repository `repo_id` (`ORG/REPO`), created when missing; `render_card` writes the
    model card of a bundle that carries none."""
    repo = HubRepo.parse(repo_id)
    if repo.revision is not None:
        raise HanclipError(f"--repo takes ORG/REPO, without a revision: {repo_id!r}")
    if source in BUILTIN_BUNDLES:
        raise HanclipError(
            f"'{source}' is a built-in model: there is no bundle folder to publish "
            f"(hanclip export {source} --out DIR makes one)"
        )
    spec = read_bundle(search_model(source, library_dir / MODELS_DIR))
    bundle = spec.directory
    assert bundle is not None  # read from a folder
    check_source(bundle, spec, library_dir)
    data, heads = copied_manifest(bundle, spec)
    _encoders_relative(bundle, data)
    outside = leading_out(bundle, data)
    if outside:
        raise BundleError(
            f"the bundle {bundle} names {outside[0]}, outside its folder: the hub's copy could "
            "not load it; put it inside the bundle folder (or name a model on the hub) first"
        )

    files: dict[str, UploadFile] = {}
    for path in bundle_files(bundle, library_dir):
        relative = path.relative_to(bundle).as_posix()
        if not any(part.startswith(".") for part in relative.split("/")):
            files[relative] = UploadFile(relative, path)
    if heads is not None:
        files[heads[1]] = UploadFile(heads[1], heads[0])
    manifest = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    files[MANIFEST_NAME] = UploadFile(MANIFEST_NAME, manifest.encode("utf-8"))
    card_file = bundle / CARD_NAME
    card = card_file.read_text(encoding="utf-8") if card_file.is_file() else render_card(data)
    readme = hub_readme(card, data, repo.repo_id)
    files[README_NAME] = UploadFile(README_NAME, readme.encode("utf-8"))

    published = upload_files(
        repo.repo_id,
        [files[key] for key in sorted(files)],
        message=f"hanclip bundle {spec.name}",
        private=private,
    )
    pinned = f"{HUB_PREFIX}{repo.repo_id}@{published.commit}"
    return PublishResult(
        bundle=str(bundle),
        repo=repo.repo_id,
        url=published.url,
        commit=published.commit,
        files=sorted(files),
        encoders=[
            side
            for side, folder in (("image", spec.image_export), ("text", spec.text_export))
            if folder is not None
        ],
        card=str(card_file) if card_file.is_file() else "rendered",
        install=f"hanclip models install {pinned}",
    )


def _encoders_relative(bundle: Path, data: dict[str, Any]) -> None:
    """The manifest's ONNX encoder folders written relative to the bundle where they lie in
    it (an absolute path would name a folder on this machine)."""
    encoders = data.get("encoders")
    if not isinstance(encoders, dict):
        return
    for side in ("image", "text"):
        value = encoders.get(side)
        if not isinstance(value, str) or not os.path.isabs(os.path.expanduser(value.strip())):
            continue
        folder = Path(os.path.normpath(os.path.expanduser(value.strip())))
        if bundle in folder.parents:
            encoders[side] = folder.relative_to(bundle).as_posix()


def hub_readme(card: str, manifest: dict[str, Any], repo_id: str) -> str:
    """The model card as the repository's README: the hub's metadata block on top (unless
    the card has one), and how to install it from there."""
    text = card.replace("THIS_FOLDER", f"{HUB_PREFIX}{repo_id}")
    if f"{HUB_PREFIX}{repo_id}" not in text:
        command = f"hanclip models install {HUB_PREFIX}{repo_id} --default"
        text = text.rstrip("\n") + f"\n\n## Install\n\n```\n{command}\n```\n"
    if text.startswith("---\n"):
        return text
    language = TrainingCard.of(manifest).language
    lines = ["---", "library_name: hanclip", "tags:", "- hanclip", "- clip", "- image-search"]
    if language and _ISO_LANGUAGE.fullmatch(language):
        lines += ["language:", f"- {language}"]
    return "\n".join([*lines, "---", "", text])
