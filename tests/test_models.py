"""`hanclip models`: listing the built-in and installed bundles, installing a trained one,
`--default`, and the model card a trained bundle carries."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from hanclip_library.library import default_model
from hanclip_model.bundle import SEARCH_BUILTINS, read_bundle, resolve_bundle
from trainer.card import CARD_NAME, render_card, write_card

ENTRY_KEYS = {
    "name",
    "kind",
    "path",
    "image_model",
    "text_model",
    "language",
    "trained_on",
    "calibrated",
    "in_use",
    "default",
    "card",
    "error",
}
INSTALL_KEYS = ENTRY_KEYS | {"already_installed", "replaced", "library_model", "reembed", "notes"}

TRAINING = {
    "hyperparameters": {"epochs": 3, "batch_size": 64, "lr": 0.001, "tau_inter": 0.01},
    "banks": {
        "english_captions": 1200,
        "images": 300,
        "korean_captions": 900,
        "source": "corpora",
        "english": "/data/en.txt",
        "target": "/data/ko.txt",
        "unreadable_images": 2,
        "base_model": "hanclip-base",
    },
    "seed": 0,
    "epochs_trained": 3,
    "loss": {"first": 4.25, "last": 1.5, "min": 1.4375},
    "seconds": {"pseudo_pairs": 12.5, "training": 3725.0},
    "device": "cuda",
    "held_out": {"xtd10-ko": {"R@1": 0.41, "R@5": 0.72}, "cifar10": {"accuracy": 0.88}},
    "notes_from_the_future": {"shiny": True},
}
CALIBRATION = {"a": 12.5, "b": -3.25, "pairs": 5000}


def _write_manifest(bundle: Path, **changes: object) -> Path:
    manifest = bundle / "hanclip.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data.update(changes)
    manifest.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return bundle


@pytest.fixture
def trained(tiny, tmp_path: Path) -> Path:
    """A copy of the tiny heads bundle that reads as a trained, calibrated Korean one."""
    bundle = shutil.copytree(tiny.heads_bundle, tmp_path / "학습결과" / "trained")
    _write_manifest(bundle, training=TRAINING, calibration=CALIBRATION, language="ko")
    write_card(bundle)
    return bundle


def _models(cli, library: Path) -> list[dict]:
    result = cli("models", "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def _install(cli, library: Path, source: Path, *args: str) -> dict:
    result = cli("models", "install", source, "--library", library, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


def _index(cli, photos: Path, library: Path, model: Path) -> None:
    result = cli("index", photos, "--library", library, "--model", model, "--json")
    assert result.exit_code == 0, result.stderr


def _one_line_error(result) -> str:
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# -- listing ---------------------------------------------------------------------------------


def test_lists_the_built_ins_with_every_field(cli, library):
    entries = _models(cli, library)
    # Every field of before, and what a built-in is worth and costs (issue 25).
    assert all(set(entry) == ENTRY_KEYS | {"published", "measured"} for entry in entries)
    builtins = {e["name"]: e for e in entries if e["kind"] == "built-in"}
    # hanclip-base is a base for `train`, not a search model: not offered
    assert set(builtins) == set(SEARCH_BUILTINS) and "hanclip-base" not in builtins
    mclip = builtins["mclip"]
    assert mclip["image_model"] == "ViT-B-32:openai"
    assert "multilingual" in mclip["text_model"] and mclip["language"] == "multilingual"
    assert mclip["path"] is None and mclip["trained_on"] == "—" and mclip["calibrated"] is False
    # No library, nothing installed: the built-in default (the rule's pick) is the one in
    # use, and only it.
    assert [e["name"] for e in entries if e["in_use"]] == [default_model()]
    assert not library.exists()  # listing writes nothing


def test_models_alone_lists_them(cli, library, monkeypatch):
    """`hanclip models` with no option lists the models of the library the environment
    names (it once printed its help and an empty error)."""
    monkeypatch.setenv("HANCLIP_HOME", str(library))
    result = cli("models")
    assert result.exit_code == 0, result.stderr
    assert "mclip" in result.stdout and "Usage" not in result.stdout and not result.stderr


def test_the_table_for_people(cli, library, trained):
    _install(cli, library, trained, "--default")
    result = cli("models", "--library", library)
    assert result.exit_code == 0, result.stderr
    assert "mclip" in result.stdout and "tiny-heads (default)" in result.stdout
    assert "corpora" in result.stdout and "yes" in result.stdout
    assert "in use: tiny-heads" in result.stdout
    assert CARD_NAME in result.stdout


def test_help_has_korean_examples(cli):
    for args in (("models", "--help"), ("models", "install", "--help")):
        result = cli(*args)
        assert result.exit_code == 0
        assert "Examples" in result.stdout and "한국어" in result.stdout


def test_the_library_model_elsewhere_is_listed_in_use(cli, tiny, photos, library):
    _index(cli, photos, library, tiny.heads_bundle)
    entries = _models(cli, library)
    [used] = [e for e in entries if e["in_use"]]
    assert used["kind"] == "library" and used["name"] == "tiny-heads"
    assert Path(used["path"]) == tiny.heads_bundle.resolve()


def test_an_unreadable_installed_bundle_is_listed_with_its_error(cli, library):
    broken = library / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "hanclip.json").write_text("{not json", encoding="utf-8")
    [entry] = [e for e in _models(cli, library) if e["kind"] == "installed"]
    assert entry["name"] == "broken" and "cannot read" in entry["error"]


# -- installing ------------------------------------------------------------------------------


def test_a_trained_bundle_installs_and_is_listed_with_its_card(cli, library, trained):
    result = _install(cli, library, trained)
    assert set(result) == INSTALL_KEYS
    target = library / "models" / "tiny-heads"  # the bundle's own name
    assert result["path"] == str(target) and result["kind"] == "installed"
    assert (target / "heads.safetensors").is_file() and (target / CARD_NAME).is_file()
    assert result["replaced"] is result["already_installed"] is False
    assert not [p for p in (library / "models").iterdir() if p.name.startswith(".")]

    [entry] = [e for e in _models(cli, library) if e["kind"] == "installed"]
    assert entry["name"] == "tiny-heads" and entry["language"] == "ko"
    assert entry["calibrated"] is True
    assert entry["trained_on"] == (
        "corpora: 1,200 English captions, 900 Korean captions, 300 photos"
    )
    assert entry["card"] == str(target / CARD_NAME)
    assert entry["image_model"] == read_bundle(trained).image_model
    # No library yet and the only bundle in models/: the one a search would use.
    assert entry["in_use"] is True and entry["default"] is False
    assert read_bundle(target).fingerprint == read_bundle(trained).fingerprint


def test_name_option_and_a_second_install_of_the_same_bundle(cli, library, trained):
    first = _install(cli, library, trained, "--name", "내 모델")
    assert first["name"] == "내 모델" and Path(first["path"]).name == "내 모델"
    again = _install(cli, library, trained, "--name", "내 모델")
    assert again["already_installed"] is True and again["replaced"] is False


def test_default_makes_search_use_it(cli, tiny, photos, library, trained):
    from hanclip_library.vector_index import load_index

    # Indexed with the plain bundle, which shares the trained bundle's image model.
    _index(cli, photos, library, tiny.plain_bundle)
    result = _install(cli, library, trained, "--default")
    target = library / "models" / "tiny-heads"
    assert result["default"] is True and result["in_use"] is True
    assert result["library_model"] is True and result["reembed"] is None
    assert (library / "models" / "default").resolve() == target.resolve()

    search = cli("search", "바다", "--library", library, "--json")
    assert search.exit_code == 0, search.stderr
    assert len(search.json()) == 8 and "mclip" not in search.stderr
    assert load_index(library).fingerprint == resolve_bundle(target).fingerprint
    info = cli("info", "--library", library, "--json").json()
    assert info["model"] == str(target)

    entries = _models(cli, library)
    [used] = [e for e in entries if e["in_use"]]
    assert used["name"] == "tiny-heads" and used["default"] is True
    assert used["kind"] == "installed"


def test_default_without_a_library_is_what_index_then_uses(cli, tiny, photos, library, trained):
    from hanclip_library.vector_index import load_index

    _install(cli, library, tiny.plain_bundle, "--name", "plain")
    _install(cli, library, trained, "--default")
    _index_result = cli("index", photos, "--library", library, "--json")
    assert _index_result.exit_code == 0, _index_result.stderr
    assert load_index(library).dim == 16  # the heads bundle, not plain (32) nor mclip


def test_default_with_another_image_model_says_the_reembed_command(
    cli, tiny, photos, library, tmp_path
):
    from hanclip_eval.tiny_models import build_tiny_open_clip, write_bundle_dir

    other_clip = build_tiny_open_clip(tmp_path / "other-clip", embed_dim=32, seed=7)
    other = write_bundle_dir(tmp_path / "other", other_clip, tiny.text_dense, name="other")
    _index(cli, photos, library, tiny.plain_bundle)

    result = cli("models", "install", other, "--library", library, "--default", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    target = library / "models" / "other"
    assert report["library_model"] is False and report["in_use"] is False
    quoted = shlex.quote(str(photos))
    assert report["reembed"].startswith(f"hanclip index {quoted} --library {library}")
    assert report["reembed"].endswith(f"--model {target} --reembed")
    assert report["reembed"] in result.stderr
    # The library keeps the model its photos fit; searching still works.
    assert cli("info", "--library", library, "--json").json()["model"] == str(tiny.plain_bundle)
    search = cli("search", "바다", "--library", library, "--json")
    assert search.exit_code == 0, search.stderr
    # Running the command moves the library to the new bundle.
    reembed = cli("index", photos, "--library", library, "--model", target, "--reembed")
    assert reembed.exit_code == 0, reembed.stderr
    [used] = [e for e in _models(cli, library) if e["in_use"]]
    assert used["name"] == "other"


def test_a_library_that_followed_the_default_link_keeps_its_bundle(
    cli, tiny, photos, library, tmp_path
):
    from hanclip_eval.tiny_models import build_tiny_open_clip, write_bundle_dir

    _install(cli, library, tiny.plain_bundle, "--name", "plain", "--default")
    indexed = cli("index", photos, "--library", library, "--json")  # through models/default
    assert indexed.exit_code == 0, indexed.stderr
    other_clip = build_tiny_open_clip(tmp_path / "other-clip", embed_dim=32, seed=7)
    other = write_bundle_dir(tmp_path / "other", other_clip, tiny.text_dense, name="other")
    report = _install(cli, library, other, "--default")
    assert report["reembed"] and report["library_model"] is False
    info = cli("info", "--library", library, "--json").json()
    assert info["model"] == str((library / "models" / "plain").resolve())
    search = cli("search", "바다", "--library", library, "--json")
    assert search.exit_code == 0, search.stderr


def test_default_waits_for_no_index(cli, tiny, photos, library, trained):
    from hanclip_library.library import writer_lock

    _index(cli, photos, library, tiny.plain_bundle)
    with writer_lock(library):
        busy = cli("models", "install", trained, "--library", library, "--default")
    assert "another `hanclip index`" in _one_line_error(busy)
    assert not (library / "models").exists()


def test_hanclip_model_elsewhere_is_listed_in_use(cli, tiny, library, monkeypatch):
    monkeypatch.setenv("HANCLIP_MODEL", str(tiny.heads_bundle))
    [used] = [e for e in _models(cli, library) if e["in_use"]]
    assert used["kind"] == "env" and used["name"] == "tiny-heads"


def test_relative_paths_still_resolve_after_install(cli, tiny, library, tmp_path):
    source = tmp_path / "src" / "bundle"
    (source / "weights").mkdir(parents=True)
    shutil.copy(tiny.heads_bundle / "heads.safetensors", source / "weights" / "heads.safetensors")
    shutil.copytree(tiny.text_plain, source / "text")
    shared = tmp_path / "src" / "shared-text"
    shutil.copytree(tiny.text_plain, shared)
    image = read_bundle(tiny.heads_bundle).image_model
    manifest = {
        "format": 1,
        "name": "relative",
        "image_model": image,
        "text_model": "text",
        "heads": "weights/heads.safetensors",
    }
    (source / "hanclip.json").write_text(json.dumps(manifest), encoding="utf-8")

    target = Path(_install(cli, library, source)["path"])
    spec = read_bundle(target)
    assert spec.heads_path == target.resolve() / "weights" / "heads.safetensors"
    assert spec.text_model == str(target.resolve() / "text")

    # Paths that lead out of the bundle: the heads come along, a text model becomes absolute.
    outside = tmp_path / "src" / "outside"
    outside.mkdir()
    shutil.copy(tiny.heads_bundle / "heads.safetensors", tmp_path / "src" / "heads.safetensors")
    manifest.update(name="outside", text_model="../shared-text", heads="../heads.safetensors")
    (outside / "hanclip.json").write_text(json.dumps(manifest), encoding="utf-8")
    target = Path(_install(cli, library, outside)["path"])
    shutil.rmtree(outside)
    (tmp_path / "src" / "heads.safetensors").unlink()
    spec = read_bundle(target)
    assert spec.heads_path == target.resolve() / "heads.safetensors"
    assert spec.text_model == str(shared.resolve())
    from hanclip_model import load_bundle

    assert load_bundle(str(target)).embed_texts(["바다"]).shape == (1, 16)


def _bad_sources(tiny, tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "bad" / "empty"
    empty.mkdir(parents=True)
    no_heads = shutil.copytree(tiny.heads_bundle, tmp_path / "bad" / "no-heads")
    (no_heads / "heads.safetensors").unlink()
    garbage = shutil.copytree(tiny.heads_bundle, tmp_path / "bad" / "garbage-heads")
    (garbage / "heads.safetensors").write_bytes(b"not a safetensors file")
    dangling = shutil.copytree(tiny.heads_bundle, tmp_path / "bad" / "dangling")
    os.symlink(tmp_path / "nowhere.bin", dangling / "extra.bin")
    bad_json = shutil.copytree(tiny.heads_bundle, tmp_path / "bad" / "bad-json")
    (bad_json / "hanclip.json").write_text("[1, 2", encoding="utf-8")
    return {
        "missing folder": tmp_path / "bad" / "nowhere",
        "no hanclip.json": empty,
        "heads missing": no_heads,
        "heads not safetensors": garbage,
        "a file that cannot be read": dangling,
        "broken manifest": bad_json,
    }


def test_a_bad_source_leaves_models_untouched(cli, tiny, library, tmp_path, trained):
    for what, source in _bad_sources(tiny, tmp_path).items():
        result = cli("models", "install", source, "--library", library, "--default")
        _one_line_error(result)
        assert not library.exists(), what  # not even models/ is made
    _install(cli, library, trained, "--default")
    before = _tree(library / "models")
    for what, source in _bad_sources(tiny, tmp_path / "again").items():
        for extra in ((), ("--name", "tiny-heads", "--force")):
            result = cli("models", "install", source, "--library", library, "--default", *extra)
            _one_line_error(result)
            assert _tree(library / "models") == before, what
    assert read_bundle(library / "models" / "default").name == "tiny-heads"


def test_a_name_clash_needs_force(cli, tiny, library, trained):
    _install(cli, library, trained)
    target = library / "models" / "tiny-heads"
    manifest = (target / "hanclip.json").read_text(encoding="utf-8")
    clash = cli(
        "models", "install", tiny.plain_bundle, "--library", library, "--name", "tiny-heads"
    )
    assert "--force" in _one_line_error(clash)
    assert (target / "hanclip.json").read_text(encoding="utf-8") == manifest

    replaced = _install(cli, library, tiny.plain_bundle, "--name", "tiny-heads", "--force")
    assert replaced["replaced"] is True
    assert read_bundle(target).heads_path is None  # the plain bundle now
    assert not (target / "heads.safetensors").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "default", ".hidden", "..", ""])
def test_a_name_that_is_no_folder_name_is_refused(cli, library, trained, name):
    result = cli("models", "install", trained, "--library", library, "--name", name)
    _one_line_error(result)
    assert not library.exists()


def test_a_built_in_name_is_not_installed(cli, library):
    assert "built-in" in _one_line_error(cli("models", "install", "mclip", "--library", library))


def test_a_bundle_name_is_made_a_folder_name():
    from hanclip_library.installed import folder_name

    assert folder_name("hanclip ko/v2", "x") == "hanclip-ko-v2"
    assert folder_name("../..", "학습결과") == "학습결과"
    assert folder_name("default", "default") == "bundle"


def test_default_replaces_a_hand_made_default_folder_only_with_force(cli, tiny, library, trained):
    hand_made = library / "models" / "default"
    shutil.copytree(tiny.plain_bundle, hand_made)
    refused = cli("models", "install", trained, "--library", library, "--default")
    assert "--force" in _one_line_error(refused)
    assert not (library / "models" / "tiny-heads").exists()
    _install(cli, library, trained, "--default", "--force")
    assert hand_made.is_symlink() and read_bundle(hand_made).name == "tiny-heads"


# -- the model card --------------------------------------------------------------------------


def test_card_has_every_section_from_a_full_manifest(tmp_path):
    manifest = {
        "format": 1,
        "name": "hanclip-ko",
        "language": "ko",
        "image_model": "ViT-B-32:openai",
        "text_model": "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        "heads": "heads.safetensors",
        "dims": {"image": 512, "text": 384, "output": 512},
        "training": TRAINING,
        "calibration": CALIBRATION,
        "exporter": "someone else's key",
    }
    path = write_card(tmp_path, manifest)
    assert path == tmp_path / CARD_NAME
    card = path.read_text(encoding="utf-8")
    for text in (
        "# hanclip-ko",
        "Language: ko",
        "`ViT-B-32:openai`",
        "paraphrase-multilingual-MiniLM-L12-v2",
        "## Training data",
        "English captions: 1,200",
        "Target-language captions: 900",
        "Photos (unlabeled): 300",
        "`/data/ko.txt`",
        "## Hyperparameters",
        "| `batch_size` | 64 |",
        "| `lr` | 0.001 |",
        "## Training run",
        "Device: cuda",
        "pseudo_pairs 12.5 s, training 1 h 02 min",
        "Loss: first 4.25, last 1.5, min 1.438",
        "## Calibration",
        "a = 12.5, b = -3.25",
        "Fitted on: 5,000 pairs",
        "Reliable below 10 % and above 90 %; in between a rough guide",
        "## Held-out results",
        "| xtd10-ko | 0.41 | 0.72 | — |",
        "| cifar10 | — | — | 0.88 |",
        "## Other details",
        "notes_from_the_future",
        "exporter: someone else's key",
        "hanclip models install",
    ):
        assert text in card, text


def test_card_from_a_minimal_or_odd_manifest_does_not_fail(tmp_path):
    minimal = {"format": 1, "name": "x", "image_model": "a", "text_model": "b", "heads": None}
    card = render_card(minimal)
    assert "# x" in card and "Language: —" in card and "Not calibrated." in card
    assert "Reliable below" not in card
    assert "## Held-out results\n\n—" in card and "none (image and text" in card
    odd = {
        "training": {"banks": "?", "seconds": 5, "loss": None, "held_out": [1, 2]},
        "calibration": 3,
    }
    card = render_card(odd)
    assert "# hanclip bundle" in card and "5.0 s" in card
    assert render_card({})  # nothing at all still makes a card


def test_card_is_read_from_the_bundle_when_no_manifest_is_given(trained):
    card = (trained / CARD_NAME).read_text(encoding="utf-8")
    assert "# tiny-heads" in card and "a = 12.5, b = -3.25" in card
