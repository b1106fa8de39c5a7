"""The fast text path: a query becomes a vector through ONNX Runtime, with no torch.

* `runtime`: what a search runs (numpy, onnxruntime, tokenizers; never torch or transformers);
* `pieces`: tokenizing a query from a piece table instead of a 250k-piece vocabulary;
* `export`: turning a sentence-transformers model into those files (needs torch, once);
* `cache`: one verified export per text model in the user cache, made when missing or stale.
"""
