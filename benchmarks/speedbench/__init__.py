"""The speed benchmark behind `benchmarks/speed.py`, one module per job.

`settings` (sizes and inputs), `processes` (timing a child process, the machine's load),
`workspace` (hanclip's commands as a user runs them), `inputs` (bundle, photos, library),
`search`, `index` and `ceiling` (the command timings and the machine's ceiling), `naive` (the
contenders written without hanclip's care), `hnsw`, `accuracy`, `results` (every figure, in
frozen dataclasses), `targets` (the ratios and the PASS/FAIL checks), `report`, and `run`
(one whole run). Scripts run from `benchmarks/`, so the package imports as `speedbench`.
"""
