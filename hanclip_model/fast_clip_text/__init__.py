"""The text towers of open_clip's multilingual models without torch at query time.

* `runtime`: what a search runs (numpy, onnxruntime, tokenizers; never torch, transformers
  or open_clip), opening what a query needs on its first text;
* `export`: turning an open_clip model's text tower and tokenizer into those files,
  verified against open_clip (needs torch and open_clip, once).
"""
