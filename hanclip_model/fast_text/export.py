"""Exporting a sentence-transformers model for the query path (`runtime`); needs torch.

Built in a temporary folder, verified against sentence-transformers on `VERIFY_TEXTS` (same
tokens, cosine >= MIN_COSINE, one text at a time and in a padded batch), then renamed into
place: an export that exists is an export that was proven. One that fails (a full disk, say)
leaves nothing behind. The token table is then kept in the smallest form that passes the
same check (`table`), and with that table the graph's weights are stored in float16
(`half_weights`) when the export still passes it, else in float32 (the int8 graph, when
asked for, is quantised from the float32 one first); the cosine each form reached is
recorded in `fast_text.json`.
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_model.encoders import (
    load_sentence_transformer,
    sentence_embedding_dim,
)
from hanclip_model.errors import BundleError
from hanclip_model.fast_text.pieces import (
    piece_table_agrees,
    remove_piece_table,
    write_piece_table,
)
from hanclip_model.fast_text.runtime import (
    ENCODER_NAME,
    FAST_TEXT_FORMAT,
    QUANTIZED_ENCODER_NAME,
    TOKENIZER_NAME,
    FastTextConfig,
    FastTextEncoder,
    full_tokenizer,
    open_parts,
    piece_table_tokenizer,
    tokenize,
)
from hanclip_model.fast_text.table import (
    EMBEDDINGS_NAME,
    FULL_FORM,
    smallest_form,
    write_token_table,
)
from hanclip_model.files import atomic_dir
from hanclip_model.half_weights import FLOAT16, FLOAT32, float16_trial
from hanclip_model.onnx_runtime import (
    NOT_DOWNLOADED,
    root_logger_muted,
    row_cosines,
    worst_cosine,
)
from hanclip_model.sources import source_fingerprint
from hanclip_model.texts import nfc_texts

ONNX_OPSET = 17
MIN_COSINE = 0.999  # fp32 export vs sentence-transformers, every verification sentence
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


def export_text_encoder(
    spec: str, out_dir: str | Path, *, device: str = "cpu", quantize: bool = False
) -> Path:
    """Export the sentence-transformers model `spec` into `out_dir` (needs torch).

    Built in a temporary folder next to `out_dir`, verified against sentence-transformers on
    `VERIFY_TEXTS`, then renamed into place. With `quantize`, an int8 `encoder-int8.onnx` is
    kept too when it stays within `MIN_QUANTIZED_COSINE` of the fp32 encoder (see
    `FastTextConfig.quantized`); the fp32 encoder is always there. A full, read-only or
    vanished cache disk raises `StorageError`.
    """
    out_dir = Path(out_dir)
    model = load_sentence_transformer(spec, device)
    parts = _pipeline_parts(model, spec)
    # ONNX Runtime and numpy lose the errno of a full disk: atomic_dir asks the disk.
    saving = f"the fast text encoder of {spec} was not cached"
    with atomic_dir(out_dir, saving=saving, what="cache folder") as staging:
        reference = _reference(model)
        model.to("cpu")  # trace on CPU: the graph must not depend on where the model ran
        config = _write_export(staging, model, parts, spec)
        worst = _verify(staging, config, reference)
        config = _shrink_token_table(staging, config, reference, worst)
        if quantize:
            config = _quantize(staging, config)
        _smallest_graph(staging, config, reference)
    return out_dir


@dataclass(frozen=True)
class _PipelineParts:
    """The supported sentence-transformers pipeline, split where the export splits it."""

    transformer: Any  # the Transformer module (tokenizer + HF model)
    heads: list[Any]  # Pooling, then Dense layers; Normalize is always applied last anyway
    pooling_mode: list[str]
    dim: int


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
    return _PipelineParts(transformer, heads, list(modes), sentence_embedding_dim(model))


def _module_kind(module: Any) -> str:
    cls = type(module)
    # A custom module may reuse a name: only sentence-transformers' own classes are known.
    if cls.__module__.startswith("sentence_transformers."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


def _forward_parameters(module: Any) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


@dataclass(frozen=True)
class _Reference:
    """sentence-transformers' own tokens and embeddings of VERIFY_TEXTS, one text at a time."""

    token_ids: list[list[int]]
    vectors: np.ndarray  # [len(VERIFY_TEXTS), dim]


def _reference(model: Any) -> _Reference:
    texts = nfc_texts(VERIFY_TEXTS)
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
    write_token_table(directory, table.detach().float().cpu().numpy(), FULL_FORM)
    _export_graph(directory / ENCODER_NAME, parts)
    config = FastTextConfig(
        format=FAST_TEXT_FORMAT,
        spec=spec,
        fingerprint=source_fingerprint(spec) or NOT_DOWNLOADED,
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

    A few large ops instead of hundreds of small ones: the session opens sooner and runs a
    short query faster (benchmarks/speed.py). External weights are mapped, not parsed.
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


def _verify(directory: Path, config: FastTextConfig, reference: _Reference) -> float:
    """The export must match sentence-transformers: same tokens, cosine >= MIN_COSINE, both
    one text at a time and in a padded batch. Returns the worst cosine."""
    worst = _worst_cosine(directory, config, reference)
    if worst < MIN_COSINE:
        raise BundleError(
            f"export of {config.spec!r} disagrees with sentence-transformers "
            f"(cosine {worst:.4f} < {MIN_COSINE})"
        )
    return worst


def _worst_cosine(directory: Path, config: FastTextConfig, reference: _Reference) -> float:
    """The export's worst cosine to sentence-transformers on VERIFY_TEXTS, one text at a time
    and in a padded batch; `BundleError` when it does not even tokenize the same."""
    encoder = FastTextEncoder.load(directory)
    normalised = nfc_texts(VERIFY_TEXTS)
    token_ids = [tokenize(encoder._tokenizer, [text])[0][0].tolist() for text in normalised]
    if token_ids != reference.token_ids:
        raise BundleError(f"export of {config.spec!r} tokenizes differently from the model")
    return worst_cosine(encoder.embed, VERIFY_TEXTS, reference.vectors)


def _shrink_token_table(
    directory: Path, config: FastTextConfig, reference: _Reference, full_cosine: float
) -> FastTextConfig:
    """Keep the token table (written float32 by `_write_export`, whose export reached
    `full_cosine`) in the smallest of `SMALLER_FORMS` with which the export still reaches
    MIN_COSINE to sentence-transformers on VERIFY_TEXTS; float32 when none does. Each form
    tried is recorded with its worst cosine, so a float32 table says why it was kept."""
    full = np.load(directory / EMBEDDINGS_NAME)
    kept, tried = smallest_form(
        directory,
        full,
        config,
        lambda trial: _worst_cosine(directory, trial, reference),
        MIN_COSINE,
    )
    return _recorded(directory, kept, {FULL_FORM: full_cosine, **tried})


def _smallest_graph(
    directory: Path, config: FastTextConfig, reference: _Reference
) -> FastTextConfig:
    """The verified export in `directory` (`config`: its table kept, its graph float32) with
    the graph's weights stored in float16 when the whole export still reaches MIN_COSINE to
    sentence-transformers on VERIFY_TEXTS; else the float32 graph is put back. Both cosines
    are recorded."""
    with float16_trial(directory / ENCODER_NAME) as trial:
        cosine = _worst_cosine(directory, config, reference)
        if cosine >= MIN_COSINE:
            trial.keep()
    cosines = {FLOAT32: config.token_table_cosines[config.token_table], FLOAT16: cosine}
    result = replace(
        config, graph_weights=FLOAT16 if trial.kept else FLOAT32, graph_weights_cosines=cosines
    )
    result.write(directory)
    return result


def _recorded(directory: Path, config: FastTextConfig, cosines: dict[str, float]) -> FastTextConfig:
    result = replace(config, token_table_cosines=cosines)
    result.write(directory)
    return result


def _quantize(directory: Path, config: FastTextConfig) -> FastTextConfig:
    """Try a dynamically quantised int8 encoder; keep it only if it stays close to fp32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = directory / QUANTIZED_ENCODER_NAME
    with root_logger_muted():
        quantize_dynamic(
            str(directory / ENCODER_NAME),
            str(int8_path),
            op_types_to_quantize=["MatMul", "Attention"],
            weight_type=QuantType.QInt8,
            # Shape inference cannot type the outputs of ORT's fused ops; they are all float.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    fp32 = FastTextEncoder.load(directory).embed(VERIFY_TEXTS)
    int8 = FastTextEncoder(config, *open_parts(directory, config, int8_path)).embed(VERIFY_TEXTS)
    result = replace(config, int8_cosine=float(row_cosines(fp32, int8).min()))
    if not result.quantized:
        int8_path.unlink()
    result.write(directory)
    return result
