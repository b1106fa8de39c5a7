"""The first hour with the model side (issue 23): what a new user met in exports, training,
the slim install, the first offline run, the demo, `bench` and `--device`.

Each test names the point of the issue it holds: a download that failed is never remembered
(1), a failed `export --out` leaves nothing (4), `train --out` keeps a finished bundle (5),
the slim install answers in one line (6), the first offline run ends in one line (7), and
the other one-line errors of point 8 that belong to these commands.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from entrypoint import run_entry

from hanclip_eval.tiny_models import build_tiny_open_clip
from hanclip_model.encoders import ClipEncoder
from hanclip_model.errors import BundleError
from hanclip_model.fast_image import cache as fast_image_cache
from hanclip_model.fast_image.cache import ensure_fast_image, fast_image_dir, refusal
from trainer.synthetic import make_world

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCH_PACKAGES = ("torch", "torchvision", "transformers", "sentence_transformers", "open_clip")
DOWNLOAD_FAILED = (
    "Failed to download weights for tag 'openai': Failed to download file "
    "(open_clip_pytorch_model.bin) for timm/vit_base_patch32_clip_224.openai. Last error: An "
    "error happened while trying to locate the file on the Hub and we cannot find the requested "
    "files in the local cache. Please check your connection and try again or make sure your "
    "Internet connection is on."
)


def _one_error_line(stderr: str) -> str:
    lines = stderr.rstrip().split("\n")  # a blank line before it counts
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# -- 1. a failed download is never remembered -------------------------------------------------


def test_a_failed_download_is_not_remembered(tmp_path, monkeypatch):
    spec = build_tiny_open_clip(tmp_path / "clip", embed_dim=32)
    cache = tmp_path / "cache"
    tries = []

    def no_network(self):
        tries.append(self.spec)
        raise BundleError(f"cannot load image model {self.spec!r}: {DOWNLOAD_FAILED}")

    monkeypatch.setattr(ClipEncoder, "_clip", property(no_network))
    for _ in range(2):
        with pytest.raises(BundleError, match="Failed to download"):
            ensure_fast_image(spec, cache)
    assert tries == [spec, spec]  # tried again: nothing was recorded
    assert refusal(fast_image_dir(cache, spec)) is None


def test_a_refusal_holds_only_for_the_versions_that_made_it(tmp_path, monkeypatch):
    import hanclip_model.fast_image.export as fast_image_export

    spec = build_tiny_open_clip(tmp_path / "clip", embed_dim=32)
    cache = tmp_path / "cache"
    monkeypatch.setattr(fast_image_export, "MIN_COSINE", 1.5)  # no export can pass
    with pytest.raises(BundleError, match="disagrees"):
        ensure_fast_image(spec, cache)
    record = json.loads(
        fast_image_dir(cache, spec).with_name(fast_image_dir(cache, spec).name + ".refused.json")
        .read_text(encoding="utf-8")
    )  # fmt: skip
    assert set(record["versions"]) >= {"torch", "open_clip_torch", "onnxruntime"}

    monkeypatch.undo()
    newer = {**record["versions"], "onnxruntime": "99.0"}
    monkeypatch.setattr(fast_image_cache, "export_versions", lambda: newer)
    assert ensure_fast_image(spec, cache) == fast_image_dir(cache, spec)  # exported now


def test_export_force_retries_a_recorded_refusal(cli, tmp_path, monkeypatch):
    from hanclip_eval.tiny_models import build_tiny_sentence_transformer, write_bundle_dir

    image_spec = build_tiny_open_clip(tmp_path / "clip", embed_dim=32)
    text = build_tiny_sentence_transformer(tmp_path / "text", out_dim=32)
    bundle = write_bundle_dir(tmp_path / "bundle", image_spec, text, heads=None, name="b")
    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path / "cache"))
    target = fast_image_dir(tmp_path / "cache", image_spec)
    target.parent.mkdir(parents=True)
    versions = fast_image_cache.export_versions()
    record = {"format": 1, "spec": image_spec, "reason": "an old refusal", "versions": versions}
    target.with_name(target.name + ".refused.json").write_text(json.dumps(record))
    assert "an old refusal" in cli("export", bundle).stderr  # kept: same versions
    forced = cli("export", bundle, "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    assert refusal(target) is None


# -- 4. a failed export --out leaves nothing ----------------------------------------------------


def _export_fails(monkeypatch):
    def no_network(spec, cache_root, **kwargs):
        raise BundleError(f"cannot load image model {spec!r}: {DOWNLOAD_FAILED}")

    monkeypatch.setattr("hanclip_model.fast_image.cache.ensure_fast_image", no_network)
    monkeypatch.setattr("hanclip_model.device.torch_available", lambda: True)


def test_a_failed_export_out_leaves_nothing(cli, tmp_path, monkeypatch):
    _export_fails(monkeypatch)
    out = tmp_path / "mclip-onnx"
    result = cli("export", "mclip", "--out", out)
    assert result.exit_code == 2 and "Failed to download" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder either

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("export", "mclip", "--out", empty).exit_code == 2
    assert list(empty.iterdir()) == []


def test_a_failed_export_over_another_bundle_keeps_it(cli, tiny, tmp_path, monkeypatch):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny.heads_bundle, other)
    before = sorted((p.relative_to(other), p.read_bytes()) for p in other.rglob("*") if p.is_file())
    _export_fails(monkeypatch)
    assert cli("export", "mclip", "--out", other, "--force").exit_code == 2
    after = sorted((p.relative_to(other), p.read_bytes()) for p in other.rglob("*") if p.is_file())
    assert after == before


# -- 5. train --out keeps a finished bundle --------------------------------------------------


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory) -> list[str]:
    world = make_world(300, 300, 300, 50, d_img=32, d_txt=24, seed=0)
    folder = tmp_path_factory.mktemp("emb")
    names = {
        "--english-clip-emb": world.banks.english_clip,
        "--english-text-emb": world.banks.english_text,
        "--korean-emb": world.banks.korean_bank,
        "--image-emb": world.banks.image_bank,
    }
    args = []
    for flag, array in names.items():
        path = folder / f"{flag.strip('-')}.npy"
        np.save(path, np.asarray(array, dtype=np.float32))
        args += [flag, str(path)]
    return args + ["--batch-size", "64", "--image-model", "ViT-B-32", "--text-model", "t"]


def test_train_out_onto_a_finished_bundle_refuses_without_force(cli, embeddings, tmp_path):
    out = tmp_path / "bundle"
    first = cli("train", *embeddings, "--epochs", "3", "--out", out, "--json")
    assert first.exit_code == 0, first.stderr
    heads = (out / "heads.safetensors").read_bytes()

    again = cli("train", *embeddings, "--epochs", "1", "--out", out)
    assert "--force" in _one_error_line(again.stderr) and again.exit_code == 2
    assert (out / "heads.safetensors").read_bytes() == heads  # the 3-epoch bundle is kept

    forced = cli("train", *embeddings, "--epochs", "1", "--out", out, "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads((out / "hanclip.json").read_text())["training"]["epochs_trained"] == 1


def test_an_interrupted_run_into_its_bundle_folder_still_resumes(
    cli, embeddings, tmp_path, monkeypatch
):
    from trainer import train as train_module

    out = tmp_path / "bundle"
    assert cli("train", *embeddings, "--epochs", "2", "--out", out).exit_code == 0
    forced_state = out / ".train-state"
    real_save = train_module._save_checkpoint

    def stop_after_one_epoch(path, run, heads, optimizer, scheduler, loss_history):
        real_save(path, run, heads, optimizer, scheduler, loss_history)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", stop_after_one_epoch)
    cli("train", *embeddings, "--epochs", "3", "--out", out, "--force")
    assert (forced_state / "checkpoint.safetensors").is_file()
    monkeypatch.undo()
    resumed = cli("train", *embeddings, "--epochs", "3", "--out", out, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["epochs_resumed"] == 1


def test_every_file_of_a_trained_bundle_has_one_mode(cli, embeddings, tmp_path):
    out = tmp_path / "bundle"
    assert cli("train", *embeddings, "--epochs", "1", "--out", out).exit_code == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes


# -- 6. the slim install: one line, and --list-recipes without torch ----------------------------


def _slim(*args: str, tmp_path: Path, script: str = "hanclip") -> subprocess.CompletedProcess:
    """`script ARGS` in a fresh interpreter where torch and its family cannot be imported, as
    on `pip install hanclip` (the real slim venv is .ci/slim's)."""
    entry = "hanclip_eval.demo" if script == "hanclip-demo" else "hanclip_cli.entry"
    probe = (
        "import sys\n"
        f"for name in {TORCH_PACKAGES!r}:\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = [{script!r}, *{list(args)!r}]\n"
        f"from {entry} import main\n"
        "main()\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HANCLIP_CACHE": str(tmp_path / "cache"),
        "HANCLIP_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path
    )


def test_slim_list_recipes_needs_no_torch(tmp_path):
    done = _slim("train", "--list-recipes", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "coyo-mscoco-ko" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("hanclip", "train", "--english", "en.txt", "--target", "ko.txt", "--images", ".",
         "--out", "b"),
        ("hanclip", "bench", "--dataset", "latency", "--random-weights"),
        ("hanclip-demo", "demo"),
    ],
    ids=["train", "bench", "demo"],
)  # fmt: skip
def test_slim_commands_that_need_torch_say_so_in_one_line(tmp_path, args):
    done = _slim(*args[1:], tmp_path=tmp_path, script=args[0])
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "needs torch, which is not installed" in line and "hanclip[train]" in line
    assert not (tmp_path / "demo").exists() and not (tmp_path / "b").exists()


# -- 7. the first offline run: one line at the end ------------------------------------------


class _StderrNow(logging.Handler):
    """huggingface_hub's own handler: whatever stderr is when a record comes."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def test_the_first_offline_run_ends_in_one_line(cli, photos, tmp_path, monkeypatch):
    import huggingface_hub.constants
    import open_clip

    from hanclip_model import hub

    monkeypatch.setenv("HANCLIP_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    # What the trap needs: a root logger with no handler (pytest gives it its own), and
    # huggingface_hub's stderr handler.
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging.getLogger("huggingface_hub"), "handlers", [_StderrNow()])
    offline_seen = []

    def unreachable_hub(name, pretrained=None, **kwargs):
        offline_seen.append(huggingface_hub.constants.is_offline_mode())
        retries = logging.getLogger("huggingface_hub.utils._http")
        for attempt in range(1, 6):
            retries.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD")
            retries.warning(f"Retrying in 1s [Retry {attempt}/5].")
        logging.error(DOWNLOAD_FAILED)  # open_clip's module-level call
        raise RuntimeError(DOWNLOAD_FAILED)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", unreachable_hub)
    result = cli("index", photos, "--library", tmp_path / "library")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and not lines[0].startswith("error"), result.stderr  # the notice
    line = _one_error_line(lines[-1])
    from hanclip_library.library import default_model
    from hanclip_model.bundle import BUILTIN_BUNDLES

    image_model = BUILTIN_BUNDLES[default_model()].image_model  # the default's image tower
    assert image_model in line and "HF_HUB_OFFLINE=1" in line and "--model" in line
    assert "README" in line
    assert offline_seen and all(offline_seen)  # loaded as offline: no retries


def test_quick_start_says_where_to_go_without_network():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("```", 3)
    after_first_command = quick_start[2].split("\n\n", 2)[1]
    assert "without network" in after_first_command.lower(), after_first_command


# -- 8. the demo, bench's datasets, --device --------------------------------------------------


def test_demo_into_a_file_is_one_line(tmp_path, capsys):
    from hanclip_eval.demo import main

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main([str(photo)])
    assert exit_info.value.code == 2
    assert "not a folder" in _one_error_line(capsys.readouterr().err)


def test_bench_unknown_dataset_lists_every_dataset_latency_too(cli):
    result = cli("bench", "--dataset", "foo")
    line = _one_error_line(result.stderr)
    assert "unknown dataset 'foo'" in line and "latency" in line and "xtd10-ko" in line
    assert "--data-dir" not in line


@pytest.mark.parametrize(
    "args",
    [
        ["index", "."],
        ["search", "바다"],
        ["train", "--list-recipes"],
        ["bench", "--dataset", "latency", "--random-weights"],
        ["serve"],
    ],
)
def test_an_unknown_device_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_entry(monkeypatch, capsys, [*args, "--device", "tpu"], fast=False)
    line = _one_error_line(err)
    assert code == 2 and "tpu" in line and "cpu, cuda" in line, err
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_the_fast_search_checks_the_device_as_typer_does(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["search", "바다", "--device", "tpu"]
    fast = run_entry(monkeypatch, capsys, args, fast=True)
    typer = run_entry(monkeypatch, capsys, args, fast=False)
    assert fast == typer and fast[0] == 2 and "cpu, cuda" in _one_error_line(fast[2])


def test_an_unknown_device_from_the_environment_is_one_line(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HANCLIP_DEVICE", "tpu")
    args = ["index", str(photos), "--library", str(tmp_path / "library")]
    code, _, err = run_entry(monkeypatch, capsys, args, fast=False)
    line = _one_error_line(err)
    assert "HANCLIP_DEVICE" in line and "cpu, cuda" in line and code == 2
    assert not (tmp_path / "library").exists()
