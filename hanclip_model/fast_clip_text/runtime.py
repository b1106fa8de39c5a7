"""An open_clip text tower on ONNX Runtime: a query becomes a vector without torch.

`export.export_clip_text_encoder` writes, once per model, the files this module reads with
numpy, onnxruntime and tokenizers only (a test holds it to importing no torch, transformers
or open_clip):

* `clip_text.json` (`FastClipTextConfig`): the context length, padding, the ids the tower
  masks, open_clip's cleaning rule, the pooling, the output size, what verification measured;
* `tokenizer.json`: the Hugging Face tokenizer inside open_clip's `HFTokenizer`, exactly as
  configured (an NLLB tokenizer's language code included); for a large Unigram vocabulary
  (XLM-R's) also the piece table of `fast_text.pieces`, read instead;
* `clean_chars.json`: the character fixes of `ftfy.fix_text` that open_clip runs before
  tokenizing (ligatures, full-width forms, curly quotes, line breaks, control characters),
  as a table made from ftfy at export, so queries are cleaned without ftfy (`clean_texts`);
* `token_embeddings.npy` (+ `token_scales.npy`): the token-embedding table as the tower's
  own embedding module gives it (NLLB's scaling included), in the smallest form of
  `fast_text.table` that passed verification, memory-mapped: a query reads only its rows;
* `encoder.onnx`: the rest of the tower, from token embeddings (and the attention mask,
  where the tower masks padding) to the L2-normalised text embedding; one graph, optimised
  by ONNX Runtime when its session opens, its weights inside it, stored in float16 where
  the export verified that form (`half_weights`; `graph_weights` in the config).

What a query needs is opened on its first `embed`: the tokenizer, the table and the session.
"""

from __future__ import annotations

import html
import json
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_model.errors import BundleError
from hanclip_model.fast_text.pieces import PieceTableTokenizer
from hanclip_model.fast_text.table import FULL_FORM, TokenTable
from hanclip_model.files import atomic_write_text
from hanclip_model.half_weights import FLOAT32, GRAPH_WEIGHT_FORMS
from hanclip_model.onnx_runtime import inference_session
from hanclip_model.texts import nfc_texts

FAST_CLIP_TEXT_FORMAT = 1
CONFIG_NAME = "clip_text.json"
TOKENIZER_NAME = "tokenizer.json"
CLEAN_CHARS_NAME = "clean_chars.json"
ENCODER_NAME = "encoder.onnx"
EMBEDS_INPUT = "inputs_embeds"
MASK_INPUT = "attention_mask"
OUTPUT_NAME = "text_embedding"
# open_clip's `HFTokenizer(clean=...)` rules (open_clip.tokenizer.get_clean_fn).
CLEAN_RULES = ("whitespace", "lower", "canonicalize")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# ftfy's `unescape_html`: only entities that end in a semicolon.
_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")


@dataclass(frozen=True)
class FastClipTextConfig:
    """`clip_text.json`: what the runtime needs besides the data files."""

    format: int
    spec: str  # the open_clip model, as the caller named it
    fingerprint: str  # identifies its weights
    tower: str  # "hf:<model_type>" (a Hugging Face encoder in HFTextEncoder) or "open_clip"
    pooling: str  # the tower's own: "mean_pooler", "cls_pooler", "last", ...
    dim: int  # the text embedding's size
    width: int  # a token embedding's size
    vocab_size: int
    context_length: int  # open_clip's: tokens beyond it are cut
    pad_id: int  # the tokenizer's padding id
    padding_side: str  # "right" or "left", the tokenizer's
    # The tower sees every position up to the context length (open_clip's TextTransformer
    # has no padding mask and may pool the last position): queries are padded to it.
    pad_to_context: bool
    mask_pad_id: int | None  # the ids the tower masks out; None: the graph takes no mask
    clean: str  # one of CLEAN_RULES
    # The language code an NLLB tokenizer puts first (open_clip's `set_language` before the
    # export chooses it); None for a tokenizer without one.
    language: str | None
    opset: int
    piece_table: bool = False  # tokenized from `pieces.sqlite` (see fast_text.pieces)
    token_table: str = FULL_FORM  # the form of the token table (fast_text.table.TABLE_FORMS)
    # The worst cosine to open_clip on export.VERIFY_TEXTS of each table form tried, and of
    # the export as kept; None: not verified.
    token_table_cosines: dict[str, float] | None = None
    min_cosine: float | None = None
    # How `encoder.onnx` stores its large weights (`half_weights.GRAPH_WEIGHT_FORMS`; it
    # computes in float32 either way), and the worst cosine to open_clip on VERIFY_TEXTS of
    # the export, with the table kept, in each form tried (empty: not tried, as in exports
    # made before): float16 only at `export.MIN_COSINE` or above.
    graph_weights: str = FLOAT32
    graph_weights_cosines: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> FastClipTextConfig:
        path = Path(directory) / CONFIG_NAME
        try:
            config = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise BundleError(f"cannot read the clip text encoder {path}: {exc}") from None
        if config.format != FAST_CLIP_TEXT_FORMAT:
            raise BundleError(f"{path}: unsupported format {config.format!r}")
        if config.clean not in CLEAN_RULES:
            raise BundleError(f"{path}: unknown text cleaning {config.clean!r}")
        if config.graph_weights not in GRAPH_WEIGHT_FORMS:
            raise BundleError(f"{path}: unknown graph weights {config.graph_weights!r}")
        return config

    def write(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"
        atomic_write_text(Path(directory) / CONFIG_NAME, text)


class FastClipTextEncoder:
    """Text embeddings from an export: numpy, onnxruntime and tokenizers only. Nothing but
    `clip_text.json` is read until the first `embed`."""

    def __init__(self, directory: Path, config: FastClipTextConfig, *, prepack: bool = True):
        self.directory = directory
        self.config = config
        self._prepack = prepack

    @classmethod
    def load(cls, directory: str | Path, *, prepack: bool = True) -> FastClipTextEncoder:
        """An export made by `export_clip_text_encoder`. `prepack`: as in
        `FastTextEncoder.load` (slower to open, faster per text)."""
        directory = Path(directory)
        return cls(directory, FastClipTextConfig.read(directory), prepack=prepack)

    @property
    def dim(self) -> int:
        return self.config.dim

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised text embeddings [N, dim], float32."""
        chunks = [
            self._embed_batch(list(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def token_ids(self, texts: Sequence[str], *, to_context: bool = False) -> np.ndarray:
        """The token ids [N, T] of `texts` as open_clip's tokenizer makes them: cleaned, cut at
        the context length, padded to the longest text (to the context length when the
        tower needs it, or with `to_context`, which gives open_clip's own array)."""
        cleaned = clean_texts(texts, self.config.clean, self._clean_chars)
        rows = [encoding.ids for encoding in self._tokenizer.encode_batch(cleaned)]
        length = max((len(row) for row in rows), default=0)
        if to_context or self.config.pad_to_context:
            length = self.config.context_length
        return pad_rows(rows, length, self.config.pad_id, self.config.padding_side)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        ids = self.token_ids(texts)
        feeds = {EMBEDS_INPUT: self._table.rows(ids)}
        if self.config.mask_pad_id is not None:
            feeds[MASK_INPUT] = (ids != self.config.mask_pad_id).astype(np.int64)
        (vectors,) = self._session.run(None, feeds)
        return np.asarray(vectors, dtype=np.float32)

    @cached_property
    def _clean_chars(self) -> dict[int, str]:
        path = self.directory / CLEAN_CHARS_NAME
        try:
            fixes = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from None
        return {ord(char): fixed for char, fixed in fixes.items()}

    @cached_property
    def _tokenizer(self) -> Any:
        config = self.config
        try:
            if config.piece_table:
                return PieceTableTokenizer(
                    self.directory,
                    max_length=config.context_length,
                    pad_id=config.pad_id,
                    padding_side=config.padding_side,
                )
            return full_tokenizer(self.directory / TOKENIZER_NAME, config)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot load the tokenizer of {self.directory}: {exc}") from None

    @cached_property
    def _table(self) -> TokenTable:
        try:
            return TokenTable.open(self.directory, self.config.token_table)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot load the token table of {self.directory}: {exc}") from None

    @cached_property
    def _session(self) -> Any:
        try:
            return inference_session(self.directory / ENCODER_NAME, prepack=self._prepack)
        except (OSError, RuntimeError, ValueError) as exc:
            # onnxruntime's load errors are RuntimeError subclasses (Fail, InvalidGraph, ...).
            raise BundleError(f"cannot load {self.directory / ENCODER_NAME}: {exc}") from None


def full_tokenizer(path: Path, config: FastClipTextConfig) -> Any:
    """The saved tokenizer, cutting at the context length as open_clip's `HFTokenizer` does
    (`truncation=True`: special tokens kept); padding is `pad_rows`'."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception
        raise ValueError(f"unreadable tokenizer {path}: {exc}") from None
    tokenizer.enable_truncation(max_length=config.context_length, strategy="longest_first")
    tokenizer.no_padding()
    return tokenizer


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int, side: str) -> np.ndarray:
    """Token id rows as one int64 array [N, length], each padded with `pad_id` on `side`."""
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    for index, row in enumerate(rows):
        if side == "left":
            ids[index, length - len(row) :] = row
        else:
            ids[index, : len(row)] = row
    return ids


def clean_texts(texts: Sequence[str], rule: str, fixes: dict[int, str]) -> list[str]:
    """open_clip's text cleaning before its Hugging Face tokenizer (`get_clean_fn(rule)`),
    without ftfy: `fixes` is the character table of `clean_chars.json`.

    open_clip's `basic_clean` is `ftfy.fix_text`, two `html.unescape`s and a strip. Of
    fix_text this keeps what works character by character (the table, HTML entities that end
    in a semicolon, NFC, repeated until nothing changes, per line as ftfy goes); it does not
    repair mojibake ("cafÃ©") or terminal escapes, which a typed query does not carry."""
    return [_clean(text, rule, fixes) for text in nfc_texts(texts)]


def _clean(text: str, rule: str, fixes: dict[int, str]) -> str:
    text = html.unescape(html.unescape(_fix_text(text, fixes))).strip()
    if rule == "canonicalize":
        # big_vision's canonicalize_text, as open_clip has it: no punctuation, lower case.
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    elif rule == "lower":
        text = text.lower()
    return " ".join(text.split())


def _fix_text(text: str, fixes: dict[int, str]) -> str:
    lines = []
    unescape = True
    for line in text.split("\n"):
        # ftfy stops decoding entities for good at the first line that looks like HTML.
        unescape = unescape and "<" not in line
        while True:
            before = line
            if unescape:
                line = _HTML_ENTITY.sub(lambda m: html.unescape(m.group(0)), line)
            line = unicodedata.normalize("NFC", line.translate(fixes))
            if line == before:
                break
        lines.append(line)
    return "\n".join(lines)
