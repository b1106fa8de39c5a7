"""One rule for "a local path or a hub id", and what identifies the weights behind either.

A hub id (`org/name`) and a relative folder look alike. A spec is a local path when it is
absolute, starts with `./`, `../` or `~`, or names something that exists (relative to the
bundle that mentions it, or to the working directory); anything else is a hub id, which
sentence-transformers, transformers and open_clip download into the Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hanclip_model.errors import BundleError

_PATH_PREFIXES = ("./", "../", "~")


def is_local(spec: str, base: Path | None = None) -> bool:
    """Whether `spec` names a local path rather than a hub id."""
    expanded = Path(os.path.expanduser(spec))
    if expanded.is_absolute() or spec.startswith(_PATH_PREFIXES):
        return True
    return ((base / expanded) if base is not None else expanded).exists()


def resolve_local(spec: str, base: Path | None = None) -> str:
    """`spec` as an absolute path when it is local (relative to `base`, else the working
    directory), else unchanged: a hub id."""
    if not is_local(spec, base):
        return spec
    expanded = Path(os.path.expanduser(spec))
    if expanded.is_absolute():
        return str(expanded)
    return str(((base or Path.cwd()) / expanded).resolve())


def require_local_dir(spec: str, what: str) -> None:
    """A local spec must be a folder: say so in words, instead of letting a loader take a
    missing path for a malformed hub id."""
    if is_local(spec) and not Path(os.path.expanduser(spec)).is_dir():
        raise BundleError(f"{what} directory not found: {Path(os.path.expanduser(spec))}")


def source_fingerprint(spec: str) -> str | None:
    """Identifies the exact weights behind `spec`; None for a hub model not downloaded yet.

    A local folder: every file's path, size and mtime (cheap, and any rewrite changes it).
    A hub id: the snapshot revision in the Hugging Face cache.
    """
    local = Path(os.path.expanduser(spec))
    if local.is_dir():
        entries = sorted(
            f"{p.relative_to(local).as_posix()}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}"
            for p in local.rglob("*")
            if p.is_file()
        )
        return "dir:" + hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()
    revision = _hub_revision(spec)
    return None if revision is None else "hub:" + revision


def _hub_revision(spec: str) -> str | None:
    from huggingface_hub.constants import HF_HUB_CACHE

    # sentence-transformers resolves a bare name to its own organisation on the hub.
    repo_ids = [spec] if "/" in spec else [spec, f"sentence-transformers/{spec}"]
    for repo_id in repo_ids:
        ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
        if ref.is_file():
            return ref.read_text(encoding="utf-8").strip()
    return None
