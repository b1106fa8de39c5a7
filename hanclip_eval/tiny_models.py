"""Tiny, seeded, fully offline stand-ins for the real models, for tests and the demo.

Where no model hub can be reached, these helpers build miniature models from scratch:

* an open_clip CLIP (tiny ViT + tiny text tower) in the `local-dir:` layout,
* a sentence-transformers model (WordPiece tokenizer over a small Korean/English corpus,
  2-layer BERT, mean pooling, optional Dense, Normalize),
* a folder of small, distinct photos with Korean names, and
* a `hanclip.json` bundle manifest written with plain `json`, as an outside tool would.

Weights are random but deterministic for a given seed; the global torch RNG is left untouched.
"""

from __future__ import annotations

import colorsys
import json
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageDraw, features

if TYPE_CHECKING:
    from transformers import BertModel, BertTokenizerFast

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
# open_clip's default SimpleTokenizer emits ids in [0, 49408): the text tower must cover them.
OPEN_CLIP_VOCAB_SIZE = 49408
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

BERT_HIDDEN = 32
BERT_MAX_LENGTH = 128
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CORPUS = (
    "바다 위의 노을 사진",
    "노을이 지는 바다",
    "해변에서 본 바다 노을",
    "고양이 사진",
    "귀여운 고양이가 잠을 잔다",
    "소파 위의 고양이",
    "강아지 사진",
    "공원에서 뛰는 강아지",
    "강아지와 고양이가 함께 논다",
    "산 위의 구름",
    "눈 덮인 산 사진",
    "산에서 본 도시",
    "밤의 도시 풍경",
    "도시의 불빛 사진",
    "비 오는 도시 거리",
    "가족 여행 사진",
    "친구들과 찍은 사진",
    "꽃이 핀 봄 공원",
    "눈 오는 겨울 밤",
    "맛있는 음식 사진",
    "a photo of the sea at sunset",
    "sunset over the sea",
    "a beach at sunset",
    "a photo of a cat",
    "a cute cat sleeping",
    "a cat on the sofa",
    "a photo of a dog",
    "a dog running in the park",
    "a dog and a cat playing together",
    "clouds over the mountain",
    "a snowy mountain photo",
    "the city seen from the mountain",
    "the city at night",
    "a photo of city lights",
    "a rainy city street",
    "a family trip photo",
    "a photo with friends",
    "flowers in a spring park",
    "a snowy winter night",
    "a photo of delicious food",
    "아침 햇살이 비치는 창가",
    "호수에 비친 나무",
    "기차 창밖으로 보이는 들판",
    "생일 케이크와 촛불",
    "자전거를 타는 아이",
    "morning light through the window",
    "trees reflected in the lake",
    "fields seen from a train window",
    "a birthday cake with candles",
    "a child riding a bicycle",
)

PHOTO_SIZE = (64, 48)
PHOTO_NAMES = (
    "바다_노을.jpg",
    "고양이.png",
    "여행/산.jpg",
    "city.webp",
    "dog.jpeg",
    "sea_sunset.png",
)


def open_clip_model_cfg(embed_dim: int, image_size: int) -> dict[str, Any]:
    """A tiny CLIP config: 2-layer ViT (patch 8) and 2-layer text tower of width 32."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 8,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": OPEN_CLIP_VOCAB_SIZE,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    }


def build_tiny_open_clip(
    directory: Path, embed_dim: int = 32, image_size: int = 32, seed: int = 0
) -> str:
    """Write a tiny random open_clip CLIP into `directory`; return its `local-dir:` spec.

    The layout is what `open_clip.create_model_and_transforms("local-dir:...")` reads:
    `open_clip_config.json` ({"model_cfg", "preprocess_cfg"}) plus `open_clip_model.safetensors`.
    The text tower uses open_clip's default tokenizer, so no tokenizer files are needed.
    """
    from open_clip import CLIP
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = open_clip_model_cfg(embed_dim, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**model_cfg)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "size": image_size,
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (directory / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(model.state_dict(), str(directory / OPEN_CLIP_WEIGHTS))
    return "local-dir:" + str(directory)


def wordpiece_vocab(sentences: tuple[str, ...] = CORPUS) -> dict[str, int]:
    """A deterministic WordPiece vocabulary for `sentences`.

    Special tokens, then every character both word-initial and as a `##` continuation (so any
    text made of known characters avoids [UNK]), then every whole word. The `tokenizers`
    trainer is not used: it breaks frequency ties in hash order, so its vocabulary (even its
    size) changes from run to run and seeded models would not be reproducible.
    """
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = sorted(
        {
            word
            for sentence in sentences
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence))
        }
    )
    chars = sorted({char for word in words for char in word})
    tokens = dict.fromkeys([*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars), *words])
    return {token: index for index, token in enumerate(tokens)}


def build_wordpiece_tokenizer(sentences: tuple[str, ...] = CORPUS) -> BertTokenizerFast:
    """A lowercasing BERT WordPiece tokenizer over `sentences`, as a `BertTokenizerFast`.

    Accents are not stripped: BERT's accent stripping NFD-decomposes Hangul into jamo.
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    backend = BertWordPieceTokenizer(
        wordpiece_vocab(sentences), lowercase=True, strip_accents=False
    )
    return BertTokenizerFast(
        tokenizer_object=backend._tokenizer,  # the wrapped `tokenizers.Tokenizer`
        do_lower_case=True,
        strip_accents=False,
        model_max_length=BERT_MAX_LENGTH,
    )


def _tiny_bert(vocab_size: int) -> BertModel:
    """A 2-layer, 2-head BERT of hidden size 32 with random weights."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=BERT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=BERT_MAX_LENGTH,
    )
    return BertModel(config)


def _sentence_modules() -> tuple[type, type, type, type]:
    """(Transformer, Pooling, Dense, Normalize) from whichever path this version exports."""
    try:
        from sentence_transformers.sentence_transformer.modules import (
            Dense,
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers < 5.4
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Dense, Normalize


def build_tiny_sentence_transformer(
    directory: Path, out_dim: int | None = None, seed: int = 0
) -> Path:
    """Save a tiny sentence-transformers model into `directory` and return `directory`.

    Pipeline: BERT (hidden 32) -> mean pooling -> Dense to `out_dim` (identity activation,
    only when `out_dim` is given) -> Normalize. `SentenceTransformer(str(directory))` loads it
    without any network access.
    """
    from sentence_transformers import SentenceTransformer

    directory = Path(directory)
    transformer_cls, pooling_cls, dense_cls, normalize_cls = _sentence_modules()
    tokenizer = build_wordpiece_tokenizer()
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as hf_dir:
        torch.manual_seed(seed)
        _tiny_bert(len(tokenizer)).save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        modules = [
            transformer_cls(hf_dir, max_seq_length=BERT_MAX_LENGTH),
            pooling_cls(BERT_HIDDEN, "mean"),
        ]
        if out_dim is not None:
            modules.append(dense_cls(BERT_HIDDEN, out_dim, activation_function=torch.nn.Identity()))
    modules.append(normalize_cls())
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(directory), create_model_card=False)
    return directory


def _photo_names(count: int) -> list[str]:
    """The first `count` of PHOTO_NAMES, then `photo_NNN.jpg`; `.webp` only if Pillow writes it."""
    names = [*PHOTO_NAMES[:count], *(f"photo_{i:03d}.jpg" for i in range(len(PHOTO_NAMES), count))]
    if features.check("webp"):
        return names
    return [name.replace(".webp", ".png") for name in names]


def _draw_photo(index: int, count: int, rng: random.Random) -> Image.Image:
    """A solid background of a hue unique to `index` with a contrasting ellipse or rectangle."""
    hue = index / count
    background = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.8, 0.9))
    foreground = tuple(round(c * 255) for c in colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.6, 0.4))
    image = Image.new("RGB", PHOTO_SIZE, background)
    width, height = PHOTO_SIZE
    left, top = rng.randrange(width // 2), rng.randrange(height // 2)
    box = (left, top, left + rng.randrange(12, width // 2), top + rng.randrange(12, height // 2))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if index % 2 else draw.rectangle)(box, fill=foreground)
    return image


def write_photo_folder(directory: Path, count: int = 8, seed: int = 0) -> list[Path]:
    """Write `count` small distinct photos under `directory` and return their paths.

    With `count >= 4` the set includes Korean names (`바다_노을.jpg`, `고양이.png`), one photo in a
    Korean-named subfolder (`여행/산.jpg`) and one `.webp` (`.png` if Pillow cannot write webp).
    """
    directory = Path(directory)
    rng = random.Random(seed)
    paths = []
    for index, name in enumerate(_photo_names(count)):
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _draw_photo(index, count, rng).save(path)
        paths.append(path)
    return paths


def write_bundle_dir(
    directory: Path,
    image_spec: str,
    text_model: Path | str,
    heads: str | None = None,
    name: str = "tiny",
) -> Path:
    """Write a format-1 `hanclip.json` into `directory` (created if needed); return `directory`.

    Deliberately independent of hanclip's own bundle code, like a third-party exporter.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": 1,
        "name": name,
        "image_model": image_spec,
        "text_model": str(text_model),
        "heads": heads,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (directory / "hanclip.json").write_text(text, encoding="utf-8")
    return directory


# The text-tower kinds of the built-ins whose text side is the open_clip model's own
# (`open_clip-text:`): "xlmr" (a Hugging Face XLM-R, unigram vocabulary, mean pooling),
# "nllb" (an NLLB encoder, BPE with language codes, first-token pooling, linear projection)
# and "siglip" (SigLIP 2's own TextTransformer over a Gemma-style vocabulary, a timm image
# tower with attention pooling).
TINY_CLIP_TEXT_KINDS = ("xlmr", "nllb", "siglip")
_TINY_HF_WIDTH = 32
# timm's test ViT (64 wide, patch 16 at 160 px): the smallest that has SigLIP's "map" pooling.
_TINY_TIMM_VISION = {
    "image_size": 160,
    "timm_model_name": "test_vit",
    "timm_model_pretrained": False,
    "timm_pool": "map",
    "timm_proj": "none",
}


def build_tiny_clip_text_model(directory: Path, kind: str, seed: int = 0) -> str:
    """A tiny open_clip model whose text tower is of `kind` (`TINY_CLIP_TEXT_KINDS`), random
    weights and a stand-in tokenizer of the same kind, saved in the `local-dir:` layout;
    return its spec (`open_clip-text:` + it names its text tower)."""
    from transformers import M2M100Config, XLMRobertaConfig

    from hanclip_eval.random_models import (
        standin_gemma_tokenizer,
        standin_nllb_tokenizer,
        standin_unigram_tokenizer,
        write_open_clip_dir,
    )

    width, hf = _TINY_HF_WIDTH, {"num_hidden_layers": 2, "num_attention_heads": 2}
    tiny_vit = open_clip_model_cfg(32, 32)["vision_cfg"]
    preprocess = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
    if kind == "xlmr":
        tokenizer = standin_unigram_tokenizer(vocab_size=24_000)
        hf_config = XLMRobertaConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64, **hf,
            max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
        )  # fmt: skip
        text_cfg = {"hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp"}
        model_cfg = {"embed_dim": 32, "vision_cfg": tiny_vit, "text_cfg": text_cfg}
    elif kind == "nllb":
        tokenizer = standin_nllb_tokenizer()
        tokenizer.src_lang = "eng_Latn"  # the real one's default: the encoder must set Korean
        hf_config = M2M100Config(
            vocab_size=len(tokenizer), d_model=width, encoder_layers=2, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
            decoder_ffn_dim=64, max_position_embeddings=130, scale_embedding=True,
        )  # fmt: skip
        text_cfg = {"hf_pooler_type": "cls_pooler", "hf_proj_type": "linear"}
        model_cfg = {"embed_dim": 32, "vision_cfg": tiny_vit, "text_cfg": text_cfg}
    elif kind == "siglip":
        tokenizer, hf_config = standin_gemma_tokenizer(vocab_size=None), None
        text_cfg = {
            "context_length": 64,
            "vocab_size": len(tokenizer),
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": width,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
            "act_kwargs": {"approximate": "tanh"},
        }
        model_cfg = {
            "embed_dim": 64,  # the timm tower's own width: SigLIP projects nothing
            "custom_text": True,
            "init_logit_bias": -10,
            "vision_cfg": _TINY_TIMM_VISION,
            "text_cfg": text_cfg,
        }
    else:
        raise ValueError(f"unknown text-tower kind {kind!r}: one of {TINY_CLIP_TEXT_KINDS}")
    preprocess["size"] = int(model_cfg["vision_cfg"]["image_size"])
    return write_open_clip_dir(Path(directory), model_cfg, preprocess, tokenizer, hf_config, seed)
