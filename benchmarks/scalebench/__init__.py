"""The parts of `benchmarks/scale.py`: fabricated libraries (`library`), the measured
checkout (`checkout`), one size measured (`measure`), the figures and report (`figures`)."""
