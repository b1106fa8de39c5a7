"""open_clip text towers without torch: exported once, equal to open_clip, refused when not.

One tiny random model per tower kind of the multilingual built-ins (hanclip_eval.tiny_clip_text):
XLM-R in open_clip's HFTextEncoder, the encoder of an NLLB M2M100, and SigLIP 2's
TextTransformer with a Gemma-style tokenizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from graph_weights import export_from_before_float16, float16_falls_short, initializer_types

from hanclip_eval.tiny_clip_text import KINDS, build_tiny_clip_text, load_clip_text
from hanclip_eval.tiny_models import build_tiny_open_clip
from hanclip_model.errors import BundleError
from hanclip_model.fast_clip_text import export as clip_text_export
from hanclip_model.fast_clip_text.export import (
    MIN_COSINE,
    export_clip_text_encoder,
    ftfy_character_fixes,
)
from hanclip_model.fast_clip_text.runtime import (
    CLEAN_RULES,
    CONFIG_NAME,
    ENCODER_NAME,
    FastClipTextConfig,
    FastClipTextEncoder,
    clean_texts,
)
from hanclip_model.fast_text.table import FULL_FORM, SMALLER_FORMS, TokenTable
from hanclip_model.half_weights import FLOAT16, FLOAT32

REPO_ROOT = Path(__file__).resolve().parents[1]
# Not the export's own check texts: what a search box receives, edge cases included.
QUERIES = [
    "고양이",
    "창가에 누워있는 고양이 사진",
    "a dog running in the park",
    "제주도 바다 sunset at the beach",
    "Ｓｅｏｕｌ  타워 — “night view”!",
    "???",
    "",
    " ".join(["여름 휴가 바닷가 summer holiday by the sea"] * 30),
]
CLEAN_CHECKS = [
    *QUERIES,
    "ﬁne ﬂower &lt;b&gt; &amp;amp; it’s",
    "first line\r\nsecond\u2028third\x00\x07 end",
    "<b>&amp;</b> &amp; after a tag",
    "snake_case and UPPER, lower; (brackets) [x] {y} 100%",
    "\u0085 c1 \x91quoted\x92 ｶﾀｶﾅ ﾊﾝｸﾞﾙ ￦1000",
    "e\u0301 cafe\u0301 한\u1100",
]


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tiny_clip(kind, tmp_path_factory) -> tuple[str, object, object]:
    """(spec, open_clip model, open_clip tokenizer) of a tiny model of `kind`."""
    spec = build_tiny_clip_text(tmp_path_factory.mktemp("clip") / kind, kind)
    model, tokenizer = load_clip_text(spec)
    return spec, model, tokenizer


@pytest.fixture(scope="module")
def exported(tiny_clip, tmp_path_factory) -> Path:
    spec, model, tokenizer = tiny_clip
    out_dir = tmp_path_factory.mktemp("export") / "text"
    export_clip_text_encoder(model, tokenizer, out_dir, spec=spec, fingerprint="tiny")
    return out_dir


def _open_clip_vectors(model, tokenizer, texts: list[str]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.encode_text(tokenizer(texts), normalize=True).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_is_verified_and_says_what_the_runtime_needs(kind, tiny_clip, exported):
    config = FastClipTextConfig.read(exported)
    assert config.min_cosine is not None and config.min_cosine >= MIN_COSINE
    assert config.spec == tiny_clip[0] and config.fingerprint == "tiny"
    expected = {
        "xlmr": ("hf:xlm-roberta", "mean_pooler", "whitespace", False, True),
        "nllb": ("hf:m2m_100", "cls_pooler", "whitespace", False, False),
        "siglip2": ("open_clip", "last", "canonicalize", True, False),
    }[kind]
    found = (config.tower, config.pooling, config.clean, config.pad_to_context, config.piece_table)
    assert found == expected
    assert (config.mask_pad_id is None) == (kind == "siglip2")
    assert config.language == ("kor_Hang" if kind == "nllb" else None)
    assert config.context_length == tiny_clip[2].context_length
    # Kept in the smallest form that passed, every form tried up to it recorded.
    assert config.token_table in SMALLER_FORMS
    cosines = config.token_table_cosines
    assert cosines[FULL_FORM] >= MIN_COSINE
    # With that table, the graph's weights stored in float16: it still verified.
    graph_cosines = config.graph_weights_cosines
    assert config.graph_weights == FLOAT16 and graph_cosines[FLOAT16] >= MIN_COSINE
    assert graph_cosines[FLOAT32] == cosines[config.token_table]
    assert config.min_cosine == graph_cosines[FLOAT16]
    table = TokenTable.open(exported, config.token_table)
    assert table.shape == (config.vocab_size, config.width)
    assert len(list(exported.glob("*.onnx"))) == 1  # one graph, not a plain and an optimised


def test_runtime_gives_open_clip_tokens_and_vectors(tiny_clip, exported):
    _, model, tokenizer = tiny_clip
    encoder = FastClipTextEncoder.load(exported)
    ids = encoder.token_ids(QUERIES, to_context=True)
    np.testing.assert_array_equal(ids, tokenizer(QUERIES).numpy())
    expected = _open_clip_vectors(model, tokenizer, QUERIES)
    ours = encoder.embed(QUERIES)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    assert _cosines(ours, expected).min() >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batch_equals_one_by_one(exported):
    encoder = FastClipTextEncoder.load(exported)
    one_by_one = np.concatenate([encoder.embed([text]) for text in QUERIES])
    np.testing.assert_allclose(encoder.embed(QUERIES), one_by_one, atol=1e-5)
    np.testing.assert_allclose(encoder.embed(QUERIES, batch_size=3), one_by_one, atol=1e-5)
    assert encoder.embed([]).shape == (0, encoder.dim)


def test_a_query_opens_only_what_it_needs(exported):
    encoder = FastClipTextEncoder.load(exported)
    assert not {"_session", "_tokenizer", "_table"} & set(vars(encoder))
    encoder.token_ids(["고양이"])
    assert "_tokenizer" in vars(encoder) and "_session" not in vars(encoder)
    encoder.embed(["고양이"])
    assert {"_session", "_table"} <= set(vars(encoder))


def test_runtime_needs_no_torch_transformers_open_clip_or_ftfy(tiny_clip, exported, tmp_path):
    _, model, tokenizer = tiny_clip
    expected = _open_clip_vectors(model, tokenizer, QUERIES[:4])
    script = (
        "import json, sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'open_clip', 'ftfy',\n"
        "                                  'sentence_transformers'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from hanclip_model.fast_clip_text.runtime import FastClipTextEncoder\n"
        f"vectors = FastClipTextEncoder.load({str(exported)!r}).embed({QUERIES[:4]!r})\n"
        "print(json.dumps(vectors.tolist()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    vectors = np.array(json.loads(done.stdout.strip().splitlines()[-1]), dtype=np.float32)
    assert _cosines(vectors, expected).min() >= MIN_COSINE


def _assert_nothing_left(out_dir: Path) -> None:
    assert not out_dir.exists()
    assert list(out_dir.parent.iterdir()) == []  # no staging folder either


def test_a_wrong_graph_is_refused_with_its_cosine(tiny_clip, tmp_path, monkeypatch):
    spec, model, tokenizer = tiny_clip
    real_table = clip_text_export._token_table

    def shuffled_table(tower):  # every token looks up another token's row
        return np.roll(real_table(tower), 1, axis=0)

    monkeypatch.setattr(clip_text_export, "_token_table", shuffled_table)
    out_dir = tmp_path / "exports" / "text"
    with pytest.raises(BundleError, match=r"disagrees with open_clip \(cosine -?0\.\d+ < 0\.999\)"):
        export_clip_text_encoder(model, tokenizer, out_dir, spec=spec)
    _assert_nothing_left(out_dir)


def test_a_wrong_tokenizer_is_refused(tiny_clip, tmp_path, monkeypatch):
    spec, model, tokenizer = tiny_clip
    # The runtime would read a Korean syllable as another: its token ids differ.
    monkeypatch.setattr(clip_text_export, "ftfy_character_fixes", lambda: {"바": "파"})
    out_dir = tmp_path / "exports" / "text"
    with pytest.raises(BundleError, match=r"tokenizes '바다 위 노을' differently from open_clip"):
        export_clip_text_encoder(model, tokenizer, out_dir, spec=spec)
    _assert_nothing_left(out_dir)


def test_a_tower_it_cannot_reproduce_is_refused(tmp_path):
    import open_clip

    spec = build_tiny_open_clip(tmp_path / "clip")  # OpenAI-style CLIP: text built into CLIP
    model = open_clip.create_model(spec, device="cpu").eval()
    out_dir = tmp_path / "exports" / "text"
    with pytest.raises(BundleError, match="its text tower is built into CLIP"):
        export_clip_text_encoder(model, open_clip.get_tokenizer(spec), out_dir, spec=spec)
    assert not out_dir.parent.exists() or list(out_dir.parent.iterdir()) == []


@pytest.mark.parametrize("rule", CLEAN_RULES)
def test_cleaning_without_ftfy_is_open_clips(rule):
    from open_clip.tokenizer import get_clean_fn

    clean = get_clean_fn(rule)
    fixes = {ord(char): fixed for char, fixed in ftfy_character_fixes().items()}
    assert clean_texts(CLEAN_CHECKS, rule, fixes) == [clean(text) for text in CLEAN_CHECKS]


def test_an_unreadable_export_is_a_bundle_error(exported, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(BundleError, match="cannot read the clip text encoder"):
        FastClipTextEncoder.load(broken)
    (broken / CONFIG_NAME).write_text((exported / CONFIG_NAME).read_text())
    (broken / ENCODER_NAME).write_bytes(b"not a graph")
    encoder = FastClipTextEncoder.load(broken)  # nothing but the manifest is read yet
    with pytest.raises(BundleError):
        encoder.embed(["고양이"])


def test_an_nllb_tokenizer_keeps_the_language_it_was_set_to(tmp_path):
    spec = build_tiny_clip_text(tmp_path / "nllb", "nllb")
    model, tokenizer = load_clip_text(spec)
    # Not open_clip's `set_language`: transformers puts `src_lang` back on the next call.
    tokenizer.tokenizer.src_lang = "jpn_Jpan"
    config = export_clip_text_encoder(model, tokenizer, tmp_path / "export", spec=spec)
    assert config.language == "jpn_Jpan"
    encoder = FastClipTextEncoder.load(tmp_path / "export")
    japanese = tokenizer.tokenizer.convert_tokens_to_ids("jpn_Jpan")
    assert encoder.token_ids(["고양이"])[0, 0] == japanese
    expected = _open_clip_vectors(model, tokenizer, QUERIES)
    assert _cosines(encoder.embed(QUERIES), expected).min() >= MIN_COSINE


def test_a_float16_graph_below_the_bar_is_kept_in_float32(tiny_clip, tmp_path, monkeypatch):
    from onnx import TensorProto

    spec, model, tokenizer = tiny_clip
    # The float16 graph reaches only 0.998 < MIN_COSINE.
    float16_falls_short(monkeypatch, clip_text_export, 0.998)
    out_dir = tmp_path / "text"
    config = export_clip_text_encoder(model, tokenizer, out_dir, spec=spec)
    assert FastClipTextConfig.read(out_dir) == config
    # Kept float32, with what float16 reached: the reason.
    assert config.graph_weights == FLOAT32 and config.graph_weights_cosines[FLOAT16] == 0.998
    assert config.min_cosine == config.graph_weights_cosines[FLOAT32] >= MIN_COSINE
    assert TensorProto.FLOAT16 not in initializer_types(out_dir / ENCODER_NAME)
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["text"]  # nothing left aside
    expected = _open_clip_vectors(model, tokenizer, QUERIES)
    got = FastClipTextEncoder.load(out_dir).embed(QUERIES)
    assert _cosines(got, expected).min() >= MIN_COSINE


def test_an_export_made_before_float16_weights_still_loads(tiny_clip, exported, tmp_path):
    _, model, tokenizer = tiny_clip
    old = tmp_path / "old"
    export_from_before_float16(exported, old, CONFIG_NAME, ENCODER_NAME)
    config = FastClipTextConfig.read(old)
    assert (config.graph_weights, config.graph_weights_cosines) == (FLOAT32, {})
    expected = _open_clip_vectors(model, tokenizer, QUERIES)
    assert _cosines(FastClipTextEncoder.load(old).embed(QUERIES), expected).min() >= MIN_COSINE
