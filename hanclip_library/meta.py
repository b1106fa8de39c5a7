"""What a library records about itself: its settings, one typed attribute per `meta` row of
`library.db` (the model, the image model its embeddings are in, the folders and excludes
`index` was given, the schema version)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


class MetaRows(Protocol):
    """Where the `meta` rows are read and written (the library's `PhotoStore`)."""

    def get_meta(self, key: str) -> object | None: ...

    def set_meta(self, key: str, value: object) -> None: ...


class _MetaText:
    """One `meta` row holding a text (or nothing yet), read and written as an attribute."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    def __get__(self, meta: LibraryMeta, owner: type | None = None) -> str | None:
        value = meta.store.get_meta(self.key)
        return value if isinstance(value, str) else None

    def __set__(self, meta: LibraryMeta, value: str) -> None:
        meta.store.set_meta(self.key, value)


class LibraryMeta:
    """What the library records about itself, one typed attribute per `meta` row.

    The attribute name is the row's key, so libraries written before this class read the same.
    """

    # The model name or bundle path the library was last indexed with.
    model = _MetaText()
    # The open_clip spec and fingerprint of the image space the stored embeddings are in.
    image_model = _MetaText()
    image_fingerprint = _MetaText()
    # The search-space fingerprint of the bundle the last complete `index` ran with: its
    # encoders were checked then, so a re-index with it need not load them to check again.
    checked_fingerprint = _MetaText()

    def __init__(self, store: MetaRows) -> None:
        self.store = store

    @property
    def roots(self) -> list[Path]:
        """The folders (or single photos) `index` was given, over every run."""
        return [Path(root) for root in self.store.get_meta("roots") or []]

    @roots.setter
    def roots(self, roots: Iterable[Path]) -> None:
        self.store.set_meta("roots", sorted({str(root) for root in roots}))

    @property
    def excludes(self) -> list[str]:
        """The `--exclude` patterns every `index` applies (besides the built-in defaults)."""
        return [str(pattern) for pattern in self.store.get_meta("excludes") or []]

    @excludes.setter
    def excludes(self, patterns: Iterable[str]) -> None:
        self.store.set_meta("excludes", list(patterns))

    @property
    def schema_version(self) -> int | None:
        value = self.store.get_meta("schema_version")
        return value if isinstance(value, int) else None

    def set_image_space(self, image_model: str, image_fingerprint: str) -> None:
        self.image_model = image_model
        self.image_fingerprint = image_fingerprint
