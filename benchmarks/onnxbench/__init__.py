"""The parts of `benchmarks/index_onnx.py`: the two bundles (`bundles`), the `hanclip index`
processes (`index_runs`), the encoder stage in this process (`encoder_stage`), the figures
and report (`figures`), one whole run (`run`)."""
