"""Tiny stand-ins for the baselines' models, saved where `BaselineSources` can point.

`build_tiny_nllb` writes an M2M100 translator (NLLB layout, stand-in tokenizer) and
`build_tiny_koclip` a `VisionTextDualEncoderModel` in the koclip-base-pt layout. Both use
the real-size builders of `hanclip_eval.random_models` with scaled-down shapes, so the
loading code is the one users run; weights are random and seeded.
"""

from __future__ import annotations

from pathlib import Path

from hanclip_eval.random_models import (
    BertShape,
    Seq2SeqShape,
    VisionShape,
    random_dual_encoder,
    random_nllb_600m,
)

TINY_NLLB = Seq2SeqShape(
    d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32, vocab_size=None
)
TINY_KOCLIP_VISION = VisionShape(
    hidden=32, layers=2, heads=2, intermediate=64, image_size=32, patch_size=8
)
TINY_KOCLIP_TEXT = BertShape(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=None)
KOCLIP_DIM = 24


def build_tiny_nllb(directory: Path) -> Path:
    """Save a tiny random NLLB-shaped translator and its tokenizer into `directory`."""
    model, tokenizer = random_nllb_600m(shape=TINY_NLLB, device="cpu")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def build_tiny_koclip(directory: Path) -> Path:
    """Save a tiny KoCLIP (CLIP ViT + BERT, KOCLIP_DIM-d projections) into `directory`."""
    return random_dual_encoder(
        directory, vision=TINY_KOCLIP_VISION, text=TINY_KOCLIP_TEXT, projection_dim=KOCLIP_DIM
    )
