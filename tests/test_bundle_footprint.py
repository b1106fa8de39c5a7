"""A smaller export that loads no more than it needs: one graph per encoder, the token table
in its smallest accurate form, sessions opened only when an encoder has work, and bundles
exported before all that still loading and giving the same vectors.

Sizes and memory are figures of `benchmarks/bundle_footprint.py`, not asserted here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_footprint import preoptimized_copy

from hanclip_eval.tiny_models import (
    build_tiny_open_clip,
    build_tiny_sentence_transformer,
    write_bundle_dir,
)
from hanclip_model import device as device_module
from hanclip_model import model as model_module
from hanclip_model.bundle import IMAGE_ENCODER_DIR, TEXT_ENCODER_DIR
from hanclip_model.encoders import TextEncoder
from hanclip_model.fast_image import runtime as fast_image_runtime
from hanclip_model.fast_text import runtime as fast_text_runtime
from hanclip_model.fast_text import table as token_table
from hanclip_model.fast_text.cache import cached_fast_text, fast_text_dir
from hanclip_model.fast_text.export import MIN_COSINE, VERIFY_TEXTS, export_text_encoder
from hanclip_model.fast_text.runtime import (
    CONFIG_NAME,
    ENCODER_NAME,
    OPTIMIZED_ENCODER_NAME,
    FastTextConfig,
    FastTextEncoder,
)
from hanclip_model.fast_text.table import (
    EMBEDDINGS_NAME,
    FULL_FORM,
    SCALES_NAME,
    TokenTable,
    int8_rows,
)
from hanclip_model.model import load_bundle

TEXTS = ["바다 위 노을", "누워있는 고양이", "a cat on the sofa", "서울 야경 city lights"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture
def exported(cli, tmp_path: Path) -> Path:
    """A tiny bundle after `hanclip export`."""
    image_spec = build_tiny_open_clip(tmp_path / "models" / "clip", embed_dim=32)
    text = build_tiny_sentence_transformer(tmp_path / "models" / "text", out_dim=32)
    bundle = write_bundle_dir(tmp_path / "bundle", image_spec, text, heads=None, name="own")
    result = cli("export", bundle, "--json")
    assert result.exit_code == 0, result.stderr
    return bundle


def _preoptimized_copy(graph: Path) -> None:
    """What exports wrote beside each graph before one was stored: the graph after ONNX
    Runtime's extended optimisations, its weights in a `.data` file."""
    preoptimized_copy(graph, graph.with_name(OPTIMIZED_ENCODER_NAME))


def _old_layout(bundle: Path, out: Path) -> Path:
    """A copy of `bundle` with its encoders as `hanclip export` wrote them before: the image
    graph with its weights inside, each graph also pre-optimised, the text export in format 3
    with the model's own float32 token table."""
    import onnx
    from sentence_transformers import SentenceTransformer

    shutil.copytree(bundle, out)  # copies: the bundle's files are links to the cache's
    image, text = out / IMAGE_ENCODER_DIR, out / TEXT_ENCODER_DIR
    graph = onnx.load(str(image / ENCODER_NAME))
    (image / f"{ENCODER_NAME}.data").unlink()
    onnx.save_model(graph, str(image / ENCODER_NAME))
    _preoptimized_copy(image / ENCODER_NAME)
    _preoptimized_copy(text / ENCODER_NAME)

    config = json.loads((text / CONFIG_NAME).read_text(encoding="utf-8"))
    model = SentenceTransformer(config["spec"], device="cpu")
    table = model[0].auto_model.get_input_embeddings().weight.detach().float().numpy()
    np.save(text / EMBEDDINGS_NAME, table)
    (text / SCALES_NAME).unlink(missing_ok=True)
    del config["token_table"], config["token_table_cosines"]
    (text / CONFIG_NAME).write_text(json.dumps({**config, "format": 3}), encoding="utf-8")
    return out


def _record_sessions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """(encoder folder, graph file, pre-optimised) of every ONNX session opened from now on."""
    opened: list[tuple[str, str, bool]] = []
    for runtime in (fast_image_runtime, fast_text_runtime):
        real = runtime.inference_session

        def recording(path, *, preoptimized=False, real=real, **kwargs):
            opened.append((Path(path).parent.name, Path(path).name, preoptimized))
            return real(path, preoptimized=preoptimized, **kwargs)

        monkeypatch.setattr(runtime, "inference_session", recording)
    return opened


def _without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "torch_available", lambda: False)
    monkeypatch.setattr(model_module, "torch_available", lambda: False)


# -- what an export stores ---------------------------------------------------------------------


def test_an_export_stores_each_graph_once_and_a_smaller_verified_table(exported: Path) -> None:
    image, text = exported / IMAGE_ENCODER_DIR, exported / TEXT_ENCODER_DIR
    assert not (image / OPTIMIZED_ENCODER_NAME).exists()
    assert not (text / OPTIMIZED_ENCODER_NAME).exists()
    config = FastTextConfig.read(text)
    assert config.format == fast_text_runtime.FAST_TEXT_FORMAT
    assert config.token_table != FULL_FORM  # the tiny model's table keeps its accuracy
    assert config.token_table_cosines[config.token_table] >= MIN_COSINE
    assert config.token_table_cosines[FULL_FORM] >= MIN_COSINE
    table = TokenTable.open(text, config.token_table)
    assert table.shape == (config.vocab_size, config.hidden)
    # The smaller table still gives sentence-transformers' vectors.
    reference = TextEncoder(config.spec, device="cpu").embed(TEXTS)
    assert _cosines(FastTextEncoder.load(text).embed(TEXTS), reference).min() >= MIN_COSINE


def test_int8_rows_keep_each_row_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 24)).astype(np.float32) * rng.uniform(0.01, 5, (50, 1))
    table[7] = 0.0
    values, scales = int8_rows(table)
    assert values.dtype == np.int8 and scales.dtype == np.float32
    back = values.astype(np.float32) * scales[:, None]
    assert np.all(np.abs(back - table) <= scales[:, None] / 2 + 1e-6)
    assert np.all(np.abs(values).max(axis=1)[np.arange(50) != 7] == 127)
    assert not back[7].any()


def test_a_table_form_that_strays_is_not_kept_and_says_why(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = token_table.write_token_table
    noise = np.random.default_rng(0)

    def stray(directory: Path, table: np.ndarray, form: str) -> None:
        if form != FULL_FORM:  # every smaller form loses the table
            table = noise.standard_normal(table.shape).astype(np.float32)
        real(directory, table, form)

    monkeypatch.setattr(token_table, "write_token_table", stray)  # where the forms are tried
    out = export_text_encoder(str(tiny.text_plain), tmp_path / "out")
    config = FastTextConfig.read(out)
    assert config.token_table == FULL_FORM
    cosines = config.token_table_cosines
    assert set(cosines) == {"int8", "float16", FULL_FORM}
    assert cosines["int8"] < MIN_COSINE and cosines["float16"] < MIN_COSINE
    assert cosines[FULL_FORM] >= MIN_COSINE
    assert not (out / SCALES_NAME).exists()
    assert np.load(out / EMBEDDINGS_NAME, mmap_mode="r").dtype == np.float32
    reference = TextEncoder(str(tiny.text_plain), device="cpu").embed(list(VERIFY_TEXTS))
    fast = FastTextEncoder.load(out).embed(list(VERIFY_TEXTS))
    assert _cosines(fast, reference).min() >= MIN_COSINE


def test_a_table_that_is_not_the_form_its_config_names_is_refused(exported: Path) -> None:
    from hanclip_model.errors import BundleError

    text = exported / TEXT_ENCODER_DIR
    config = FastTextConfig.read(text)
    wrong = "float16" if config.token_table != "float16" else "int8"
    data = json.loads((text / CONFIG_NAME).read_text(encoding="utf-8"))
    (text / CONFIG_NAME).unlink()  # a link to the cache's: the cache keeps its own
    (text / CONFIG_NAME).write_text(json.dumps({**data, "token_table": wrong}), "utf-8")
    with pytest.raises(BundleError, match="not the"):
        FastTextEncoder.load(text)


# -- opening only what has work ----------------------------------------------------------------


def test_index_with_nothing_to_embed_opens_no_encoder(
    cli, exported: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _record_sessions(monkeypatch)
    empty, library = tmp_path / "empty", tmp_path / "library"
    empty.mkdir()
    args = ("--library", library, "--model", exported, "--no-ocr", "--json")
    fresh = cli("index", empty, *args)
    assert fresh.exit_code == 0, fresh.stderr
    assert fresh.json()["added"] == 0 and opened == []
    again = cli("index", empty, *args)
    assert again.exit_code == 0, again.stderr
    assert opened == []

    added = cli("index", photos, *args)
    assert added.exit_code == 0 and added.json()["added"] == 8
    assert opened == [("image", ENCODER_NAME, False)]  # photos need the image tower alone
    search = cli("search", "고양이", "--library", library, "--json")
    assert search.exit_code == 0, search.stderr
    assert opened[1:] == [("text", ENCODER_NAME, False)]


def test_a_broken_model_still_fails_before_a_library_is_made(
    cli, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the export's config is the check: a text export without one stops a fresh
    `index` before anything is created."""
    _without_torch(monkeypatch)
    (exported / TEXT_ENCODER_DIR / CONFIG_NAME).unlink()  # a link: the cache keeps its own
    empty, library = tmp_path / "empty", tmp_path / "library"
    empty.mkdir()
    result = cli("index", empty, "--library", library, "--model", exported, "--no-ocr")
    assert result.exit_code != 0
    assert "fast text encoder" in result.stderr
    assert not library.exists()


# -- bundles exported before ------------------------------------------------------------------


def test_a_bundle_exported_before_loads_and_gives_the_same_vectors(
    exported: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _old_layout(exported, tmp_path / "old")
    assert FastTextConfig.read(old / TEXT_ENCODER_DIR).format == 3
    paths = [str(p) for p in sorted(photos.rglob("*")) if p.is_file()]
    new_model = load_bundle(exported)
    new_images, new_texts = new_model.raw_image_embeddings(paths), new_model.embed_texts(TEXTS)

    opened = _record_sessions(monkeypatch)
    old_model = load_bundle(old)
    old_images, old_texts = old_model.raw_image_embeddings(paths), old_model.embed_texts(TEXTS)
    # Each opened as it was written: the pre-optimised graph, not optimised again.
    assert opened == [
        ("image", OPTIMIZED_ENCODER_NAME, True),
        ("text", OPTIMIZED_ENCODER_NAME, True),
    ]
    np.testing.assert_allclose(old_images, new_images, atol=1e-5)  # the same fp32 graph
    assert _cosines(old_texts, new_texts).min() >= MIN_COSINE  # float32 table vs smaller
    spec = FastTextConfig.read(old / TEXT_ENCODER_DIR).spec
    reference = TextEncoder(spec, device="cpu").embed(TEXTS)
    assert _cosines(old_texts, reference).min() >= MIN_COSINE


def test_a_bundle_exported_before_indexes_and_searches_without_torch(
    cli, exported: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _old_layout(exported, tmp_path / "old")
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path / "empty-cache"))
    _without_torch(monkeypatch)
    library = tmp_path / "library"
    result = cli("index", photos, "--library", library, "--model", old, "--no-ocr", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 8
    search = cli("search", "고양이", "--library", library, "--json")
    assert search.exit_code == 0 and len(search.json()) == 8


def test_a_cached_export_of_the_format_before_serves_where_none_can_be_made(
    exported: Path, tmp_path: Path
) -> None:
    old = _old_layout(exported, tmp_path / "old")
    spec = FastTextConfig.read(old / TEXT_ENCODER_DIR).spec
    cache = tmp_path / "cache"
    assert cached_fast_text(spec, cache) is None
    before = fast_text_dir(cache, spec, 3)
    shutil.copytree(old / TEXT_ENCODER_DIR, before)
    assert cached_fast_text(spec, cache) == before
    assert FastTextEncoder.load(before).embed(TEXTS).shape == (len(TEXTS), 32)
