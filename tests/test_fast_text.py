"""The torch-free query encoder: exported once, equal to sentence-transformers, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from graph_weights import export_from_before_float16, float16_falls_short, initializer_types
from onnx import TensorProto

from hanclip_eval.tiny_models import BERT_HIDDEN, build_tiny_sentence_transformer
from hanclip_model.encoders import TextEncoder
from hanclip_model.errors import BundleError
from hanclip_model.fast_text.cache import ensure_fast_text, fast_text_dir
from hanclip_model.fast_text.export import MIN_COSINE, export_text_encoder
from hanclip_model.fast_text.runtime import (
    CONFIG_NAME,
    ENCODER_NAME,
    MIN_QUANTIZED_COSINE,
    QUANTIZED_ENCODER_NAME,
    TOKENIZER_NAME,
    FastTextConfig,
    FastTextEncoder,
    full_tokenizer,
    tokenize,
)
from hanclip_model.fast_text.table import EMBEDDINGS_NAME, TokenTable
from hanclip_model.half_weights import FLOAT16, FLOAT32
from hanclip_model.sources import source_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "바다 위 노을",
    "누워있는 고양이",
    "공원에서 뛰는 강아지",
    "a cat on the sofa",
    "the city at night",
    "눈 오는 겨울 밤 a snowy winter night",
]
LONG_TEXT = " ".join(["해변에서 본 바다 노을 a beach at sunset"] * 60)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module", params=["plain", "dense"])
def exported(request, tiny, tmp_path_factory) -> tuple[Path, Path]:
    """(sentence-transformers source, its export): mean pooling alone, then with a Dense."""
    source = tiny.text_plain if request.param == "plain" else tiny.text_dense
    out_dir = tmp_path_factory.mktemp("fast") / request.param
    return source, export_text_encoder(str(source), out_dir)


def test_export_writes_the_query_files(exported):
    source, out_dir = exported
    names = {p.name for p in out_dir.iterdir()}
    assert {CONFIG_NAME, TOKENIZER_NAME, EMBEDDINGS_NAME, ENCODER_NAME} <= names
    config = FastTextConfig.read(out_dir)
    assert config.spec == str(source)
    assert config.pooling_mode == ["mean"]
    table = TokenTable.open(out_dir, config.token_table)
    assert table.shape == (config.vocab_size, config.hidden)
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left
    # With that table, the graph's weights stored in float16: the export still verified.
    cosines = config.graph_weights_cosines
    assert config.graph_weights == FLOAT16 and cosines[FLOAT16] >= MIN_COSINE
    assert cosines[FLOAT32] == config.token_table_cosines[config.token_table]
    assert TensorProto.FLOAT16 in initializer_types(out_dir / ENCODER_NAME)
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no float32 copy


def test_matches_sentence_transformers_in_korean_and_english(exported):
    source, out_dir = exported
    fast = FastTextEncoder.load(out_dir)
    reference = TextEncoder(str(source), device="cpu")
    vectors = fast.embed([*TEXTS, LONG_TEXT])
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS) + 1, reference.dim) == (len(TEXTS) + 1, fast.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert _cosines(vectors, reference.embed([*TEXTS, LONG_TEXT])).min() >= 0.999


def test_nfd_query_is_embedded_as_nfc(exported):
    source, out_dir = exported
    fast = FastTextEncoder.load(out_dir)
    nfd = [unicodedata.normalize("NFD", text) for text in TEXTS]
    assert nfd != TEXTS
    np.testing.assert_allclose(fast.embed(nfd), fast.embed(TEXTS), atol=1e-6)
    reference = TextEncoder(str(source), device="cpu").embed(TEXTS)
    assert _cosines(fast.embed(nfd), reference).min() >= 0.999


def test_long_text_is_truncated_at_max_seq_length(exported):
    _, out_dir = exported
    config = FastTextConfig.read(out_dir)
    input_ids, attention_mask = tokenize(
        full_tokenizer(out_dir / TOKENIZER_NAME, config), [LONG_TEXT]
    )
    assert input_ids.shape == attention_mask.shape == (1, config.max_seq_length)
    # Words past the cut cannot change the vector.
    fast = FastTextEncoder.load(out_dir)
    endings = fast.embed([f"{LONG_TEXT} 고양이", f"{LONG_TEXT} 강아지"])
    np.testing.assert_allclose(endings[0], endings[1], atol=1e-6)


def test_batch_equals_one_by_one(exported):
    _, out_dir = exported
    fast = FastTextEncoder.load(out_dir)
    texts = [*TEXTS, LONG_TEXT, ""]
    one_by_one = np.concatenate([fast.embed([text]) for text in texts])
    np.testing.assert_allclose(fast.embed(texts), one_by_one, atol=1e-5)
    np.testing.assert_allclose(fast.embed(texts, batch_size=3), one_by_one, atol=1e-5)
    assert fast.embed([]).shape == (0, fast.dim)


def test_query_path_never_imports_torch(exported):
    _, out_dir = exported
    script = (
        "import json, sys\n"
        "from hanclip_model.fast_text.runtime import FastTextEncoder\n"
        f"vectors = FastTextEncoder.load({str(out_dir)!r}).embed(['바다 위 노을'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers')\n"
        "         if m in sys.modules]\n"
        "print(json.dumps({'shape': list(vectors.shape), 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"shape": [1, FastTextConfig.read(out_dir).dim], "heavy": []}


def test_ensure_reuses_the_export_then_redoes_it_when_the_model_changes(tmp_path):
    source = build_tiny_sentence_transformer(tmp_path / "model", seed=0)
    spec, cache = str(source), tmp_path / "cache"
    first = ensure_fast_text(spec, cache)
    assert first == fast_text_dir(cache, spec)
    written = (first / CONFIG_NAME).stat().st_mtime_ns
    assert ensure_fast_text(spec, cache) == first
    assert (first / CONFIG_NAME).stat().st_mtime_ns == written  # reused, not exported again
    before = FastTextEncoder.load(first).embed(TEXTS)

    build_tiny_sentence_transformer(source, seed=1)  # same place, new weights
    second = ensure_fast_text(spec, cache)
    assert second != first
    assert not first.exists()  # the stale export is removed
    after = FastTextEncoder.load(second).embed(TEXTS)
    assert _cosines(after, before).min() < 0.99
    reference = TextEncoder(spec, device="cpu").embed(TEXTS)
    assert _cosines(after, reference).min() >= 0.999


def test_a_hub_model_is_fingerprinted_by_its_cached_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
    assert source_fingerprint(spec) is None  # not downloaded yet
    ref = tmp_path / "hub" / f"models--{spec.replace('/', '--')}" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("abc123", encoding="utf-8")
    assert source_fingerprint(spec) == "hub:abc123"
    first = fast_text_dir(tmp_path / "cache", spec)
    ref.write_text("def456", encoding="utf-8")
    assert fast_text_dir(tmp_path / "cache", spec) != first


def test_int8_encoder_is_kept_only_when_it_holds_accuracy(tiny, tmp_path):
    spec, cache = str(tiny.text_dense), tmp_path / "cache"
    out_dir = ensure_fast_text(spec, cache, quantize=True)
    config = FastTextConfig.read(out_dir)
    assert config.int8_cosine is not None
    assert config.quantized == (config.int8_cosine >= MIN_QUANTIZED_COSINE)
    assert (out_dir / QUANTIZED_ENCODER_NAME).exists() == config.quantized
    if config.quantized:
        int8 = FastTextEncoder.load(out_dir, quantized=True).embed(TEXTS)
        fp32 = FastTextEncoder.load(out_dir).embed(TEXTS)
        assert _cosines(int8, fp32).min() >= MIN_QUANTIZED_COSINE
    else:
        with pytest.raises(BundleError, match="int8"):
            FastTextEncoder.load(out_dir, quantized=True)
    written = (out_dir / CONFIG_NAME).stat().st_mtime_ns
    assert ensure_fast_text(spec, cache, quantize=True) == out_dir  # tried once is enough
    assert (out_dir / CONFIG_NAME).stat().st_mtime_ns == written


def test_unsupported_module_is_refused(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import LayerNorm
    except ImportError:  # sentence-transformers < 5.4
        from sentence_transformers.models import LayerNorm

    model = SentenceTransformer(str(tiny.text_plain), device="cpu")
    model.append(LayerNorm(BERT_HIDDEN))
    model.save(str(tmp_path / "layernorm"), create_model_card=False)
    out_dir = tmp_path / "out"
    with pytest.raises(BundleError, match="LayerNorm"):
        export_text_encoder(str(tmp_path / "layernorm"), out_dir)
    assert not tmp_path.joinpath("out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["layernorm"]  # no staging left


def test_unsupported_pooling_is_refused(tiny, tmp_path):
    source = tmp_path / "weighted"
    shutil.copytree(tiny.text_plain, source)
    pooling = source / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text(encoding="utf-8"))
    pooling.write_text(json.dumps({**config, "pooling_mode": "weightedmean"}), encoding="utf-8")
    with pytest.raises(BundleError, match="weightedmean"):
        export_text_encoder(str(source), tmp_path / "out")


def test_an_export_that_disagrees_is_not_kept(tiny, tmp_path, monkeypatch):
    import hanclip_model.fast_text.export as fast_text_export

    monkeypatch.setattr(fast_text_export, "MIN_COSINE", 1.5)  # no export can pass
    with pytest.raises(BundleError, match="disagrees"):
        export_text_encoder(str(tiny.text_plain), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_broken_export_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError):
        FastTextEncoder.load(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError):
        FastTextEncoder.load(tmp_path)


def test_a_float16_graph_below_the_bar_is_kept_in_float32(tiny, tmp_path, monkeypatch):
    import hanclip_model.fast_text.export as fast_text_export

    # The float16 graph reaches only 0.998 < MIN_COSINE.
    float16_falls_short(monkeypatch, fast_text_export, 0.998)
    out_dir = export_text_encoder(str(tiny.text_dense), tmp_path / "out")
    config = FastTextConfig.read(out_dir)
    assert config.graph_weights == FLOAT32 and config.graph_weights_cosines[FLOAT16] == 0.998
    assert config.graph_weights_cosines[FLOAT32] >= MIN_COSINE
    assert TensorProto.FLOAT16 not in initializer_types(out_dir / ENCODER_NAME)
    expected = TextEncoder(str(tiny.text_dense), device="cpu").embed(TEXTS)
    assert _cosines(FastTextEncoder.load(out_dir).embed(TEXTS), expected).min() >= MIN_COSINE


def test_an_export_made_before_float16_weights_still_loads(exported, tmp_path):
    source, out_dir = exported
    old = tmp_path / "old"
    export_from_before_float16(out_dir, old, CONFIG_NAME, ENCODER_NAME)
    config = FastTextConfig.read(old)
    assert (config.graph_weights, config.graph_weights_cosines) == (FLOAT32, {})
    expected = TextEncoder(str(source), device="cpu").embed(TEXTS)
    assert _cosines(FastTextEncoder.load(old).embed(TEXTS), expected).min() >= MIN_COSINE
