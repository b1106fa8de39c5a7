"""The query-side text encoder on ONNX Runtime: a query becomes a vector without torch.

Importing torch, transformers and sentence-transformers costs seconds, which a search from a
cold start cannot afford. So, once per text model, `export_text_encoder` splits the
sentence-transformers model into three plain files that need only numpy, onnxruntime and
tokenizers at query time:

* `tokenizer.json`: the fast tokenizer exactly as sentence-transformers configured it
  (lowercasing and special tokens included); truncation and padding come from `fast_text.json`.
* `token_embeddings.npy`: the word-embedding table, memory-mapped at query time so only the
  rows of the query's tokens are read (the multilingual MiniLM table alone is ~384 MB).
* `encoder.onnx` (+ `encoder.onnx.data`, its weights): the transformer body from
  `inputs_embeds` on (position and token-type embeddings, LayerNorm), then the model's own
  pooling, Dense layers and L2 normalisation, fused into ONNX Runtime's transformer kernels.
  Optionally `encoder-int8.onnx`, dynamically quantised, kept only if it stays accurate.

An export is verified against sentence-transformers before it is kept, and its folder name
carries a fingerprint of the source model, so a changed model is exported again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_model.errors import BundleError
from hanclip_model.query_tokenizer import (
    PieceTableTokenizer,
    piece_table_agrees,
    remove_piece_table,
    write_piece_table,
)

FAST_TEXT_FORMAT = 3
CONFIG_NAME = "fast_text.json"
TOKENIZER_NAME = "tokenizer.json"
EMBEDDINGS_NAME = "token_embeddings.npy"
ENCODER_NAME = "encoder.onnx"
# ENCODER_NAME after ONNX Runtime's graph optimisations, saved once at export so a search
# opens it without optimising again.
OPTIMIZED_ENCODER_NAME = "encoder-optimized.onnx"
QUANTIZED_ENCODER_NAME = "encoder-int8.onnx"
ONNX_OPSET = 17
MIN_COSINE = 0.999  # fp32 export vs sentence-transformers, every verification sentence
MIN_QUANTIZED_COSINE = 0.99  # int8 export vs the fp32 one
SUPPORTED_POOLING = frozenset({"mean", "mean_sqrt_len_tokens", "cls", "max"})

# Korean and English, NFD (the export must NFC-normalise it as the torch path does), stray
# whitespace, and one text far beyond any model's max_seq_length so truncation is checked too.
VERIFY_TEXTS = (
    "바다 위 노을",
    "누워있는 고양이",
    "공원에서 뛰는 강아지와 아이들",
    unicodedata.normalize("NFD", "눈 덮인 산 사진"),
    "a cat sleeping on the sofa by the window",
    "  Sunset over the SEA, 2023!  ",
    "서울 야경 city lights at night",
    " ".join(["해변에서 본 바다 노을 a beach at sunset"] * 120),
)


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
    # Queries are tokenized from `pieces.sqlite` (see query_tokenizer) instead of loading
    # the whole vocabulary.
    piece_table: bool = False

    @classmethod
    def read(cls, directory: Path) -> FastTextConfig:
        path = directory / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            config = cls(**data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise BundleError(f"cannot read fast text encoder {path}: {exc}") from None
        if config.format != FAST_TEXT_FORMAT:
            raise BundleError(f"{path}: unsupported format {config.format!r}")
        return config

    @property
    def quantized(self) -> bool:
        """Whether `encoder-int8.onnx` was kept: it stayed within MIN_QUANTIZED_COSINE."""
        return self.int8_cosine is not None and self.int8_cosine >= MIN_QUANTIZED_COSINE

    def write(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"
        (directory / CONFIG_NAME).write_text(text, encoding="utf-8")


class FastTextEncoder:
    """Sentence embeddings from an export: numpy, onnxruntime and tokenizers only."""

    def __init__(self, config: FastTextConfig, tokenizer: Any, table: np.ndarray, session: Any):
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
        session opens; about 0.13 s on a small CPU, and each text then runs about twice as
        fast. Worth it unless the process embeds only a text or two."""
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
            return cls(config, *_open(directory, config, encoder, prepack=prepack))
        except (OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"cannot load fast text encoder {directory}: {exc}") from None

    @property
    def dim(self) -> int:
        return self.config.dim

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised sentence embeddings [N, dim], float32; texts are NFC-normalised."""
        chunks = [
            self._embed_batch([unicodedata.normalize("NFC", t) for t in texts[i : i + batch_size]])
            for i in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        input_ids, attention_mask = tokenize(self._tokenizer, texts)
        # Fancy indexing a memmap reads just these rows, not the whole table.
        inputs_embeds = np.asarray(self._table[input_ids], dtype=np.float32)
        feeds = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        (vectors,) = self._session.run(None, feeds)
        return np.asarray(vectors, dtype=np.float32)


def _open(
    directory: Path, config: FastTextConfig, encoder: Path, *, prepack: bool = True
) -> tuple[Any, np.ndarray, Any]:
    """(tokenizer, memory-mapped embedding table, ONNX Runtime session) of an export."""
    if config.piece_table:
        tokenizer = piece_table_tokenizer(directory, config)
    else:
        tokenizer = full_tokenizer(directory / TOKENIZER_NAME, config)
    table = np.load(directory / EMBEDDINGS_NAME, mmap_mode="r")
    preoptimized = encoder.name == OPTIMIZED_ENCODER_NAME
    session = _inference_session(encoder, preoptimized=preoptimized, prepack=prepack)
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


def _inference_session(
    path: Path,
    *,
    preoptimized: bool = False,
    save_optimized: Path | None = None,
    prepack: bool = True,
) -> Any:
    """A session for one short query on a small CPU: every core on one operator at a time.

    `preoptimized`: the graph was saved already optimised (`save_optimized`), so opening it
    skips that work (about 0.05 s of a cold search)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    levels = ort.GraphOptimizationLevel
    if preoptimized:
        options.graph_optimization_level = levels.ORT_DISABLE_ALL
    elif save_optimized is not None:
        # Not ENABLE_ALL: its layout changes may be specific to this CPU, and the file is
        # a cache a user may copy; the transformer fusions are all in EXTENDED.
        options.graph_optimization_level = levels.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(save_optimized)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name",
            save_optimized.name + ".data",
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    else:
        options.graph_optimization_level = levels.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = _usable_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # keep optimiser notices out of the CLI's output
    # Waiting threads sleep instead of spinning: on a busy machine spinning threads steal the
    # cores the query needs (measured twice as slow on a loaded 2-core machine).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _usable_cores() -> int:
    # The affinity mask, where there is one, is what this process may actually run on.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def source_fingerprint(spec: str) -> str | None:
    """Identifies the exact weights behind `spec`; None for a hub model not downloaded yet.

    A local folder: every file's path, size and mtime (cheap, and any rewrite changes it).
    A hub id: the snapshot revision in the Hugging Face cache.
    """
    local = Path(os.path.expanduser(spec))
    if local.is_dir():
        entries = sorted(
            f"{p.relative_to(local).as_posix()}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}"
            for p in local.rglob("*")
            if p.is_file()
        )
        return "dir:" + hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()
    revision = _hub_revision(spec)
    return None if revision is None else "hub:" + revision


def _hub_revision(spec: str) -> str | None:
    from huggingface_hub.constants import HF_HUB_CACHE

    # sentence-transformers resolves a bare name to its own organisation on the hub.
    repo_ids = [spec] if "/" in spec else [spec, f"sentence-transformers/{spec}"]
    for repo_id in repo_ids:
        ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
        if ref.is_file():
            return ref.read_text(encoding="utf-8").strip()
    return None


def fast_text_dir(cache_root: str | Path, spec: str) -> Path:
    """The cache folder of `spec`'s export; a new fingerprint names a new folder."""
    key = f"{FAST_TEXT_FORMAT}\n{spec}\n{source_fingerprint(spec) or 'not-downloaded'}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return Path(cache_root) / "fast-text" / digest


def ensure_fast_text(
    spec: str, cache_root: str | Path, *, device: str = "cpu", quantize: bool = False
) -> Path:
    """`spec`'s export folder under `cache_root`, exported first when missing or stale."""
    target = fast_text_dir(cache_root, spec)
    if _is_current(target, spec, quantize):
        return target
    export_text_encoder(spec, target, device=device, quantize=quantize)
    # A hub model's revision is known only once the export has downloaded it.
    settled = fast_text_dir(cache_root, spec)
    if settled != target:
        _replace_dir(target, settled)
    _remove_other_exports(settled, spec)
    return settled


def _is_current(directory: Path, spec: str, quantize: bool) -> bool:
    if not (directory / CONFIG_NAME).is_file():
        return False
    try:
        config = FastTextConfig.read(directory)
    except BundleError:
        return False
    return (
        config.spec == spec
        and config.fingerprint == source_fingerprint(spec)
        and (config.int8_cosine is not None or not quantize)
    )


def _remove_other_exports(keep: Path, spec: str) -> None:
    """Drop stale exports of the same model: the MiniLM table alone is ~384 MB each."""
    for other in keep.parent.iterdir():
        # Dot-folders are other processes' exports still being built or swapped in.
        if other == keep or other.name.startswith(".") or not (other / CONFIG_NAME).is_file():
            continue
        try:
            stale = FastTextConfig.read(other).spec == spec
        except BundleError:
            continue
        if stale:
            shutil.rmtree(other, ignore_errors=True)


def _replace_dir(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing whatever is there, with no moment of a half tree."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def export_text_encoder(
    spec: str, out_dir: str | Path, *, device: str = "cpu", quantize: bool = False
) -> Path:
    """Export the sentence-transformers model `spec` into `out_dir` (needs torch).

    Built in a temporary folder next to `out_dir`, verified against sentence-transformers on
    `VERIFY_TEXTS`, then renamed into place. With `quantize`, an int8 `encoder-int8.onnx` is
    kept too when it stays within `MIN_QUANTIZED_COSINE` of the fp32 encoder (see
    `FastTextConfig.quantized`); the fp32 encoder is always there.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = _load_sentence_transformer(spec, device)
    parts = _pipeline_parts(model, spec)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        reference = _reference(model)
        model.to("cpu")  # trace on CPU: the graph must not depend on where the model ran
        config = _write_export(staging, model, parts, spec)
        _verify(staging, config, reference)
        if quantize:
            config = _quantize(staging, config)
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


@dataclass(frozen=True)
class _PipelineParts:
    """The supported sentence-transformers pipeline, split where the export splits it."""

    transformer: Any  # the Transformer module (tokenizer + HF model)
    heads: list[Any]  # Pooling, then Dense layers; Normalize is always applied last anyway
    pooling_mode: list[str]
    dim: int


def _load_sentence_transformer(spec: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    from hanclip_model.encoders import first_line, quiet_transformers

    quiet_transformers()
    try:
        model = SentenceTransformer(spec, device=device)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BundleError(f"cannot load text model {spec!r}: {first_line(exc)}") from None
    model.eval()
    return model


def _pipeline_parts(model: Any, spec: str) -> _PipelineParts:
    """Check that `model` is Transformer -> Pooling -> Dense* -> Normalize?; refuse otherwise."""
    import torch

    modules = list(model)
    kinds = [_module_kind(m) for m in modules]
    tail = kinds[2:-1] if kinds[-1:] == ["Normalize"] else kinds[2:]
    if kinds[:2] != ["Transformer", "Pooling"] or any(kind != "Dense" for kind in tail):
        raise BundleError(
            f"cannot export {spec!r}: modules {kinds} are not "
            "Transformer, Pooling, Dense..., Normalize"
        )
    if getattr(model, "default_prompt_name", None):
        raise BundleError(f"cannot export {spec!r}: it prepends a default prompt")
    transformer, pooling = modules[0], modules[1]
    modes = (
        [pooling.pooling_mode] if isinstance(pooling.pooling_mode, str) else pooling.pooling_mode
    )
    if not set(modes) <= SUPPORTED_POOLING:
        raise BundleError(f"cannot export {spec!r}: unsupported pooling {modes}")
    body = transformer.auto_model
    if type(body.get_input_embeddings()) is not torch.nn.Embedding:
        raise BundleError(f"cannot export {spec!r}: its word embeddings are not a plain table")
    if "inputs_embeds" not in _forward_parameters(body):
        raise BundleError(f"cannot export {spec!r}: {type(body).__name__} takes no inputs_embeds")
    text_config = getattr(transformer, "modality_config", {"text": {}}).get("text")
    if text_config is None or text_config.get("method_output_name", "last_hidden_state") != (
        "last_hidden_state"
    ):
        raise BundleError(f"cannot export {spec!r}: not a plain text encoder")
    heads = [m for m in modules[1:] if type(m).__name__ != "Normalize"]
    return _PipelineParts(transformer, heads, list(modes), _embedding_dim(model))


def _module_kind(module: Any) -> str:
    cls = type(module)
    # A custom module may reuse a name: only sentence-transformers' own classes are known.
    if cls.__module__.startswith("sentence_transformers."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


def _forward_parameters(module: Any) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


def _embedding_dim(model: Any) -> int:
    # sentence-transformers 6 renamed this; older releases only have the long name.
    get_dim = getattr(model, "get_embedding_dimension", None)
    return int((get_dim or model.get_sentence_embedding_dimension)())


@dataclass(frozen=True)
class _Reference:
    """sentence-transformers' own tokens and embeddings of VERIFY_TEXTS, one text at a time."""

    token_ids: list[list[int]]
    vectors: np.ndarray  # [len(VERIFY_TEXTS), dim]


def _reference(model: Any) -> _Reference:
    texts = [unicodedata.normalize("NFC", t) for t in VERIFY_TEXTS]
    # sentence-transformers 6 renamed `tokenize` to `preprocess`.
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    token_ids = [preprocess([text])["input_ids"][0].tolist() for text in texts]
    vectors = model.encode(
        texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return _Reference(token_ids, np.asarray(vectors, dtype=np.float32))


def _write_export(directory: Path, model: Any, parts: _PipelineParts, spec: str) -> FastTextConfig:
    tokenizer = parts.transformer.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise BundleError(f"cannot export {spec!r}: its tokenizer has no `tokenizers` backend")
    tokenizer_json = tokenizer.backend_tokenizer.to_str()
    (directory / TOKENIZER_NAME).write_text(tokenizer_json, encoding="utf-8")
    table = parts.transformer.auto_model.get_input_embeddings().weight
    np.save(directory / EMBEDDINGS_NAME, table.detach().float().cpu().numpy())
    _export_graph(directory / ENCODER_NAME, parts)
    _inference_session(directory / ENCODER_NAME, save_optimized=directory / OPTIMIZED_ENCODER_NAME)
    config = FastTextConfig(
        format=FAST_TEXT_FORMAT,
        spec=spec,
        fingerprint=source_fingerprint(spec) or "not-downloaded",
        dim=parts.dim,
        hidden=int(table.shape[1]),
        vocab_size=int(table.shape[0]),
        max_seq_length=int(model.max_seq_length),
        pad_id=int(tokenizer.pad_token_id),
        padding_side=str(tokenizer.padding_side),
        pooling_mode=parts.pooling_mode,
    )
    config = replace(config, piece_table=_write_piece_table(directory, tokenizer_json, config))
    config.write(directory)
    return config


def _write_piece_table(directory: Path, tokenizer_json: str, config: FastTextConfig) -> bool:
    """Whether queries can be tokenized from a piece table (a large Unigram vocabulary that
    the table reproduces exactly); the table is removed when it does not."""
    if not write_piece_table(tokenizer_json, directory):
        return False
    table = piece_table_tokenizer(directory, config)
    try:
        agrees = piece_table_agrees(full_tokenizer(directory / TOKENIZER_NAME, config), table)
    finally:
        table.close()
    if not agrees:
        remove_piece_table(directory)
    return agrees


def _sentence_graph(parts: _PipelineParts) -> Any:
    """inputs_embeds + attention_mask -> L2-normalised sentence embedding, as a torch module.

    The pipeline's own Pooling and Dense modules run unchanged, so the graph pools exactly
    as sentence-transformers does. No token_type_ids input: a single text is all segment 0,
    which is what the models assume when none are given. Position ids made from
    inputs_embeds (XLM-R) differ from the input_ids ones only at right-padded positions,
    which attention and pooling mask out.
    """
    import torch

    class SentenceGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = parts.transformer.auto_model
            self.heads = torch.nn.ModuleList(parts.heads)

        def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            hidden = self.body(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
            features = {
                "token_embeddings": hidden.last_hidden_state,
                "attention_mask": attention_mask,
            }
            for module in self.heads:
                features = module(features)
            return torch.nn.functional.normalize(features["sentence_embedding"], p=2, dim=-1)

    return SentenceGraph().eval()


def _export_graph(path: Path, parts: _PipelineParts) -> None:
    """Trace the graph to ONNX, fuse it for ONNX Runtime, weights in `encoder.onnx.data`."""
    import torch

    body = parts.transformer.auto_model
    # Plain attention ops: SDPA's mask shortcuts could be traced as constants, and ORT's
    # attention fusion recognises the eager pattern.
    if hasattr(body, "set_attn_implementation"):
        body.set_attn_implementation("eager")
    else:
        body.config._attn_implementation = "eager"
    graph = _sentence_graph(parts)
    # Two rows of different lengths, so padding is part of the traced example.
    inputs_embeds = torch.randn(2, 7, int(body.config.hidden_size))
    attention_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.int64)
    traced = path.with_name("traced.onnx")
    with warnings.catch_warnings(), torch.inference_mode():
        # Tracer notices about shape checks that are constant for every input; the
        # verification against sentence-transformers is what proves the graph right.
        warnings.simplefilter("ignore")
        # The TorchScript exporter: torch.export's would also need onnxscript installed.
        torch.onnx.export(
            graph,
            (inputs_embeds, attention_mask),
            str(traced),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["inputs_embeds", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "inputs_embeds": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "sentence_embedding": {0: "batch"},
            },
        )
    _fuse(traced, path, body.config)
    traced.unlink()


def _fuse(traced: Path, path: Path, config: Any) -> None:
    """Fuse attention, LayerNorm and GELU into ORT's transformer kernels, offline.

    A few large ops instead of hundreds of small ones: the session opens about three times
    faster and runs a short query faster. External weights are mapped, not parsed.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(
        str(traced),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,  # fusions only: ORT's own optimisation stays a load-time, per-CPU step
    )
    fused.save_model_to_file(str(path), use_external_data_format=True)


def _verify(directory: Path, config: FastTextConfig, reference: _Reference) -> None:
    """The export must match sentence-transformers: same tokens, cosine >= MIN_COSINE, both
    one text at a time and in a padded batch."""
    encoder = FastTextEncoder.load(directory)
    nfc_texts = [unicodedata.normalize("NFC", t) for t in VERIFY_TEXTS]
    token_ids = [tokenize(encoder._tokenizer, [text])[0][0].tolist() for text in nfc_texts]
    if token_ids != reference.token_ids:
        raise BundleError(f"export of {config.spec!r} tokenizes differently from the model")
    single = np.concatenate([encoder.embed([text]) for text in VERIFY_TEXTS])
    batched = encoder.embed(VERIFY_TEXTS)
    worst = float(
        min(
            _row_cosines(single, reference.vectors).min(),
            _row_cosines(batched, reference.vectors).min(),
        )
    )
    if worst < MIN_COSINE:
        raise BundleError(
            f"export of {config.spec!r} disagrees with sentence-transformers "
            f"(cosine {worst:.4f} < {MIN_COSINE})"
        )


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
    )


def _quantize(directory: Path, config: FastTextConfig) -> FastTextConfig:
    """Try a dynamically quantised int8 encoder; keep it only if it stays close to fp32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = directory / QUANTIZED_ENCODER_NAME
    with _root_logger_muted():
        quantize_dynamic(
            str(directory / ENCODER_NAME),
            str(int8_path),
            op_types_to_quantize=["MatMul", "Attention"],
            weight_type=QuantType.QInt8,
            # Shape inference cannot type the outputs of ORT's fused ops; they are all float.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    fp32 = FastTextEncoder.load(directory).embed(VERIFY_TEXTS)
    int8 = FastTextEncoder(config, *_open(directory, config, int8_path)).embed(VERIFY_TEXTS)
    result = replace(config, int8_cosine=float(_row_cosines(fp32, int8).min()))
    if not result.quantized:
        int8_path.unlink()
    result.write(directory)
    return result


@contextmanager
def _root_logger_muted() -> Iterator[None]:
    """The quantizer advises through `logging.warning`, which would also give the root logger
    a stderr handler for the rest of the process; a temporary NullHandler takes the advice."""
    root = logging.getLogger()
    absorb = logging.NullHandler()
    root.addHandler(absorb)
    try:
        yield
    finally:
        root.removeHandler(absorb)
