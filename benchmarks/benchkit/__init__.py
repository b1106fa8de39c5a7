"""What every benchmark of `benchmarks/` shares (docs/architecture.md, "benchmarks").

A benchmark is a script, `python benchmarks/NAME.py`, with a package of its own beside it when
it outgrows one file; its figures are frozen dataclasses (`figures`), rendered by `report`,
with the common flags and exit codes of `entry`. Scripts run from `benchmarks/`, so these
packages import as top-level names.
"""
