"""A script of benchmarks/ loaded in a test as `python benchmarks/NAME.py` runs it.

conftest.py puts benchmarks/ on the tests' sys.path, as running a script puts its own folder
there: `benchkit`, the benchmarks' packages and the scripts import each other that way.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from conftest import BENCHMARKS


def load_script(filename: str, module_name: str) -> ModuleType:
    """Run benchmarks/`filename` as the module `module_name`, registered in sys.modules (its
    dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / filename)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BENCHMARKS / filename}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
