"""MODEL_CARD.md: what a trained bundle is, for the person who finds it in a folder.

`write_card` renders a bundle's manifest (`hanclip.json` as a dict): the name and language,
the frozen encoders, the data it was trained on and how much, every hyperparameter, the time
each stage took and on which device, the loss, the score calibration and the held-out figures.
Whatever the manifest holds is shown; whatever it lacks is left out or marked "—": a card is
written for a minimal manifest as for a full one, and keys this module does not know are
rendered as they come.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hanclip_model.bundle import MANIFEST_NAME
from hanclip_model.card import CARD_NAME, TrainingCard
from hanclip_model.files import atomic_write_text

NONE = "—"

# The keys a section of its own shows; the rest of `training` and of the manifest go under
# "Other details".
_MANIFEST_KEYS = {
    "format",
    "name",
    "language",
    "image_model",
    "text_model",
    "heads",
    "dims",
    "training",
    "calibration",
    "held_out",
    "evaluation",
    "recipe",
}
_TRAINING_KEYS = {
    "hyperparameters",
    "banks",
    "recipe",
    "seed",
    "epochs_trained",
    "loss",
    "seconds",
    "device",
    "held_out",
    "evaluation",
}
_BANK_COUNTS = (
    ("english_captions", "English captions"),
    ("korean_captions", "target-language captions"),
    ("images", "photos (unlabeled)"),
    ("unreadable_images", "photos that could not be read"),
)
_BANK_FILES = (
    ("english", "English captions"),
    ("target", "target-language captions"),
    ("korean", "target-language captions"),
    ("images", "photos"),
)


def write_card(bundle_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> Path:
    """Write `MODEL_CARD.md` into `bundle_dir` (atomically) from `manifest`, or from the
    bundle's own `hanclip.json` when none is given; returns its path."""
    bundle_dir = Path(bundle_dir)
    if manifest is None:
        manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    path = bundle_dir / CARD_NAME
    atomic_write_text(path, render_card(manifest))
    return path


def render_card(manifest: Mapping[str, Any]) -> str:
    """The card's Markdown text."""
    data = manifest if isinstance(manifest, Mapping) else {}
    training = _mapping(data.get("training"))
    name = _text(data.get("name")) or "hanclip bundle"
    out: list[str] = [f"# {name}", ""]
    out += [
        "A HanCLIP bundle: two frozen encoders and, when trained, the projection heads that "
        "bring text and photos into one space for search.",
        "",
    ]
    out += _model_section(data)
    out += _data_section(data, training)
    out += _hyperparameter_section(training)
    out += _run_section(training)
    out += _calibration_section(data)
    out += _held_out_section(data, training)
    out += _other_section(data, training)
    out += [
        "## Use",
        "",
        "```",
        "hanclip models install THIS_FOLDER --default",
        "hanclip search '바다 위 노을'",
        "```",
        "",
    ]
    return "\n".join(out)


# -- sections --------------------------------------------------------------------------------


def _model_section(data: Mapping[str, Any]) -> list[str]:
    heads = data.get("heads")
    dims = _mapping(data.get("dims"))
    lines = [
        "## Model",
        "",
        f"- Language: {TrainingCard.of(data).language or NONE}",
        f"- Image encoder (frozen): {_code(data.get('image_model'))}",
        f"- Text encoder (frozen): {_code(data.get('text_model'))}",
        "- Heads: "
        + (_code(heads) if heads else "none (image and text vectors compared directly)"),
    ]
    if dims:
        shown = ", ".join(f"{key} {_value(value)}" for key, value in dims.items())
        lines.append(f"- Dimensions: {shown}")
    return [*lines, ""]


def _data_section(data: Mapping[str, Any], training: Mapping[str, Any]) -> list[str]:
    banks = dict(_mapping(training.get("banks")))
    recipe = training.get("recipe", data.get("recipe"))
    if not banks and recipe is None:
        return ["## Training data", "", NONE, ""]
    lines = ["## Training data", ""]
    source = banks.pop("source", None)
    if source is not None:
        lines.append(f"- Source: {_value(source)}")
    banks.pop("language", None)  # shown under Model
    base = banks.pop("base_model", None)
    if base is not None:
        lines.append(f"- Encoded with: {_code(base)}")
    for key, label in _BANK_COUNTS:
        if _is_number(banks.get(key)):
            lines.append(f"- {label.capitalize()}: {_value(banks.pop(key))}")
    for key, label in _BANK_FILES:
        if isinstance(banks.get(key), str):
            lines.append(f"- {label.capitalize()} from: {_code(banks.pop(key))}")
    lines += _generic_items(banks)
    if recipe is not None:
        lines += ["", "Recipe:", ""] + _generic(recipe)
    return [*lines, ""]


def _hyperparameter_section(training: Mapping[str, Any]) -> list[str]:
    hyper = _mapping(training.get("hyperparameters"))
    extra = {k: training[k] for k in ("seed",) if k in training and "seed" not in hyper}
    rows = {**hyper, **extra}
    if not rows:
        return ["## Hyperparameters", "", NONE, ""]
    table = ["| name | value |", "|---|---|"]
    table += [f"| {_code(key)} | {_cell(value)} |" for key, value in rows.items()]
    return ["## Hyperparameters", "", *table, ""]


def _run_section(training: Mapping[str, Any]) -> list[str]:
    lines = ["## Training run", ""]
    if "epochs_trained" in training:
        lines.append(f"- Epochs trained: {_value(training['epochs_trained'])}")
    if "device" in training:
        lines.append(f"- Device: {_value(training['device'])}")
    seconds = training.get("seconds")
    if isinstance(seconds, Mapping) and seconds:
        numbers = [v for v in seconds.values() if _is_number(v)]
        total = f", {_duration(sum(numbers))} in all" if len(numbers) > 1 else ""
        stages = ", ".join(f"{stage} {_duration(value)}" for stage, value in seconds.items())
        lines.append(f"- Time: {stages}{total}")
    elif seconds is not None:
        lines.append(f"- Time: {_duration(seconds)}")
    loss = training.get("loss")
    if isinstance(loss, Mapping) and loss:
        lines.append("- Loss: " + ", ".join(f"{k} {_value(v)}" for k, v in loss.items()))
    elif loss is not None:
        lines.append(f"- Loss: {_value(loss)}")
    if len(lines) == 2:
        lines.append(NONE)
    return [*lines, ""]


# What the match probability is worth, measured on the synthetic world (trainer/calibration.py).
RELIABILITY = (
    "Reliable below 10 % and above 90 %; in between a rough guide (on the synthetic world "
    "the middle is 0.05-0.22 too high for the photo a caption was written for, and too low "
    "for photos of the same kind of thing: docs/training.md of hanclip)"
)


def _calibration_section(data: Mapping[str, Any]) -> list[str]:
    calibration = data.get("calibration")
    if calibration is None:
        return ["## Calibration", "", "Not calibrated.", ""]
    if not isinstance(calibration, Mapping):
        return ["## Calibration", "", _value(calibration), ""]
    rest = dict(calibration)
    lines = ["## Calibration", ""]
    fitted = "a" in rest and "b" in rest
    if fitted:
        a, b = rest.pop("a"), rest.pop("b")
        lines.append(f"- a = {_value(a)}, b = {_value(b)}")
    if "pairs" in rest:
        lines.append(f"- Fitted on: {_value(rest.pop('pairs'))} pairs")
    lines += _generic_items(rest)
    if fitted:
        lines.append(f"- {RELIABILITY}")
    return [*lines, ""]


def _held_out_section(data: Mapping[str, Any], training: Mapping[str, Any]) -> list[str]:
    found = [
        value
        for value in (
            training.get("held_out"),
            training.get("evaluation"),
            data.get("held_out"),
            data.get("evaluation"),
        )
        if value is not None
    ]
    if not found:
        return ["## Held-out results", "", NONE, ""]
    lines = ["## Held-out results", ""]
    for value in found:
        lines += _generic(value)
        lines.append("")
    return lines


def _other_section(data: Mapping[str, Any], training: Mapping[str, Any]) -> list[str]:
    rest = {k: v for k, v in training.items() if k not in _TRAINING_KEYS}
    rest.update({k: v for k, v in data.items() if k not in _MANIFEST_KEYS})
    if not rest:
        return []
    return ["## Other details", "", *_generic_items(rest), ""]


# -- rendering any value ---------------------------------------------------------------------


def _generic(value: Any) -> list[str]:
    """Any JSON value as Markdown: a mapping of like rows as a table, else bullets."""
    if isinstance(value, Mapping):
        table = _table(value)
        return table if table is not None else _generic_items(value)
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        table = _table({str(i + 1): v for i, v in enumerate(value)})
        if table is not None:
            return table
    return [_value(value)]


def _table(rows: Mapping[str, Any]) -> list[str] | None:
    """`{row: {column: scalar}}` as a Markdown table; None when it is not of that shape."""
    if not rows or not all(isinstance(r, Mapping) and r for r in rows.values()):
        return None
    if any(isinstance(v, Mapping | list) for r in rows.values() for v in r.values()):
        return None
    columns: list[str] = []
    for row in rows.values():
        columns += [str(c) for c in row if str(c) not in columns]
    lines = [
        "| | " + " | ".join(_cell(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, row in rows.items():
        keyed = {str(k): v for k, v in row.items()}
        cells = [_cell(keyed[c]) if c in keyed else NONE for c in columns]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return lines


def _generic_items(mapping: Mapping[str, Any], depth: int = 0) -> list[str]:
    indent = "  " * depth
    lines = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{indent}- {key}:")
            lines += _generic_items(value, depth + 1)
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            lines.append(f"{indent}- {key}:")
            for number, item in enumerate(value, start=1):
                if isinstance(item, Mapping):
                    lines += _generic_items({str(number): item}, depth + 1)
                else:
                    lines.append(f"{indent}  - {_value(item)}")
        else:
            lines.append(f"{indent}- {key}: {_value(value)}")
    return lines


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _value(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) if value else NONE
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items()) if value else NONE
    return " ".join(str(value).split())


def _code(value: Any) -> str:
    text = _value(value)
    return text if text == NONE else "`" + text.replace("`", "'") + "`"


def _cell(value: Any) -> str:
    return _value(value).replace("|", "\\|")


def _duration(seconds: Any) -> str:
    if not _is_number(seconds):
        return _value(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
