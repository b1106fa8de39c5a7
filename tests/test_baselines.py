"""Baselines behind the bundle interface: CLIP + NLLB translation, KoCLIP, and the dispatcher.

Every model is tiny and built here (random weights, stand-in tokenizers), then loaded through
the same code path users run with hub ids. The real-size random builders are exercised with
scaled-down shapes through the same functions; full size is left to the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tinybaselines import KOCLIP_DIM, TINY_NLLB, build_tiny_koclip, build_tiny_nllb

from hanclip_eval.baselines import (
    BaselineSources,
    ClipTranslateEmbedder,
    KoclipEmbedder,
    Translator,
    fixed_new_tokens,
    load_embedder,
)
from hanclip_eval.random_models import (
    RANDOM_CLIP_SPEC,
    BertShape,
    Seq2SeqShape,
    random_clip_vit_b32,
    random_minilm,
    random_nllb_600m,
    standin_nllb_tokenizer,
)
from hanclip_eval.tiny_models import build_tiny_open_clip, write_photo_folder
from hanclip_model.encoders import ClipEncoder, TextEncoder, parse_image_model
from hanclip_model.errors import BundleError
from hanclip_model.model import HanclipModel

QUERIES = ["바다 위 노을", "고양이"]
CLIP_DIM = 32
TINY_MINILM = BertShape(
    hidden=32, layers=2, heads=2, intermediate=64, vocab_size=None, max_positions=128
)


def assert_unit_rows(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_nllb(tmp_path_factory.mktemp("nllb"))


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_open_clip(tmp_path_factory.mktemp("clip"), embed_dim=CLIP_DIM)


@pytest.fixture(scope="module")
def koclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VisionTextDualEncoderModel (CLIP ViT + BERT) in the koclip-base-pt layout."""
    return build_tiny_koclip(tmp_path_factory.mktemp("koclip"))


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_photo_folder(tmp_path_factory.mktemp("photos"), count=5)


def test_translator_returns_one_english_string_per_text(nllb_dir: Path) -> None:
    translator = Translator(str(nllb_dir), max_new_tokens=8)
    english = translator.translate([*QUERIES, "누워있는 고양이"])
    assert len(english) == 3
    assert all(isinstance(text, str) for text in english)
    assert translator.translate([]) == []


def test_fixed_length_generation_for_random_weights(nllb_dir: Path) -> None:
    assert fixed_new_tokens(source_tokens=6, length_ratio=1.0, max_new_tokens=64) == 6
    assert fixed_new_tokens(source_tokens=6, length_ratio=1.25, max_new_tokens=64) == 8
    assert fixed_new_tokens(source_tokens=100, length_ratio=1.0, max_new_tokens=64) == 64
    assert fixed_new_tokens(source_tokens=0, length_ratio=1.0, max_new_tokens=64) == 1

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(nllb_dir)
    tokenizer = AutoTokenizer.from_pretrained(nllb_dir, src_lang="kor_Hang")
    translator = Translator.from_model(model, tokenizer, length_ratio=1.0, max_new_tokens=32)
    calls = []
    generate = model.generate

    def spy(**kwargs):
        output = generate(**kwargs)
        calls.append((kwargs["input_ids"].shape[1], output.shape[1]))
        return output

    model.generate = spy
    translator.translate(QUERIES)
    ((source_length, output_length),) = calls
    # The output is the decoder start token plus exactly the fixed number of new tokens.
    assert output_length == 1 + source_length


def test_clip_translate_embeds_korean_and_photos_in_one_space(
    nllb_dir: Path, clip_spec: str, photo_paths: list[Path]
) -> None:
    sources = BaselineSources(clip=clip_spec, translator=str(nllb_dir))
    embedder = load_embedder("clip-translate", sources=sources)
    assert isinstance(embedder, ClipTranslateEmbedder)
    assert embedder.name == "clip-translate"
    texts = embedder.embed_texts(QUERIES)
    assert_unit_rows(texts, 2, CLIP_DIM)
    images = embedder.embed_images([*photo_paths, Image.new("RGB", (40, 30), "navy")])
    assert_unit_rows(images, len(photo_paths) + 1, CLIP_DIM)
    np.testing.assert_allclose(embedder.query_vector(QUERIES[0]), texts[0], atol=1e-5)


def test_clip_translate_text_is_clip_of_the_translation(nllb_dir: Path, clip_spec: str) -> None:
    translator = Translator(str(nllb_dir), max_new_tokens=8)
    clip = ClipEncoder(clip_spec)
    embedder = ClipTranslateEmbedder(clip, translator)
    expected = clip.embed_texts(translator.translate(QUERIES))
    np.testing.assert_allclose(embedder.embed_texts(QUERIES), expected, atol=1e-5)


def test_koclip_towers_share_one_normalised_space(
    koclip_dir: Path, photo_paths: list[Path]
) -> None:
    embedder = load_embedder("koclip", sources=BaselineSources(koclip=str(koclip_dir)))
    assert isinstance(embedder, KoclipEmbedder)
    assert embedder.name == "koclip"
    texts = embedder.embed_texts(QUERIES)
    assert_unit_rows(texts, 2, KOCLIP_DIM)
    images = embedder.embed_images(photo_paths)
    assert_unit_rows(images, len(photo_paths), KOCLIP_DIM)
    assert not np.allclose(texts[0], texts[1])
    np.testing.assert_allclose(embedder.query_vector(QUERIES[1]), texts[1], atol=1e-5)
    assert embedder.embed_texts([]).shape == (0, KOCLIP_DIM)


def test_koclip_reads_decomposed_hangul_like_composed(koclip_dir: Path) -> None:
    import unicodedata

    embedder = KoclipEmbedder(str(koclip_dir))
    decomposed = [unicodedata.normalize("NFD", text) for text in QUERIES]
    np.testing.assert_allclose(
        embedder.embed_texts(decomposed), embedder.embed_texts(QUERIES), atol=1e-6
    )


def test_load_embedder_hands_other_names_to_bundles(tiny) -> None:
    mclip = load_embedder("mclip")
    assert isinstance(mclip, HanclipModel)
    assert mclip.name == "mclip"
    bundle = load_embedder(str(tiny.plain_bundle))
    assert isinstance(bundle, HanclipModel)
    assert_unit_rows(bundle.embed_texts(QUERIES), 2, CLIP_DIM)
    with pytest.raises(BundleError, match="unknown model"):
        load_embedder("no-such-model")


@pytest.mark.parametrize(
    ("name", "field", "what"),
    [
        ("koclip", "koclip", "KoCLIP model directory not found"),
        ("clip-translate", "translator", "translation model directory not found"),
    ],
)
def test_missing_local_model_dir_is_one_line_bundle_error(
    tmp_path: Path, clip_spec: str, name: str, field: str, what: str
) -> None:
    missing = tmp_path / "nowhere"
    sources = BaselineSources(clip=clip_spec, **{field: str(missing)})
    embedder = load_embedder(name, sources=sources)
    with pytest.raises(BundleError) as info:
        embedder.embed_texts(QUERIES)
    message = str(info.value)
    assert what in message and str(missing) in message
    assert "\n" not in message


def test_broken_local_model_dir_is_one_line_bundle_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BundleError) as info:
        KoclipEmbedder(str(tmp_path)).embed_texts(QUERIES)
    assert str(info.value).startswith("cannot load KoCLIP")
    assert "\n" not in str(info.value)
    assert "Flax" not in str(info.value)


def test_flax_only_koclip_dir_points_to_the_pytorch_release(
    koclip_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_bytes((koclip_dir / "config.json").read_bytes())
    (tmp_path / "flax_model.msgpack").write_bytes(b"\x80")
    with pytest.raises(BundleError, match="koclip/koclip-base-pt") as info:
        KoclipEmbedder(str(tmp_path)).embed_texts(QUERIES)
    assert "\n" not in str(info.value)


def test_standin_nllb_tokenizer_has_nllb_layout() -> None:
    tokenizer = standin_nllb_tokenizer()
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(4)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
    ]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("바다 위 노을 사진")["input_ids"])
    assert tokens[0] == "kor_Hang" and tokens[-1] == "</s>"
    assert "<unk>" not in tokenizer.convert_ids_to_tokens(tokenizer("뷁 쏼라 xyz!")["input_ids"])
    assert tokenizer.convert_tokens_to_ids("eng_Latn") != tokenizer.unk_token_id
    assert tokenizer.get_vocab() == standin_nllb_tokenizer().get_vocab()


def test_random_nllb_builder_is_seeded_and_shaped() -> None:
    model, tokenizer = random_nllb_600m(shape=TINY_NLLB, device="cpu")
    again, _ = random_nllb_600m(shape=TINY_NLLB, device="cpu")
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (16, 1, 1)
    assert config.vocab_size == len(tokenizer)
    assert config.decoder_start_token_id == tokenizer.eos_token_id
    assert not model.training
    weight = model.get_input_embeddings().weight
    assert weight.equal(again.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        random_nllb_600m(shape=Seq2SeqShape(d_model=16, vocab_size=100), device="cpu")


def test_random_minilm_loads_as_a_text_encoder(tmp_path: Path) -> None:
    directory = random_minilm(tmp_path / "minilm", shape=TINY_MINILM)
    encoder = TextEncoder(str(directory))
    assert_unit_rows(encoder.embed(QUERIES), 2, TINY_MINILM.hidden)


def test_random_clip_is_vit_b32_without_pretrained_weights() -> None:
    encoder = random_clip_vit_b32()
    assert parse_image_model(encoder.spec) == ("ViT-B-32", None)
    assert encoder.spec == RANDOM_CLIP_SPEC
