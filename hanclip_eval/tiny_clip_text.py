"""open_clip models with the text towers of the multilingual built-ins, built offline.

The towers of `xlm-roberta-base-ViT-B-32` (Hugging Face XLM-R, mean pooling, a projection),
`nllb-clip-*-siglip` (the encoder of an NLLB M2M100, first-token pooling, a projection) and
`ViT-*-SigLIP2-256` (open_clip's own TextTransformer, a Gemma tokenizer, canonicalized text),
each at a tiny size with random weights and a stand-in tokenizer of the same kind, written
as an open_clip `local-dir:` model: `open_clip_config.json`, the weights, the tokenizer files,
and (Hugging Face towers) the text model's `config.json` in `text-config/`, which the model
config names by path, so open_clip builds the tower without asking the hub. (The real-size
towers, for timing, are `random_models`'.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hanclip_eval.random_models import (
    HANGUL_SYLLABLES,
    METASPACE,
    PRINTABLE_ASCII,
    standin_corpus,
    standin_nllb_tokenizer,
    standin_unigram_tokenizer,
    xlmr_config,
)

KINDS = ("xlmr", "nllb", "siglip2")
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
TEXT_CONFIG_DIR = "text-config"
EMBED_DIM = 24
WIDTH = 32
IMAGE_SIZE = 32
# Above fast_text.pieces.PIECE_TABLE_MIN_VOCAB, so the tiny XLM-R tower is tokenized from a
# piece table as the real one is.
TINY_XLMR_VOCAB = 60_000
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0-4, as Gemma's
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _vision_cfg() -> dict[str, Any]:
    """A 1-layer ViT: only the text tower is under test."""
    return {"image_size": IMAGE_SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}


def _hf_text_cfg(directory: Path, pooler: str, proj: str | None) -> dict[str, Any]:
    text_config = str(directory / TEXT_CONFIG_DIR)
    cfg = {"hf_model_name": text_config, "hf_tokenizer_name": text_config}
    cfg["hf_pooler_type"] = pooler
    cfg["hf_model_pretrained"] = False  # random weights: nothing to load from the config's folder
    if proj is not None:
        cfg["hf_proj_type"] = proj
    return cfg


def _tiny_m2m100_config(vocab_size: int, pad_id: int) -> Any:
    from transformers import M2M100Config

    return M2M100Config(
        vocab_size=vocab_size,
        d_model=WIDTH,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        scale_embedding=True,
        pad_token_id=pad_id,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )


def standin_gemma_tokenizer() -> Any:
    """A `GemmaTokenizer` (byte-fallback BPE, `▁` for spaces, `<bos>` first, left padding) over
    every Hangul syllable and printable ASCII character, the 256 byte pieces, and merges that
    spell out each word of `standin_corpus()` from its start."""
    from transformers import GemmaTokenizer

    pieces = [*GEMMA_SPECIALS, *(f"<0x{byte:02X}>" for byte in range(256)), METASPACE]
    pieces += [*HANGUL_SYLLABLES, *PRINTABLE_ASCII]
    merges: list[tuple[str, str]] = []
    words = sorted({word.lower() for sentence in standin_corpus() for word in sentence.split()})
    known = set(pieces)
    for word in words:
        spelled = METASPACE
        for char in word:
            if spelled + char not in known:
                merges.append((spelled, char))
                pieces.append(spelled + char)
                known.add(spelled + char)
            spelled += char
    vocab = {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}
    return GemmaTokenizer(vocab=vocab, merges=merges)


def build_tiny_clip_text(directory: Path, kind: str, *, seed: int = 0) -> str:
    """Write a tiny random open_clip model whose text tower is of `kind` (one of KINDS) into
    `directory`; return its `local-dir:` spec."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "xlmr":
        tokenizer = standin_unigram_tokenizer(vocab_size=TINY_XLMR_VOCAB, seed=seed)
        xlmr_config(
            len(tokenizer),
            hidden_size=WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ).save_pretrained(directory / TEXT_CONFIG_DIR)
        text_cfg = _hf_text_cfg(directory, "mean_pooler", None)
        model_cfg = {"embed_dim": EMBED_DIM, "text_cfg": text_cfg}
    elif kind == "nllb":
        tokenizer = standin_nllb_tokenizer()
        m2m = _tiny_m2m100_config(len(tokenizer), tokenizer.pad_token_id)
        m2m.save_pretrained(directory / TEXT_CONFIG_DIR)
        text_cfg = _hf_text_cfg(directory, "cls_pooler", "linear")
        model_cfg = {"embed_dim": EMBED_DIM, "custom_text": True, "text_cfg": text_cfg}
    elif kind == "siglip2":
        tokenizer = standin_gemma_tokenizer()
        text_cfg = {
            "context_length": 16,
            "vocab_size": len(tokenizer),
            "hf_tokenizer_name": "stand-in",  # local-dir: the tokenizer in `directory`
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": WIDTH,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
            "act_kwargs": {"approximate": "tanh"},
        }
        model_cfg = {"embed_dim": EMBED_DIM, "custom_text": True, "text_cfg": text_cfg}
    else:
        raise ValueError(f"unknown text tower kind {kind!r}; one of {KINDS}")
    model_cfg["vision_cfg"] = _vision_cfg()
    tokenizer.save_pretrained(str(directory))
    return _write_open_clip(directory, model_cfg, seed)


def _write_open_clip(directory: Path, model_cfg: dict[str, Any], seed: int) -> str:
    import open_clip
    import torch
    from safetensors.torch import save_file

    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "size": IMAGE_SIZE,
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (directory / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = open_clip.CustomTextCLIP if _custom_text(model_cfg) else open_clip.CLIP
        cfg = {k: v for k, v in model_cfg.items() if k != "custom_text"}
        model = cls(**cfg)
        # open_clip leaves some towers at zero (projections, biases): random everywhere, so
        # nothing the export drops can hide behind a zero.
        with torch.no_grad():
            for parameter in model.text.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / OPEN_CLIP_WEIGHTS))
    return "local-dir:" + str(directory)


def _custom_text(model_cfg: dict[str, Any]) -> bool:
    return bool(model_cfg.get("custom_text")) or "hf_model_name" in model_cfg["text_cfg"]


def load_clip_text(spec: str) -> tuple[Any, Any]:
    """(open_clip model in eval mode on the CPU, its open_clip tokenizer) for a `local-dir:`
    spec written here, loaded the way open_clip loads any model."""
    import open_clip

    model = open_clip.create_model(spec, device="cpu")
    model.eval()
    return model, open_clip.get_tokenizer(spec)
