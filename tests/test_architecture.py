"""The house: which package may import which, and what inference may never import.

hanclip_model (inference) imports no other package of ours; trainer imports hanclip_model;
hanclip_eval imports hanclip_model and trainer; hanclip_library (the photo library) imports
hanclip_model only; hanclip_cli may import them all; nothing imports hanclip_cli. Importing
any module of hanclip_model or hanclip_library loads no torch, transformers,
sentence-transformers or open_clip: they load only when an encoder is first used. The library
prints nothing and knows no terminal: the front ends render what it returns.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hanclip_model", "trainer", "hanclip_eval", "hanclip_library", "hanclip_cli")
MAY_IMPORT = {
    "hanclip_model": set(),
    "trainer": {"hanclip_model"},
    "hanclip_eval": {"hanclip_model", "trainer"},
    "hanclip_library": {"hanclip_model"},
    "hanclip_cli": {"hanclip_model", "trainer", "hanclip_eval", "hanclip_library"},
}
HEAVY = ("torch", "transformers", "sentence_transformers", "open_clip")


def _modules(package: str) -> list[str]:
    root = REPO / package
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _imported_packages(path: Path) -> set[str]:
    """Our top-level packages that `path` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(REPO)): sorted(used - MAY_IMPORT[package] - {package})
        for path in sorted((REPO / package).rglob("*.py"))
        if (used := _imported_packages(path)) - MAY_IMPORT[package] - {package}
    }
    assert wrong == {}


def test_the_layer_check_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from hanclip_cli.cli import app\n", encoding="utf-8")
    assert _imported_packages(bad) == {"hanclip_cli"}


def _heavy_after_importing(modules: list[str]) -> list[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_inference_modules_import_no_torch_transformers_or_open_clip() -> None:
    modules = _modules("hanclip_model")
    assert "hanclip_model.fast_text.runtime" in modules and "hanclip_model.encoders" in modules
    assert _heavy_after_importing(modules) == []


def test_library_modules_import_no_torch_transformers_or_open_clip() -> None:
    modules = _modules("hanclip_library")
    assert "hanclip_library.indexer" in modules and "hanclip_library.searcher" in modules
    assert _heavy_after_importing(modules) == []


def _terminal_uses(path: Path) -> list[str]:
    """What in `path` writes to a terminal: print() calls and imports of rich or typer."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            found.append(f"print() on line {node.lineno}")
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [f"import {n}" for n in names if n.split(".")[0] in ("rich", "typer")]
    return found


def test_the_library_prints_nothing() -> None:
    uses = {
        str(path.relative_to(REPO)): found
        for path in sorted((REPO / "hanclip_library").rglob("*.py"))
        if (found := _terminal_uses(path))
    }
    assert uses == {}


def test_the_terminal_check_sees_a_print(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rich.console import Console\n    print(1)\n")
    assert sorted(_terminal_uses(bad)) == ["import rich.console", "print() on line 3"]


def test_no_python_file_is_over_700_lines() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(tracked) > 100  # the listing works, so the check is live
    long = {
        name: count
        for name in tracked
        if (REPO / name).exists()
        and (count := len((REPO / name).read_text(encoding="utf-8").splitlines())) > 700
    }
    assert long == {}


def test_the_import_check_sees_torch() -> None:
    assert _heavy_after_importing(["trainer.heads"]) == ["torch"]
