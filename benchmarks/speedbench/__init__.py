"""The speed benchmark behind `benchmarks/speed.py`, one module per job: `settings`, `search`,
`index` and `ceiling`, `naive` (the contenders), `hnsw`, `accuracy`, `results`, `targets`, and
`run` (one whole run).
"""
