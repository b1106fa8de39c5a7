"""The token-embedding table of a text export, in the form it is kept on disk.

The multilingual MiniLM's table is 250,002 rows of 384: 384 MB in float32, the largest file
of an export. So `export` keeps it in the smallest of `TABLE_FORMS` with which the exported
encoder still matches sentence-transformers on its verification texts (`export.MIN_COSINE`),
trying them smallest first, and records the form in `fast_text.json`:

* "int8": each row divided by its own scale (its largest magnitude / 127) and rounded; the
  scales, float32, in `token_scales.npy`. A quarter of the size: a row of a few hundred
  values rounded this way keeps its direction (what the encoder's first LayerNorm reads).
* "float16": half the size.
* "float32": the table as the model holds it; exports before `runtime.FAST_TEXT_FORMAT` 4
  have only this form.

A query reads only the rows of its tokens (the files are memory-mapped), back in float32.
This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hanclip_model.errors import BundleError
from hanclip_model.files import atomic_path

EMBEDDINGS_NAME = "token_embeddings.npy"
SCALES_NAME = "token_scales.npy"  # "int8" only: one float32 scale per row
# Each form, smallest first, and the dtype of `EMBEDDINGS_NAME` in it.
TABLE_FORMS = {
    "int8": np.dtype(np.int8),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
}
FULL_FORM = "float32"
SMALLER_FORMS = tuple(form for form in TABLE_FORMS if form != FULL_FORM)
INT8_LIMIT = 127  # symmetric: -127..127, so a row's largest magnitude maps exactly


@dataclass(frozen=True)
class TokenTable:
    """An export's token-embedding table, opened memory-mapped."""

    form: str
    values: np.ndarray  # [vocab, hidden], of TABLE_FORMS[form]
    scales: np.ndarray | None  # [vocab] float32 for "int8"; None otherwise

    @classmethod
    def open(cls, directory: Path, form: str) -> TokenTable:
        """The table of the export in `directory`, which `fast_text.json` says is in `form`;
        `BundleError` when the files do not hold that form."""
        if form not in TABLE_FORMS:
            raise BundleError(f"{directory}: unknown token table form {form!r}")
        values = np.load(directory / EMBEDDINGS_NAME, mmap_mode="r")
        scales = np.load(directory / SCALES_NAME, mmap_mode="r") if form == "int8" else None
        if values.ndim != 2 or values.dtype != TABLE_FORMS[form]:
            raise BundleError(
                f"{directory / EMBEDDINGS_NAME}: {values.dtype} {values.shape}, "
                f"not the {form} table fast_text.json names"
            )
        if scales is not None and scales.shape != values.shape[:1]:
            raise BundleError(f"{directory / SCALES_NAME}: not one scale per row")
        return cls(form, values, scales)

    @property
    def shape(self) -> tuple[int, int]:
        rows, hidden = self.values.shape
        return int(rows), int(hidden)

    def rows(self, token_ids: np.ndarray) -> np.ndarray:
        """The embeddings of `token_ids` (any shape), float32, shape + (hidden,)."""
        # Fancy indexing a memmap reads just these rows, not the whole table.
        picked = np.asarray(self.values[token_ids], dtype=np.float32)
        if self.scales is not None:
            picked *= np.asarray(self.scales[token_ids], dtype=np.float32)[..., None]
        return picked


Config = TypeVar("Config", bound=Any)  # an export's config: a dataclass with `write`


def smallest_form(
    directory: Path,
    full: np.ndarray,
    config: Config,
    checked: Callable[[Config], float],
    min_cosine: float,
) -> tuple[Config, dict[str, float]]:
    """Write the token table `full` in each of `SMALLER_FORMS` in turn, with a config that
    names it (the encoder that checks it opens the table its config names), and keep the
    first whose `checked` cosine reaches `min_cosine`; float32 written back when none does.
    Returns the config naming the form kept (`config` itself for float32) and the cosine of
    every form tried."""
    cosines: dict[str, float] = {}
    for form in SMALLER_FORMS:
        write_token_table(directory, full, form)
        trial = replace(config, token_table=form)
        trial.write(directory)
        cosines[form] = checked(trial)
        if cosines[form] >= min_cosine:
            return trial, cosines
    write_token_table(directory, full, FULL_FORM)
    return config, cosines


def write_token_table(directory: Path, table: np.ndarray, form: str) -> None:
    """Write the float32 `table` into `directory` in `form`, replacing any other form's
    files there. Each file is replaced whole (a new file renamed over the old), so a table
    still memory-mapped from before keeps reading the old one."""
    if form == "int8":
        values, scales = int8_rows(table)
        _save(directory / EMBEDDINGS_NAME, values)
        _save(directory / SCALES_NAME, scales)
        return
    _save(directory / EMBEDDINGS_NAME, np.asarray(table, dtype=TABLE_FORMS[form]))
    (directory / SCALES_NAME).unlink(missing_ok=True)


def _save(path: Path, array: np.ndarray) -> None:
    # A file object: given a name, np.save would add ".npy" to the temporary one.
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)


def int8_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values int8, scales float32): each row over its own scale, rounded. A row of zeros
    gets scale 1, so that it comes back as zeros."""
    table = np.asarray(table, dtype=np.float32)
    largest = np.abs(table).max(axis=1)
    scales = np.where(largest > 0, largest / INT8_LIMIT, 1.0).astype(np.float32)
    values = np.rint(table / scales[:, None])
    return np.clip(values, -INT8_LIMIT, INT8_LIMIT).astype(np.int8), scales
