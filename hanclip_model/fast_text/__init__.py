"""The fast text path: a query becomes a vector through ONNX Runtime, with no torch.

* `runtime`: what a search runs (numpy, onnxruntime, tokenizers; never torch or transformers);
* `pieces`: tokenizing a query from a piece table instead of a 250k-piece vocabulary;
* `table`: the token-embedding table in the smallest form that stays accurate (int8 with a
  scale per row, float16, float32), read a query's rows at a time;
* `export`: turning a sentence-transformers model into those files (needs torch, once);
* `cache`: one verified export per text model in the user cache, made when missing or stale.
"""
