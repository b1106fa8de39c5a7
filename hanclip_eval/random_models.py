"""Real-size models with random weights, for timing where no model hub can be reached.

Same architectures and FLOPs as the models users download, so latency is measured at true
cost: open_clip `ViT-B-32` with no pretrained tag, a paraphrase-multilingual-MiniLM-L12-v2
shaped BERT, and an NLLB-200-distilled-600M shaped M2M100. Their outputs are meaningless.

The real tokenizers cannot be downloaded either, so stand-ins are built with `tokenizers`
from a generated Korean/English corpus plus every Hangul syllable and printable ASCII
character (no text falls back to a fused <unk>). Their token counts differ from the real
sentencepiece models' (unmeasured here), so a benchmark should report the counts it ran.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanclip_eval.baselines import SOURCE_LANG, TARGET_LANG
from hanclip_model.device import is_cuda, pick_device
from hanclip_model.encoders import ClipEncoder

if TYPE_CHECKING:
    from transformers import BertTokenizerFast, M2M100ForConditionalGeneration, NllbTokenizer

RANDOM_CLIP_SPEC = "ViT-B-32"  # no pretrained tag: open_clip builds it with random weights
NLLB_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3, as in NLLB's tokenizer
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
METASPACE = "\u2581"
HANGUL_SYLLABLES = "".join(chr(code) for code in range(0xAC00, 0xD7A4))
PRINTABLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))
BPE_MERGES = 600
Pair = tuple[str, str]

# (Korean, English) fragments combined into caption-like sentences in both languages.
_SUBJECTS = (
    ("고양이", "a cat"),
    ("강아지", "a dog"),
    ("아이", "a child"),
    ("노을", "the sunset"),
    ("자전거", "a bicycle"),
    ("가족", "a family"),
    ("꽃", "flowers"),
    ("기차", "a train"),
)
_SCENES = (
    ("바다 위의", "over the sea"),
    ("공원에서", "in the park"),
    ("산 위의", "on the mountain"),
    ("도시의 밤", "in the city at night"),
    ("눈 오는 겨울", "in the snowy winter"),
    ("창가에서", "by the window"),
)
_MOODS = (
    ("아름다운", "a beautiful photo of"),
    ("귀여운", "a cute photo of"),
    ("오래된", "an old photo of"),
    ("밝은", "a bright photo of"),
    ("조용한", "a quiet photo of"),
)


def standin_corpus() -> list[str]:
    """A few hundred Korean and English caption-like sentences, always the same."""
    sentences = []
    for (ko_mood, en_mood), (ko_scene, en_scene), (ko_subject, en_subject) in itertools.product(
        _MOODS, _SCENES, _SUBJECTS
    ):
        sentences.append(f"{ko_scene} {ko_mood} {ko_subject} 사진")
        sentences.append(f"{en_mood} {en_subject} {en_scene}")
    return sentences


def _learn_bpe(words: Counter[str], alphabet: str, num_merges: int) -> tuple[list[str], list[Pair]]:
    """Byte-pair merges learned on `words`, ties broken by the pair itself.

    Written out because the `tokenizers` trainers break frequency ties in hash order, so
    their vocabulary changes from run to run and seeded models would not be reproducible.
    """
    splits = {word: list(word) for word in words}
    tokens = sorted(set(alphabet) | {char for word in words for char in word})
    merges: list[Pair] = []
    for _ in range(num_merges):
        pairs: Counter[Pair] = Counter()
        for word, count in words.items():
            parts = splits[word]
            for pair in itertools.pairwise(parts):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        tokens.append(best[0] + best[1])
        for word, parts in splits.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            splits[word] = merged
    return tokens, merges


def standin_nllb_tokenizer() -> NllbTokenizer:
    """An `NllbTokenizer` (same class, language codes and special-token layout as NLLB-200)
    over a small BPE vocabulary learned on `standin_corpus()`."""
    from transformers import NllbTokenizer

    words = Counter(METASPACE + word for sentence in standin_corpus() for word in sentence.split())
    alphabet = METASPACE + HANGUL_SYLLABLES + PRINTABLE_ASCII
    tokens, merges = _learn_bpe(words, alphabet, BPE_MERGES)
    vocab = {token: index for index, token in enumerate(dict.fromkeys([*NLLB_SPECIALS, *tokens]))}
    return NllbTokenizer(vocab=vocab, merges=merges, src_lang=SOURCE_LANG, tgt_lang=TARGET_LANG)


def standin_wordpiece_tokenizer(max_length: int = 128) -> BertTokenizerFast:
    """A BERT WordPiece tokenizer: every Hangul syllable and ASCII character (word-initial and
    `##` continuation) plus the whole words of `standin_corpus()`."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    words = sorted({word.lower() for sentence in standin_corpus() for word in sentence.split()})
    chars = HANGUL_SYLLABLES + PRINTABLE_ASCII.lower()
    tokens = dict.fromkeys([*WORDPIECE_SPECIALS, *chars, *(f"##{char}" for char in chars), *words])
    vocab = {token: index for index, token in enumerate(tokens)}
    # No accent stripping: it NFD-decomposes Hangul into jamo that are not in the vocabulary.
    backend = BertWordPieceTokenizer(vocab, lowercase=True, strip_accents=False)
    return BertTokenizerFast(
        tokenizer_object=backend._tokenizer,  # the wrapped `tokenizers.Tokenizer`
        do_lower_case=True,
        strip_accents=False,
        model_max_length=max_length,
    )


XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3; <mask> is the last id
XLMR_VOCAB_SIZE = 250_002


def standin_unigram_tokenizer(
    vocab_size: int = XLMR_VOCAB_SIZE, max_length: int = 128, seed: int = 0
) -> Any:
    """An XLM-R-style tokenizer, as paraphrase-multilingual-MiniLM-L12-v2 ships: a Unigram
    vocabulary of `vocab_size` pieces (specials first, <mask> last), NFKC, Metaspace and
    `<s> ... </s>` around every text.

    Pieces: the corpus words with and without `▁`, every Hangul syllable and printable ASCII
    character (so no text is unknown), then seeded random syllable strings up to the size, so
    loading it costs what loading the real 250,002-piece vocabulary costs."""
    import random

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import XLMRobertaTokenizerFast

    words = sorted({word.lower() for sentence in standin_corpus() for word in sentence.split()})
    scored = [(METASPACE + word, -5.0) for word in words] + [(word, -6.0) for word in words]
    chars = [METASPACE, *HANGUL_SYLLABLES, *PRINTABLE_ASCII]
    scored += [(char, -10.0) for char in chars] + [(METASPACE + char, -9.0) for char in chars]
    pieces = dict.fromkeys(XLMR_SPECIALS, 0.0)
    for piece, score in scored:
        pieces.setdefault(piece, score)
    if vocab_size < len(pieces) + 1:
        raise ValueError(f"vocab_size {vocab_size} is below the stand-in's {len(pieces) + 1}")
    rng = random.Random(seed)
    while len(pieces) < vocab_size - 1:
        filler = "".join(rng.choices(HANGUL_SYLLABLES, k=rng.randint(2, 4)))
        piece = METASPACE + filler if rng.random() < 0.5 else filler
        pieces.setdefault(piece, -rng.uniform(11, 16))
    pieces["<mask>"] = 0.0
    backend = Tokenizer(models.Unigram(list(pieces.items()), unk_id=3, byte_fallback=False))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )


@dataclass(frozen=True)
class Seq2SeqShape:
    """An M2M100 encoder-decoder size. The default is NLLB-200-distilled-600M's."""

    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    attention_heads: int = 16
    ffn_dim: int = 4096
    vocab_size: int | None = 256206  # None: just the tokenizer's size
    max_positions: int = 1024


@dataclass(frozen=True)
class BertShape:
    """A BERT encoder size. The default is paraphrase-multilingual-MiniLM-L12-v2's."""

    hidden: int = 384
    layers: int = 12
    heads: int = 12
    intermediate: int = 1536
    vocab_size: int | None = 250002  # None: just the tokenizer's size
    max_positions: int = 512


@dataclass(frozen=True)
class VisionShape:
    """A CLIP vision tower size. The default is ViT-B/32's."""

    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    image_size: int = 224
    patch_size: int = 32


NLLB_600M = Seq2SeqShape()
MINILM_L12 = BertShape()
# Multilingual-CLIP's text side: DistilBERT-multilingual (6 layers of 768) + Dense to 512.
DISTILBERT_MULTILINGUAL = BertShape(hidden=768, layers=6, intermediate=3072, vocab_size=119547)
# KoCLIP's text side: klue/roberta-base (a BERT body of the same size and FLOPs).
ROBERTA_BASE = BertShape(hidden=768, layers=12, intermediate=3072, vocab_size=32000)
VIT_B32 = VisionShape()
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def random_clip_vit_b32(device: str | None = None) -> ClipEncoder:
    """An open_clip ViT-B/32 encoder with random weights (loads on first use)."""
    return ClipEncoder(RANDOM_CLIP_SPEC, device=device)


def random_nllb_600m(
    tokenizer_dir: Path | None = None,
    *,
    device: str | None = None,
    shape: Seq2SeqShape = NLLB_600M,
    seed: int = 0,
) -> tuple[M2M100ForConditionalGeneration, Any]:
    """An NLLB-shaped M2M100 with random weights, in eval mode on `device`, and a tokenizer.

    `tokenizer_dir` holds a real NLLB tokenizer when one is at hand; otherwise the stand-in
    from `standin_nllb_tokenizer()` is used. Random weights never choose to stop, so time
    generation with a fixed output length (`Translator(length_ratio=...)`).

    The weights are created on `device` directly: initialising 615M parameters on a CPU and
    moving them would cost time and twice the model's memory at peak.
    """
    import torch
    from transformers import AutoTokenizer, M2M100Config, M2M100ForConditionalGeneration

    if tokenizer_dir is None:
        tokenizer = standin_nllb_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            str(tokenizer_dir), src_lang=SOURCE_LANG, tgt_lang=TARGET_LANG
        )
    vocab_size = _vocab_size(shape.vocab_size, len(tokenizer))
    config = M2M100Config(
        vocab_size=vocab_size,
        d_model=shape.d_model,
        encoder_layers=shape.encoder_layers,
        decoder_layers=shape.decoder_layers,
        encoder_attention_heads=shape.attention_heads,
        decoder_attention_heads=shape.attention_heads,
        encoder_ffn_dim=shape.ffn_dim,
        decoder_ffn_dim=shape.ffn_dim,
        max_position_embeddings=shape.max_positions,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,  # NLLB starts decoding from </s>
    )
    target = torch.device(pick_device(device))
    cuda_devices = [target.index or 0] if is_cuda(target) else []
    with torch.random.fork_rng(devices=cuda_devices), target:
        torch.manual_seed(seed)
        model = M2M100ForConditionalGeneration(config)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def _bert_config(shape: BertShape, vocab_size: int) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
    )


def random_minilm(
    out_dir: Path,
    *,
    shape: BertShape = MINILM_L12,
    dense_out: int | None = None,
    seed: int = 0,
    tokenizer: str = "wordpiece",
) -> Path:
    """Save a sentence-transformers model (BERT of `shape` + mean pooling, and a Dense layer
    to `dense_out` when given; random weights) into `out_dir`. The default shape is
    paraphrase-multilingual-MiniLM-L12-v2's; `TextEncoder` loads it.

    `tokenizer`: "wordpiece" (a small stand-in WordPiece vocabulary, quick to build) or
    "unigram" (`standin_unigram_tokenizer`, as large as the real model's; `shape.vocab_size`
    pieces, or the XLM-R size when the shape leaves it to the tokenizer).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    transformer_cls, pooling_cls, dense_cls = _sentence_modules()
    max_length = min(128, shape.max_positions)
    if tokenizer == "unigram":
        vocab = standin_unigram_tokenizer(shape.vocab_size or XLMR_VOCAB_SIZE, max_length, seed)
    elif tokenizer == "wordpiece":
        vocab = standin_wordpiece_tokenizer(max_length=max_length)
    else:
        raise ValueError(f"unknown stand-in tokenizer {tokenizer!r}")
    config = _bert_config(shape, _vocab_size(shape.vocab_size, len(vocab)))
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as hf_dir:
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(hf_dir)
        vocab.save_pretrained(hf_dir)
        modules = [
            transformer_cls(hf_dir, max_seq_length=vocab.model_max_length),
            pooling_cls(shape.hidden, "mean"),
        ]
        if dense_out is not None:
            modules.append(dense_cls(shape.hidden, dense_out, activation_function=torch.nn.Tanh()))
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(out_dir), create_model_card=False)
    return Path(out_dir)


def random_dual_encoder(
    out_dir: Path,
    *,
    vision: VisionShape = VIT_B32,
    text: BertShape = ROBERTA_BASE,
    projection_dim: int = 512,
    seed: int = 0,
) -> Path:
    """Save a KoCLIP-shaped `VisionTextDualEncoderModel` (CLIP vision tower + BERT-style text
    tower, random weights, stand-in tokenizer, CLIP image processor) into `out_dir`, in the
    layout `KoclipEmbedder` loads."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        VisionTextDualEncoderConfig,
        VisionTextDualEncoderModel,
    )

    tokenizer = standin_wordpiece_tokenizer(max_length=min(128, text.max_positions))
    vision_config = CLIPVisionConfig(
        hidden_size=vision.hidden,
        intermediate_size=vision.intermediate,
        num_hidden_layers=vision.layers,
        num_attention_heads=vision.heads,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
    )
    text_config = _bert_config(text, _vocab_size(text.vocab_size, len(tokenizer)))
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision_config, text_config, projection_dim=projection_dim
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        VisionTextDualEncoderModel(config=config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessor(
        size={"shortest_edge": vision.image_size},
        crop_size={"height": vision.image_size, "width": vision.image_size},
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
    ).save_pretrained(out_dir)
    return Path(out_dir)


def _vocab_size(requested: int | None, tokenizer_size: int) -> int:
    if requested is None:
        return tokenizer_size
    if requested < tokenizer_size:
        raise ValueError(f"vocab_size {requested} is smaller than the tokenizer ({tokenizer_size})")
    return requested


def _sentence_modules() -> tuple[type, type, type]:
    """(Transformer, Pooling, Dense) from whichever path this sentence-transformers exports."""
    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    except ImportError:  # sentence-transformers < 5.4
        from sentence_transformers.models import Dense, Pooling, Transformer
    return Transformer, Pooling, Dense


def save_random_clip_vit_b32(directory: Path, *, seed: int = 0) -> str:
    """Save an open_clip ViT-B/32 (the whole CLIP, image and text towers) with seeded random
    weights in open_clip's `local-dir:` layout, and return its `local-dir:` spec.

    Unlike `RANDOM_CLIP_SPEC` (new random weights at every load, so nothing to cache), a saved
    model has fixed weights: `fast_image` can export it to ONNX, as it does a downloaded one.
    The preprocessing is ViT-B-32's (224 px, bicubic, shortest side, OpenAI mean and std).
    A folder that already holds both files is kept as it is; a new one is written beside it
    and renamed into place, so an interrupted run leaves no half-written model."""
    import json
    import shutil

    import open_clip
    import torch
    from safetensors.torch import save_file

    from hanclip_model.files import replace_dir

    directory = Path(directory)
    config_path, weights_path = "open_clip_config.json", "open_clip_model.safetensors"
    if (directory / config_path).is_file() and (directory / weights_path).is_file():
        return "local-dir:" + str(directory.resolve())
    model_cfg = open_clip.get_model_config(RANDOM_CLIP_SPEC)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(RANDOM_CLIP_SPEC, pretrained=None, device="cpu")
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "size": int(model_cfg["vision_cfg"]["image_size"]),
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / config_path).write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(staging / weights_path)
    )
    replace_dir(staging, directory)
    return "local-dir:" + str(directory.resolve())


GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0-3, as in Gemma's tokenizer
GEMMA_VOCAB_SIZE = 256_000  # SigLIP 2's text vocabulary


def standin_gemma_tokenizer(vocab_size: int | None = GEMMA_VOCAB_SIZE, seed: int = 0) -> Any:
    """A SigLIP 2-style tokenizer (Gemma's kind: byte-pair pieces over `▁`-marked words, <pad>
    at 0): BPE merges learned on `standin_corpus()`, then seeded random syllable strings up to
    `vocab_size` pieces (None: no filler), so loading it costs what the real vocabulary does."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Counter(METASPACE + word for sentence in standin_corpus() for word in sentence.split())
    tokens, merges = _learn_bpe(words, METASPACE + HANGUL_SYLLABLES + PRINTABLE_ASCII, BPE_MERGES)
    vocab = dict.fromkeys([*GEMMA_SPECIALS, *tokens])
    rng = random.Random(seed)
    while vocab_size is not None and len(vocab) < vocab_size:
        vocab.setdefault(METASPACE + "".join(rng.choices(HANGUL_SYLLABLES, k=rng.randint(2, 4))))
    ids = {token: index for index, token in enumerate(vocab)}
    backend = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


# The Hugging Face text towers inside open_clip's multilingual models, at their real sizes
# (`hf_model_name` in open_clip's configs): built from these configs, never fetched.
def xlmr_config(vocab_size: int, **shape: Any) -> Any:
    """xlm-roberta-base's config.json, with `shape` overriding its sizes (the tests' tiny
    towers, `tiny_clip_text`)."""
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **shape,
    )


def _nllb_config(vocab_size: int, layers: int, ffn_dim: int) -> Any:
    from transformers import M2M100Config

    return M2M100Config(
        vocab_size=vocab_size,
        d_model=1024,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_position_embeddings=1024,
        scale_embedding=True,
    )


NLLB_VOCAB_SIZE = 256_206
# hf_model_name -> (a config of that size, the stand-in tokenizer of the same kind)
HF_TEXT_TOWERS: dict[str, tuple[Any, Any]] = {
    "xlm-roberta-base": (lambda: xlmr_config(XLMR_VOCAB_SIZE), standin_unigram_tokenizer),
    "facebook/nllb-200-distilled-600M": (
        lambda: _nllb_config(NLLB_VOCAB_SIZE, 12, 4096),
        standin_nllb_tokenizer,
    ),
    "facebook/nllb-200-distilled-1.3B": (
        lambda: _nllb_config(NLLB_VOCAB_SIZE, 24, 8192),
        standin_nllb_tokenizer,
    ),
}


def write_open_clip_dir(
    directory: Path,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    tokenizer: Any | None,
    hf_config: Any | None = None,
    seed: int = 0,
) -> str:
    """Build the open_clip model `model_cfg` with seeded random weights and save it, in
    open_clip's `local-dir:` layout, into `directory`; return its `local-dir:` spec.

    `tokenizer` (a transformers tokenizer, or None for open_clip's default) is saved beside
    it, where open_clip's `get_tokenizer` reads a `local-dir:` model's. A Hugging Face text
    tower (`hf_config`) is built from that config, saved there too and named by the folder's
    path, so nothing is fetched: such a folder stays where it was written."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads(json.dumps(model_cfg))
    text_cfg = model_cfg["text_cfg"]
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
        text_cfg["hf_tokenizer_name"] = str(directory)
    if hf_config is not None:
        hf_config.save_pretrained(str(directory))
        text_cfg["hf_model_name"] = str(directory)
    built = dict(model_cfg, text_cfg=dict(text_cfg, hf_model_pretrained=False))
    custom = built.pop("custom_text", False) or "hf_model_name" in text_cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**built)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(directory / "open_clip_model.safetensors"))
    return "local-dir:" + str(directory)


def save_random_open_clip(name: str, pretrained: str, directory: Path, *, seed: int = 0) -> str:
    """open_clip's built-in model `name` at its real size with seeded random weights, its text
    tower's stand-in tokenizer (same kind and vocabulary size) and `pretrained`'s
    preprocessing, saved by `write_open_clip_dir`; return its `local-dir:` spec. A folder
    that holds a model already is kept as it is."""
    import open_clip

    directory = Path(directory)
    if (directory / "open_clip_model.safetensors").is_file():
        return "local-dir:" + str(directory.resolve())
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"open_clip has no model {name!r}")
    tag = open_clip.get_pretrained_cfg(name, pretrained)
    preprocess_cfg = {
        "size": int(model_cfg["vision_cfg"]["image_size"]),
        "mean": list(tag.get("mean") or OPENAI_MEAN),
        "std": list(tag.get("std") or OPENAI_STD),
        "interpolation": tag.get("interpolation", "bicubic"),
        "resize_mode": tag.get("resize_mode", "shortest"),
    }
    text_cfg = model_cfg["text_cfg"]
    hf_name = text_cfg.get("hf_model_name")
    if hf_name is not None:
        make_config, make_tokenizer = HF_TEXT_TOWERS[hf_name]
        tokenizer, hf_config = make_tokenizer(), make_config()
    elif text_cfg.get("hf_tokenizer_name"):  # SigLIP 2: its own TextTransformer, Gemma's vocab
        tokenizer, hf_config = standin_gemma_tokenizer(text_cfg["vocab_size"]), None
    else:
        tokenizer, hf_config = None, None
    return write_open_clip_dir(directory, model_cfg, preprocess_cfg, tokenizer, hf_config, seed)
