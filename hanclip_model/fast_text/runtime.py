"""The query-side text encoder on ONNX Runtime: a query becomes a vector without torch.

Importing torch, transformers and sentence-transformers would be most of a search from a cold
start (benchmarks/speed.py measures it). So, once per text model, `export.export_text_encoder`
splits the sentence-transformers model into plain files that need only numpy, onnxruntime
and tokenizers at query time, and this module reads them:

* `tokenizer.json`: the fast tokenizer exactly as sentence-transformers configured it
  (lowercasing and special tokens included); truncation and padding come from `fast_text.json`.
  For a large Unigram vocabulary, also a piece table (see `pieces`), read instead.
* `token_embeddings.npy`: the word-embedding table, memory-mapped at query time so only the
  rows of the query's tokens are read, kept in the smallest form that stays accurate
  (`table`: int8 with a scale per row, float16 or float32).
* `encoder.onnx` (+ `encoder.onnx.data`, its weights): the transformer body from
  `inputs_embeds` on (position and token-type embeddings, LayerNorm), then the model's own
  pooling, Dense layers and L2 normalisation, fused into ONNX Runtime's transformer kernels;
  its weights stored in float16 where the export verified that form (`half_weights`: cast
  back to float32 as the session opens; `graph_weights` in the config).
  Optionally `encoder-int8.onnx`, dynamically quantised, kept only if it stays accurate.

Format 3 exports (still read) also hold `encoder-optimized.onnx`, the graph after ONNX
Runtime's optimisations, and always a float32 table. One graph is stored now: ONNX Runtime
optimises it as the session opens, which adds little to the opening of this graph (already
fused at export, its weights memory-mapped from `encoder.onnx.data`;
`benchmarks/bundle_footprint.py` times both forms) and saves a second copy of every weight.

This module imports neither torch nor transformers (a test holds it to that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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

FAST_TEXT_FORMAT = 4
# Format 3: a float32 table and a second, pre-optimised graph; read as it is.
READABLE_FORMATS = (3, FAST_TEXT_FORMAT)
CONFIG_NAME = "fast_text.json"
TOKENIZER_NAME = "tokenizer.json"
ENCODER_NAME = "encoder.onnx"
# Format 3 only: ENCODER_NAME after ONNX Runtime's graph optimisations; opened without
# optimising again when an export holds it.
OPTIMIZED_ENCODER_NAME = "encoder-optimized.onnx"
QUANTIZED_ENCODER_NAME = "encoder-int8.onnx"
MIN_QUANTIZED_COSINE = 0.99  # int8 export vs the fp32 one


@dataclass(frozen=True)
class FastTextConfig:
    """`fast_text.json`: what the query path needs besides the three data files."""

    format: int
    spec: str
    fingerprint: str
    dim: int
    hidden: int
    vocab_size: int
    max_seq_length: int
    pad_id: int
    padding_side: str
    pooling_mode: list[str]
    # Worst cosine of the int8 encoder against the fp32 one on VERIFY_TEXTS; None: not tried.
    int8_cosine: float | None = None
    # Queries are tokenized from `pieces.sqlite` (see `pieces`) instead of loading
    # the whole vocabulary.
    piece_table: bool = False
    # The form `token_embeddings.npy` is kept in (`table.TABLE_FORMS`), and the worst cosine
    # against sentence-transformers on VERIFY_TEXTS of each form the export tried: the
    # smallest form at `export.MIN_COSINE` or above was kept, float32 when none was.
    token_table: str = FULL_FORM
    token_table_cosines: dict[str, float] = field(default_factory=dict)
    # How `encoder.onnx` stores its large weights (`half_weights.GRAPH_WEIGHT_FORMS`; it
    # computes in float32 either way), and the worst cosine to sentence-transformers of the
    # export, with the table kept, in each form tried (empty: not tried, as in exports made
    # before): float16 only at `export.MIN_COSINE` or above.
    graph_weights: str = FLOAT32
    graph_weights_cosines: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> FastTextConfig:
        path = directory / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            config = cls(**data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise BundleError(f"cannot read fast text encoder {path}: {exc}") from None
        if config.format not in READABLE_FORMATS:
            raise BundleError(f"{path}: unsupported format {config.format!r}")
        if config.graph_weights not in GRAPH_WEIGHT_FORMS:
            raise BundleError(f"{path}: unknown graph weights {config.graph_weights!r}")
        return config

    @property
    def quantized(self) -> bool:
        """Whether `encoder-int8.onnx` was kept: it stayed within MIN_QUANTIZED_COSINE."""
        return self.int8_cosine is not None and self.int8_cosine >= MIN_QUANTIZED_COSINE

    def write(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"
        atomic_write_text(directory / CONFIG_NAME, text)


class FastTextEncoder:
    """Sentence embeddings from an export: numpy, onnxruntime and tokenizers only."""

    def __init__(self, config: FastTextConfig, tokenizer: Any, table: TokenTable, session: Any):
        self.config = config
        self._tokenizer = tokenizer
        self._table = table
        self._session = session

    @classmethod
    def load(
        cls, directory: str | Path, *, quantized: bool = False, prepack: bool = True
    ) -> FastTextEncoder:
        """Open an export made by `export_text_encoder` (the int8 encoder when `quantized`).

        `prepack`: let ONNX Runtime re-lay the weights for its matrix kernels when the
        session opens: opening takes longer and each text then runs faster (benchmarks/speed.py
        prints both). Worth it unless the process embeds only a text or two."""
        directory = Path(directory)
        config = FastTextConfig.read(directory)
        if quantized and not config.quantized:
            raise BundleError(f"{directory} has no int8 encoder that held its accuracy")
        if quantized:
            encoder = directory / QUANTIZED_ENCODER_NAME
        elif (directory / OPTIMIZED_ENCODER_NAME).is_file():
            encoder = directory / OPTIMIZED_ENCODER_NAME
        else:
            encoder = directory / ENCODER_NAME
        try:
            return cls(config, *open_parts(directory, config, encoder, prepack=prepack))
        except (OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"cannot load fast text encoder {directory}: {exc}") from None

    @property
    def dim(self) -> int:
        return self.config.dim

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised sentence embeddings [N, dim], float32; texts are NFC-normalised."""
        chunks = [
            self._embed_batch(nfc_texts(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        input_ids, attention_mask = tokenize(self._tokenizer, texts)
        feeds = {"inputs_embeds": self._table.rows(input_ids), "attention_mask": attention_mask}
        (vectors,) = self._session.run(None, feeds)
        return np.asarray(vectors, dtype=np.float32)


def open_parts(
    directory: Path, config: FastTextConfig, encoder: Path, *, prepack: bool = True
) -> tuple[Any, TokenTable, Any]:
    """(tokenizer, memory-mapped embedding table, ONNX Runtime session) of an export."""
    if config.piece_table:
        tokenizer = piece_table_tokenizer(directory, config)
    else:
        tokenizer = full_tokenizer(directory / TOKENIZER_NAME, config)
    table = TokenTable.open(directory, config.token_table)
    preoptimized = encoder.name == OPTIMIZED_ENCODER_NAME
    session = inference_session(encoder, preoptimized=preoptimized, prepack=prepack)
    return tokenizer, table, session


def piece_table_tokenizer(directory: Path, config: FastTextConfig) -> PieceTableTokenizer:
    """The export's piece table, with the truncation and padding of `full_tokenizer`."""
    return PieceTableTokenizer(
        directory,
        max_length=config.max_seq_length,
        pad_id=config.pad_id,
        padding_side=config.padding_side,
    )


def full_tokenizer(path: Path, config: FastTextConfig) -> Any:
    """The saved tokenizer with the truncation and padding sentence-transformers applies."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=config.max_seq_length, strategy="longest_first")
    tokenizer.enable_padding(direction=config.padding_side, pad_id=config.pad_id)
    return tokenizer


def tokenize(tokenizer: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 [N, T], padded to the longest text."""
    encodings = tokenizer.encode_batch(texts)
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return input_ids, attention_mask
