"""The fast image path: a photo becomes a vector through ONNX Runtime, with no torch.

* `runtime`: what indexing would run (numpy, Pillow, onnxruntime; never torch or open_clip);
* `export`: turning an open_clip image tower into those files (needs torch, once);
* `cache`: one verified export per image model in the user cache, made when missing or stale.
"""
