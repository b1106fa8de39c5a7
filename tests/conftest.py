"""Shared fixtures: tiny offline models, bundles, photo folders, and a CLI runner."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from served import Served, running_server
from typer.testing import CliRunner

from hanclip_eval.tiny_models import (
    build_tiny_open_clip,
    build_tiny_sentence_transformer,
    write_bundle_dir,
    write_photo_folder,
)

EMBED_DIM = 32
HEADS_DIM = 16

# No test may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

# `python benchmarks/NAME.py` puts benchmarks/ on sys.path, and the scripts import benchkit,
# their own packages and each other from there: so do the tests (tests/benchscripts.py).
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@dataclass(frozen=True)
class TinyModels:
    image_spec: str  # "local-dir:..." open_clip, EMBED_DIM-d
    text_dense: Path  # sentence-transformers with a final Dense to EMBED_DIM
    text_plain: Path  # sentence-transformers, 32-d mean pooling, no Dense
    plain_bundle: Path  # heads null, written the way an outside tool would
    heads_bundle: Path  # random heads projecting both sides to HEADS_DIM


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    from trainer.heads import HanclipHeads

    root = tmp_path_factory.mktemp("models")
    image_spec = build_tiny_open_clip(root / "clip", embed_dim=EMBED_DIM)
    text_dense = build_tiny_sentence_transformer(root / "st_dense", out_dim=EMBED_DIM)
    text_plain = build_tiny_sentence_transformer(root / "st_plain")
    plain_bundle = write_bundle_dir(root / "plain", image_spec, text_dense, heads=None)
    heads_bundle = write_bundle_dir(
        root / "heads", image_spec, text_plain, heads="heads.safetensors", name="tiny-heads"
    )
    import torch

    torch.manual_seed(0)
    heads = HanclipHeads(image_dim=EMBED_DIM, text_dim=32, out_dim=HEADS_DIM).eval()
    heads.save(heads_bundle / "heads.safetensors")
    return TinyModels(image_spec, text_dense, text_plain, plain_bundle, heads_bundle)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "사진"
    write_photo_folder(folder, count=8)
    return folder


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return tmp_path / "library"


@pytest.fixture(scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the whole session: fast-text exports of the tiny models are made once.
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _cache_dir: Path
) -> Iterator[None]:
    monkeypatch.setenv("HANCLIP_HOME", str(tmp_path / "default-home"))
    monkeypatch.setenv("HANCLIP_CACHE", str(_cache_dir))
    monkeypatch.delenv("HANCLIP_MODEL", raising=False)
    monkeypatch.setenv("HANCLIP_DEVICE", "cpu")
    # A search answers on its own unless a test asks for a running server's answer
    # (tests/test_search_via_server.py): tests comparing the two must compare two answers.
    monkeypatch.setenv("HANCLIP_VIA_SERVER", "0")
    monkeypatch.setenv("HANCLIP_RESIDENT", "0")  # and starts no background server
    yield


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


@pytest.fixture
def cli() -> CliResultRunner:
    return CliResultRunner()


class CliResultRunner:
    """Runs `hanclip ...` in-process through Typer's CliRunner, stdout and stderr apart."""

    def __call__(self, *args: str | os.PathLike) -> CliResult:
        from hanclip_cli.cli import app

        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def fast_search(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs `hanclip search ARGV` through the console entry point's path without Typer, as
    the installed script does; returns (exit code, stderr)."""
    from hanclip_cli import entry

    def run(argv: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["hanclip", "search", *argv])
        monkeypatch.setenv("HANCLIP_FAST_CLI", "1")
        with pytest.raises(SystemExit) as exit_info:
            entry.main()
        return exit_info.value.code, capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def served_library(tiny: TinyModels, tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path):
    """(library, photos): 12 photos indexed with the tiny plain bundle, shared by the session's
    server tests (which only read it)."""
    root = tmp_path_factory.mktemp("served")
    photos = root / "사진"
    write_photo_folder(photos, count=12)
    library = root / "library"
    index_once(photos, library, tiny.plain_bundle, home=root / "home", cache=_cache_dir)
    return library, photos


def index_once(photos: Path, library: Path, model: Path, *, home: Path, cache: Path) -> None:
    """`hanclip index PHOTOS` into `library` with the tests' settings, for a fixture wider
    than one test (which the per-test environment does not reach): made once, then read."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANCLIP_CACHE", str(cache))
        patch.setenv("HANCLIP_DEVICE", "cpu")
        patch.setenv("HANCLIP_HOME", str(home))
        result = CliResultRunner()("index", photos, "--library", library, "--model", model)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="session")
def served(served_library: tuple[Path, Path], _cache_dir: Path) -> Iterator[Served]:
    """A `hanclip serve` process on `served_library`, for the whole session."""
    library, photos = served_library
    with running_server(library, photos, _cache_dir) as server:
        yield server


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """Tensors as small as the synthetic worlds' gain nothing from two threads, and on a busy
    machine the hand-offs between them cost seconds per epoch: a module of such tests runs
    torch on one thread (`pytestmark = pytest.mark.usefixtures("single_torch_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright, for one module of browser tests (the
    modules skip themselves where either is missing: `test_serve_browser._browser_missing`)."""
    from playwright.sync_api import sync_playwright

    from hanclip_eval.server_process import CHROMIUM, HEADLESS_CHROMIUM_ARGS

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(HEADLESS_CHROMIUM_ARGS)
        )
        try:
            yield launched
        finally:
            launched.close()
