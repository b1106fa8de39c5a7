"""The parts of `benchmarks/ocr_quality.py`: the generated Korean test set and its queries
(`testset`), reading it with each pipeline and scoring what was read (`measure`)."""
