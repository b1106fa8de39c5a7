"""Exporting an open_clip text tower for the query path (`runtime`); needs torch and open_clip.

Built in a temporary folder, verified against open_clip on `VERIFY_TEXTS`, then renamed into
place: an export that exists is an export that was proven. Two checks:

* the runtime's token ids (cleaned without ftfy, tokenized with `tokenizers`) equal the ids
  of the model's open_clip tokenizer, padded to its context length, for every text;
* the runtime's embeddings (ONNX Runtime, one text at a time and as one padded batch) have
  cosine >= MIN_COSINE with `model.encode_text(..., normalize=True)` on the CPU in float32.

An export that fails either, or a tower or tokenizer it cannot reproduce, is refused:
`BundleError` with the reason, and nothing is left behind. The token table is then kept in
the smallest form of `fast_text.table` that passes the same check, and with that table the
graph's weights are stored in float16 (`half_weights`) when the export still passes it,
else in float32; the cosine each form reached is recorded in `clip_text.json`.

Supported towers: a Hugging Face encoder inside open_clip's `HFTextEncoder` (XLM-R with mean
pooling, the encoder of an NLLB M2M100 with its first token; any pooler and projection, as
the graph runs the tower's own modules), and open_clip's `TextTransformer` pooling its first
or last position without a padding mask (SigLIP 2), each behind an `HFTokenizer`.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_model.errors import BundleError
from hanclip_model.fast_clip_text.runtime import (
    CLEAN_CHARS_NAME,
    CLEAN_RULES,
    EMBEDS_INPUT,
    ENCODER_NAME,
    FAST_CLIP_TEXT_FORMAT,
    MASK_INPUT,
    OUTPUT_NAME,
    TOKENIZER_NAME,
    FastClipTextConfig,
    FastClipTextEncoder,
    full_tokenizer,
)
from hanclip_model.fast_text.export import VERIFY_TEXTS as SENTENCE_VERIFY_TEXTS
from hanclip_model.fast_text.pieces import (
    PieceTableTokenizer,
    piece_table_agrees,
    remove_piece_table,
    write_piece_table,
)
from hanclip_model.fast_text.table import (
    EMBEDDINGS_NAME,
    FULL_FORM,
    smallest_form,
    write_token_table,
)
from hanclip_model.files import atomic_dir
from hanclip_model.half_weights import FLOAT16, FLOAT32, float16_trial
from hanclip_model.onnx_runtime import worst_cosine

ONNX_OPSET = 17
MIN_COSINE = 0.999  # ONNX Runtime vs open_clip's encode_text, every verification text
_TABLE_ROWS = 8192  # token embeddings computed this many at a time

# The sentence-transformers export's texts (Korean, English and both; NFD Hangul, NFC-normalised
# on both paths; stray whitespace), then what open_clip's cleaning changes (ftfy's full-width
# forms, ligatures and curly quotes, HTML entities, punctuation, underscores, case, odd
# whitespace), and a text far beyond any context length, so truncation is checked too.
VERIFY_TEXTS = (
    *SENTENCE_VERIFY_TEXTS[:-1],  # its last is its own long text
    "“Ｆｕｌｌ” ﬁsh &amp; chips_쇼핑\t\n리스트 ‘여행’",
    " ".join(["해변에서 본 바다 노을 a beach at sunset"] * 40),
)


@dataclass(frozen=True)
class _Tower:
    """What the export reads from an open_clip text tower."""

    kind: str  # FastClipTextConfig.tower
    module: Any  # model.text
    embedding: Any  # token ids -> token embeddings, the tower's own module
    width: int
    vocab_size: int
    pooling: str
    mask_pad_id: int | None
    pad_to_context: bool


@dataclass(frozen=True)
class _Tokenizing:
    """What the export reads from open_clip's `HFTokenizer`."""

    tokenizer_json: str
    context_length: int
    pad_id: int
    padding_side: str
    clean: str
    language: str | None


def export_clip_text_encoder(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    spec: str,
    fingerprint: str = "unknown",
) -> FastClipTextConfig:
    """Export the text tower of the open_clip `model` (a CustomTextCLIP) with its open_clip
    `tokenizer` into `out_dir`, verified (see the module docstring); returns its config.

    `spec` and `fingerprint` name the model and its weights in `clip_text.json`. The model
    is traced on the CPU and put back on its device afterwards. A full, read-only or
    vanished disk raises `StorageError`; a refusal, `BundleError`."""
    tower = _tower(model, spec)
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    saving = f"the fast text encoder of {spec} was not written"
    try:
        with atomic_dir(out_dir, saving=saving, what="export folder") as staging:
            model.to("cpu")
            reference = _reference(model, tokenizer)
            # Read after open_clip has tokenized: transformers may set the tokenizer up again
            # on each call (an NLLB tokenizer puts its `src_lang` back).
            tokenizing = _tokenizing(tokenizer, tower, spec)
            config = FastClipTextConfig(
                format=FAST_CLIP_TEXT_FORMAT,
                spec=spec,
                fingerprint=fingerprint,
                tower=tower.kind,
                pooling=tower.pooling,
                dim=int(reference.vectors.shape[1]),
                width=tower.width,
                vocab_size=tower.vocab_size,
                context_length=tokenizing.context_length,
                pad_id=tokenizing.pad_id,
                padding_side=tokenizing.padding_side,
                pad_to_context=tower.pad_to_context,
                mask_pad_id=tower.mask_pad_id,
                clean=tokenizing.clean,
                language=tokenizing.language,
                opset=ONNX_OPSET,
            )
            config = _write_export(staging, config, tower, tokenizing)
            config.write(staging)
            config = _smallest_table(staging, config, reference, _verify(staging, reference))
            config = _smallest_graph(staging, config, reference)
    finally:
        model.to(device)
    return config


def _tower(model: Any, spec: str) -> _Tower:
    """The text tower of `model`, or `BundleError` saying why it cannot be exported."""
    import torch

    text = getattr(model, "text", None)
    name = type(text).__name__
    if text is None:
        raise BundleError(f"cannot export {spec!r}: its text tower is built into CLIP")
    if getattr(text, "output_tokens", False):
        raise BundleError(f"cannot export {spec!r}: its text tower returns tokens too")
    if any(p.dtype != torch.float32 for p in text.parameters()):
        raise BundleError(f"cannot export {spec!r}: its text tower is not in float32")
    if name == "HFTextEncoder":
        body = text.transformer
        if "inputs_embeds" not in inspect.signature(body.forward).parameters:
            raise BundleError(f"cannot export {spec!r}: {type(body).__name__} takes no embeddings")
        embedding = body.get_input_embeddings()
        pooler = type(text.pooler).__name__
        return _Tower(
            kind=f"hf:{text.config.model_type}",
            module=text,
            embedding=embedding,
            width=int(embedding.weight.shape[1]),
            vocab_size=int(embedding.weight.shape[0]),
            pooling="".join("_" + c.lower() if c.isupper() else c for c in pooler).lstrip("_"),
            mask_pad_id=int(text.config.pad_token_id),
            pad_to_context=False,
        )
    if name == "TextTransformer":
        if text.cls_emb is not None or text.use_pad_mask:
            raise BundleError(f"cannot export {spec!r}: its text tower appends a class token")
        if text.pool_type not in ("first", "last"):
            # "argmax"/"eos" pool where a token id is: the graph sees embeddings only.
            raise BundleError(f"cannot export {spec!r}: {text.pool_type!r} pooling")
        weight = text.token_embedding.weight
        return _Tower(
            kind="open_clip",
            module=text,
            embedding=text.token_embedding,
            width=int(weight.shape[1]),
            vocab_size=int(weight.shape[0]),
            pooling=str(text.pool_type),
            mask_pad_id=None,
            pad_to_context=True,
        )
    raise BundleError(f"cannot export {spec!r}: unknown text tower {name}")


def _tokenizing(tokenizer: Any, tower: _Tower, spec: str) -> _Tokenizing:
    """What the runtime must reproduce of open_clip's `tokenizer`, or `BundleError`."""
    from open_clip.tokenizer import get_clean_fn

    if type(tokenizer).__name__ != "HFTokenizer":
        raise BundleError(f"cannot export {spec!r}: {type(tokenizer).__name__} is not supported")
    if tokenizer.tokenizer_mode or tokenizer.strip_sep_token:
        raise BundleError(f"cannot export {spec!r}: its tokenizer rewrites the token ids")
    hf = tokenizer.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise BundleError(f"cannot export {spec!r}: its tokenizer has no `tokenizers` backend")
    rules = [rule for rule in CLEAN_RULES if tokenizer.clean_fn is get_clean_fn(rule)]
    if not rules:
        raise BundleError(f"cannot export {spec!r}: unknown text cleaning {tokenizer.clean_fn}")
    side = str(hf.padding_side)
    if side == "left" and not tower.pad_to_context:
        # The runtime's position ids count from the first row position.
        raise BundleError(f"cannot export {spec!r}: its tokenizer pads on the left")
    return _Tokenizing(
        tokenizer_json=backend.to_str(),
        context_length=int(tokenizer.context_length),
        pad_id=int(hf.pad_token_id),
        padding_side=side,
        clean=rules[0],
        language=getattr(hf, "src_lang", None),
    )


@dataclass(frozen=True)
class _Reference:
    """open_clip's own token ids and embeddings of VERIFY_TEXTS."""

    token_ids: np.ndarray  # [N, context_length]
    vectors: np.ndarray  # [N, dim], L2-normalised


def _reference(model: Any, tokenizer: Any) -> _Reference:
    import torch

    token_ids = tokenizer(list(VERIFY_TEXTS))
    with torch.no_grad():
        vectors = model.encode_text(token_ids, normalize=True)
    return _Reference(token_ids.numpy().astype(np.int64), vectors.float().numpy())


def _write_export(
    directory: Path, config: FastClipTextConfig, tower: _Tower, tokenizing: _Tokenizing
) -> FastClipTextConfig:
    (directory / TOKENIZER_NAME).write_text(tokenizing.tokenizer_json, encoding="utf-8")
    fixes = json.dumps(ftfy_character_fixes(), ensure_ascii=False, sort_keys=True)
    (directory / CLEAN_CHARS_NAME).write_text(fixes, encoding="utf-8")
    write_token_table(directory, _token_table(tower), FULL_FORM)
    _export_graph(directory / ENCODER_NAME, tower, config.context_length)
    return replace(config, piece_table=_write_piece_table(directory, tokenizing, config))


def ftfy_character_fixes() -> dict[str, str]:
    """What `ftfy.fix_text` does to each character on its own, for every character it changes:
    C1 controls, Latin ligatures, full- and half-width forms, curly quotes, line breaks,
    control characters. (Its mojibake repair and escape-sequence removal look at more
    than one character and are not in the table.)"""
    from ftfy import chardata, fixes

    steps = (
        fixes.fix_c1_controls,
        fixes.fix_latin_ligatures,
        fixes.fix_character_width,
        fixes.uncurl_quotes,
        fixes.fix_line_breaks,
        fixes.remove_control_chars,
    )
    codes = set(range(0x10000)) - set(range(0xD800, 0xE000))  # no lone surrogates
    codes |= set(chardata.CONTROL_CHARS) | set(chardata.LIGATURES) | set(chardata.WIDTH_MAP)
    table = {}
    for code in sorted(codes):
        char = fixed = chr(code)
        for step in steps:
            fixed = step(fixed)
        if fixed != char:
            table[char] = fixed
    return table


def _token_table(tower: _Tower) -> np.ndarray:
    """The token embeddings as the tower's own embedding module gives them, [vocab, width]."""
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, tower.vocab_size, _TABLE_ROWS):
            ids = torch.arange(start, min(start + _TABLE_ROWS, tower.vocab_size))
            rows.append(tower.embedding(ids).float().numpy())
    return np.concatenate(rows)


def _write_piece_table(
    directory: Path, tokenizing: _Tokenizing, config: FastClipTextConfig
) -> bool:
    """Whether queries are tokenized from a piece table: a large Unigram vocabulary that the
    table reproduces exactly (`fast_text.pieces`); otherwise no table is kept."""
    if not write_piece_table(tokenizing.tokenizer_json, directory):
        return False
    table = PieceTableTokenizer(
        directory,
        max_length=config.context_length,
        pad_id=config.pad_id,
        padding_side=config.padding_side,
    )
    full = full_tokenizer(directory / TOKENIZER_NAME, config)
    full.enable_padding(direction=config.padding_side, pad_id=config.pad_id)
    try:
        agrees = piece_table_agrees(full, table)
    finally:
        table.close()
    if not agrees:
        remove_piece_table(directory)
    return agrees


def _graph(tower: _Tower) -> Any:
    """Token embeddings (+ attention mask) -> L2-normalised text embedding, as a torch module
    running the tower's own layers after its token embedding."""
    import torch
    from open_clip.transformer import text_global_pool

    text = tower.module

    class HuggingFaceGraph(torch.nn.Module):
        """HFTextEncoder.forward from the embeddings on. Position ids made from embeddings
        differ from those made from ids only at right-padded positions, which the mask hides."""

        def __init__(self) -> None:
            super().__init__()
            self.text = text

        def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            out = self.text.transformer(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
            pooled = self.text.pooler(out, attention_mask)
            return torch.nn.functional.normalize(self.text.proj(pooled), dim=-1)

    class TextTransformerGraph(torch.nn.Module):
        """TextTransformer.forward from the embeddings on (no class token, no padding mask)."""

        def __init__(self) -> None:
            super().__init__()
            self.text = text

        def forward(self, inputs_embeds: torch.Tensor) -> Any:
            length = inputs_embeds.shape[1]
            x = inputs_embeds + self.text.positional_embedding[:length]
            mask = self.text.attn_mask
            x = self.text.transformer(x, attn_mask=None if mask is None else mask[:length, :length])
            pooled = text_global_pool(self.text.ln_final(x), pool_type=self.text.pool_type)
            projection = self.text.text_projection
            if isinstance(projection, torch.nn.Linear):
                pooled = projection(pooled)
            elif projection is not None:
                pooled = pooled @ projection
            return torch.nn.functional.normalize(pooled, dim=-1)

    graph = HuggingFaceGraph() if tower.mask_pad_id is not None else TextTransformerGraph()
    return graph.eval()


def _export_graph(path: Path, tower: _Tower, context_length: int) -> None:
    """Trace the graph on the CPU in float32 (weights inside: the token table, the bulk of a
    multilingual tower, is the runtime's .npy). The batch axis is
    dynamic; so is the sequence axis, except for a tower that sees every position up to the
    context length (`pad_to_context`: nn.MultiheadAttention's tracing fixes the length)."""
    import torch

    graph = _graph(tower)
    names = [EMBEDS_INPUT]
    if tower.pad_to_context:
        inputs: tuple[Any, ...] = (torch.randn(2, context_length, tower.width),)
        axes = {EMBEDS_INPUT: {0: "batch"}}
    else:
        # Two rows of different lengths, so padding is part of the traced example.
        mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.int64)
        inputs = (torch.randn(2, 7, tower.width), mask)
        names.append(MASK_INPUT)
        axes = {name: {0: "batch", 1: "sequence"} for name in names}
    try:
        with _plain_attention(tower), warnings.catch_warnings(), torch.no_grad():
            # Tracer notices about shape checks that are constant for every input; the
            # verification against open_clip is what proves the graph right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                inputs,
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}},
            )
    except (RuntimeError, ValueError, TypeError) as exc:  # the exporter's errors, not the disk's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"cannot export the text tower to ONNX: {first}") from None


@contextmanager
def _plain_attention(tower: _Tower) -> Iterator[None]:
    """Attention as plain ops while tracing, put back afterwards: the fused kernels of
    nn.MultiheadAttention have no ONNX form, and SDPA's mask shortcuts could be traced as
    constants."""
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    body = tower.module.transformer  # a Hugging Face model, or open_clip's own Transformer
    hugging_face = hasattr(body, "set_attn_implementation")
    implementation = body.config._attn_implementation if hugging_face else None
    if hugging_face:
        body.set_attn_implementation("eager")
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if hugging_face and implementation is not None:
            body.set_attn_implementation(implementation)


def _verify(directory: Path, reference: _Reference) -> float:
    """The export's worst cosine against open_clip on VERIFY_TEXTS, or `BundleError` (the
    tokens differ, or the cosine is below MIN_COSINE)."""
    worst = _worst_cosine(directory, reference)
    if not worst >= MIN_COSINE:
        spec = FastClipTextConfig.read(directory).spec
        raise BundleError(
            f"export of {spec!r} disagrees with open_clip (cosine {worst:.4f} < {MIN_COSINE})"
        )
    return worst


def _worst_cosine(directory: Path, reference: _Reference) -> float:
    """The worst cosine to open_clip on VERIFY_TEXTS, one text at a time and in a padded
    batch; `BundleError` when the export does not even tokenize the same."""
    encoder = FastClipTextEncoder.load(directory)
    ours = encoder.token_ids(VERIFY_TEXTS, to_context=True)
    for text, got, expected in zip(VERIFY_TEXTS, ours, reference.token_ids, strict=True):
        if got.tolist() != expected.tolist():
            raise BundleError(
                f"export of {encoder.config.spec!r} tokenizes {text[:40]!r} "
                "differently from open_clip"
            )
    return worst_cosine(encoder.embed, VERIFY_TEXTS, reference.vectors)


def _smallest_table(
    directory: Path, config: FastClipTextConfig, reference: _Reference, full_cosine: float
) -> FastClipTextConfig:
    """Keep the token table (written float32, with which the export reached `full_cosine`)
    in the smallest of `SMALLER_FORMS` with which it still reaches MIN_COSINE on
    VERIFY_TEXTS; float32 when none does. Every form tried is recorded with its cosine."""
    full = np.load(directory / EMBEDDINGS_NAME)
    kept, tried = smallest_form(
        directory, full, config, lambda trial: _worst_cosine(directory, reference), MIN_COSINE
    )
    cosines = {FULL_FORM: full_cosine, **tried}
    kept = replace(kept, min_cosine=cosines[kept.token_table])
    result = replace(kept, token_table_cosines=cosines)
    result.write(directory)
    return result


def _smallest_graph(
    directory: Path, config: FastClipTextConfig, reference: _Reference
) -> FastClipTextConfig:
    """The verified export in `directory` (`config`: its table kept, its graph float32) with
    the graph's weights stored in float16 when the whole export still reaches MIN_COSINE
    on VERIFY_TEXTS; else the float32 graph is put back. Both cosines are recorded."""
    assert config.min_cosine is not None
    with float16_trial(directory / ENCODER_NAME) as trial:
        cosine = _worst_cosine(directory, reference)
        if cosine >= MIN_COSINE:
            trial.keep()
    cosines = {FLOAT32: config.min_cosine, FLOAT16: cosine}
    kept = FLOAT16 if trial.kept else FLOAT32
    result = replace(
        config, graph_weights=kept, graph_weights_cosines=cosines, min_cosine=cosines[kept]
    )
    result.write(directory)
    return result
