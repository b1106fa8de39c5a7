"""The speed benchmark behind `benchmarks/speed.py`, one module per job.

`settings` (sizes and sentences), `search`, `index` and `ceiling` (the command timings and
the machine's ceiling), `naive` (the contenders written without hanclip's care), `hnsw`,
`accuracy`, `results` (every figure, in frozen dataclasses, and the ratios), `targets`, and
`run` (one whole run). What other benchmarks share too (timing a child process, the
workspace, the inputs, the report) is in `benchkit`.
"""
