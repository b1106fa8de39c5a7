"""Reading caption corpora: a caption per line, or JSONL / CSV with a `text` or `caption` column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hanclip_model.errors import HanclipError
from hanclip_model.texts import clean_text

TEXT_COLUMNS = ("text", "caption")


def _from_record(record: object, where: str) -> str | None:
    if isinstance(record, str):
        return clean_text(record)
    if isinstance(record, dict):
        for column in TEXT_COLUMNS:
            if column in record:
                return clean_text(record[column])
    raise HanclipError(f"{where}: expected a string or an object with a 'text' or 'caption' key")


def read_captions(path: Path) -> list[str]:
    """Non-empty, NFC-normalised captions from `.txt` (a line each), `.jsonl`, `.csv` or `.tsv`."""
    if not path.is_file():
        raise HanclipError(f"caption file not found: {path}")
    suffix = path.suffix.lower()
    captions: list[str | None] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if suffix == ".jsonl":
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise HanclipError(
                                f"{path}:{number}: invalid JSON ({exc.msg})"
                            ) from None
                        captions.append(_from_record(record, f"{path}:{number}"))
            elif suffix in (".csv", ".tsv"):
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                column = next((c for c in TEXT_COLUMNS if c in (reader.fieldnames or [])), None)
                if column is None:
                    raise HanclipError(f"{path}: no 'text' or 'caption' column in the header")
                captions.extend(clean_text(row[column]) for row in reader)
            else:
                captions.extend(clean_text(line) for line in f)
    except UnicodeDecodeError:
        raise HanclipError(f"{path}: not UTF-8 text") from None
    found = [c for c in captions if c]
    if not found:
        raise HanclipError(f"{path}: no captions found")
    return found
