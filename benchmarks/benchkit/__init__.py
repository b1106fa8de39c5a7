"""What every benchmark of `benchmarks/` shares: one way to write one.

A benchmark is a script run as `python benchmarks/NAME.py`; when it outgrows one file its
parts go in a package named after it (`speedbench`, `scalebench`, `onnxbench`). Its figures
are frozen dataclasses whose field and property names are the keys of its `--json` file
(`figures`: `Spread` for repeated timings, `Target` and `Check`); `report` renders them all
the same way; `entry` gives the common flags and the tail of `main` (report on stdout,
progress on stderr, exit 0 whether or not targets are met, 1 when a measurement could not be
made). The other shared parts:
`processes` (a child process timed alone, peak RSS, the machine's load), `environment`
(machine and software), `workspace` (hanclip's commands as a user runs them, in caches under
the work directory), `inputs` (bundles, photos, libraries, query texts), `vectors`, `server`.
Scripts run from `benchmarks/`, so these packages import as top-level names.
"""
