"""Bundles on the hub: `hanclip models publish` and `hanclip models install hf-hub:…`, end to
end through the console entry, against a stand-in for the hub on 127.0.0.1
(`hub_standin.py`); nothing here reaches the network (a guard refuses any other host)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from entrypoint import run_entry
from hub_standin import TOKEN, HubStandIn

from hanclip_model.bundle import read_bundle
from trainer.card import CARD_NAME, write_card

REPO = "hanclip-test/tiny-ko"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in, with huggingface_hub pointed at it: its endpoint (read once, when it is
    imported, so both the constant and the URL template built from it), online, a cache and a
    token file of this test's own, and a write token in HF_TOKEN."""
    from huggingface_hub import constants

    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(f"the tests reach no network (asked for {host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    with HubStandIn() as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        monkeypatch.setattr(constants, "ENDPOINT", standin.url)
        template = standin.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield standin


@pytest.fixture
def portable(tiny, tmp_path: Path) -> Path:
    """A trained-looking tiny bundle that carries its encoders inside its folder (relative
    paths), as a bundle meant for the hub does."""
    bundle = tmp_path / "학습결과" / "tiny-hub"
    shutil.copytree(tiny.image_spec.removeprefix("local-dir:"), bundle / "image")
    shutil.copytree(tiny.text_plain, bundle / "text")
    shutil.copy(tiny.heads_bundle / "heads.safetensors", bundle / "heads.safetensors")
    (bundle / ".train-state").mkdir()  # a resume state: never published
    (bundle / ".train-state" / "state.json").write_text("{}", encoding="utf-8")
    _write(bundle, {"dims": {"image": 32, "text": 32, "output": 16}, "language": "ko"})
    write_card(bundle)
    return bundle


def _write(bundle: Path, changes: dict) -> Path:
    manifest = {
        "format": 1,
        "name": "tiny-hub",
        "image_model": "local-dir:image",
        "text_model": "text",
        "heads": "heads.safetensors",
    }
    path = bundle / "hanclip.json"
    if path.is_file():
        manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(changes)
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return bundle


def _hanclip(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    return run_entry(monkeypatch, capsys, [str(a) for a in args], fast=False)


def _ok(monkeypatch, capsys, *args: object) -> dict | list:
    code, out, err = _hanclip(monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _one_line(monkeypatch, capsys, *args: object) -> str:
    code, out, err = _hanclip(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    return lines[0]


def _installed(library: Path) -> list[str]:
    """Everything in models/, hidden staging folders included."""
    models = library / "models"
    return sorted(p.name for p in models.iterdir()) if models.is_dir() else []


def _publish(monkeypatch, capsys, bundle: Path | str, library: Path, repo: str = REPO) -> dict:
    return _ok(monkeypatch, capsys, "models", "publish", bundle, "--repo", repo, "-l", library)


# -- publish, then install and search --------------------------------------------------------


def test_publish_then_install_from_the_hub_and_search(
    hub, portable, photos, library, monkeypatch, capsys
):
    published = _publish(monkeypatch, capsys, portable, library)
    files = hub.files(REPO)
    assert published["commit"] == hub.repos[REPO].refs["main"]
    assert published["files"] == sorted(p for p in files if p != ".gitattributes")
    assert {"hanclip.json", "README.md", "heads.safetensors", "text/modules.json"} <= set(files)
    assert "image/open_clip_config.json" in files and CARD_NAME in files
    assert not [p for p in files if p.startswith(".train-state")]
    readme = files["README.md"].decode("utf-8")
    assert readme.startswith("---\nlibrary_name: hanclip\n") and "- ko\n" in readme
    assert f"hanclip models install hf-hub:{REPO} --default" in readme
    assert (portable / CARD_NAME).read_text(encoding="utf-8").split("\n")[0] in readme
    assert published["card"] == str(portable / CARD_NAME) and published["encoders"] == []
    assert published["install"] == f"hanclip models install hf-hub:{REPO}@{published['commit']}"

    result = _ok(
        monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library, "--default"
    )
    assert result["hub"] == f"hf-hub:{REPO}@{published['commit']}"
    assert result["name"] == "tiny-hub" and result["default"] is True
    target = library / "models" / "tiny-hub"
    assert _installed(library) == ["default", "tiny-hub"]
    spec = read_bundle(target)
    assert spec.text_model == str(target.resolve() / "text")
    assert spec.heads_path.read_bytes() == (portable / "heads.safetensors").read_bytes()

    # The same commit again: nothing is copied.
    again = _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    assert again["already_installed"] is True

    _ok(monkeypatch, capsys, "index", photos, "-l", library)  # with the library's default
    hits = _ok(monkeypatch, capsys, "search", "바다 위 노을", "-l", library)
    assert hits and all(photos in Path(hit["path"]).parents for hit in hits)
    assert all(seen.headers.get("host", "").startswith("127.0.0.1") for seen in hub.requests)


def test_install_at_a_revision(hub, portable, library, monkeypatch, capsys):
    first = _publish(monkeypatch, capsys, portable, library)["commit"]
    hub.tag(REPO, "v1", first)
    _write(portable, {"language": "ja", "name": "tiny-hub-2"})
    second = _publish(monkeypatch, capsys, portable, library)["commit"]
    assert second != first

    by_tag = _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}@v1", "-l", library)
    assert by_tag["hub"].endswith(f"@{first}") and by_tag["language"] == "ko"
    by_commit = _ok(
        monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}@{second}", "-l", library
    )
    assert by_commit["name"] == "tiny-hub-2" and by_commit["language"] == "ja"
    latest = _ok(
        monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library, "--name", "새것"
    )
    assert latest["hub"].endswith(f"@{second}")

    line = _one_line(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}@v9", "-l", library)
    assert "has no revision 'v9'" in line


# -- bad repositories: one line, nothing installed -------------------------------------------


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    return {
        p.relative_to(bundle).as_posix(): p.read_bytes()
        for p in bundle.rglob("*")
        if p.is_file() and not p.relative_to(bundle).as_posix().startswith(".")
    }


def _bad_repositories(hub: HubStandIn, portable: Path) -> dict[str, str]:
    good = _bundle_files(portable)
    manifest = json.loads(good["hanclip.json"])

    def with_manifest(**changes) -> dict[str, bytes]:
        return {**good, "hanclip.json": json.dumps({**manifest, **changes}).encode()}

    hub.commit("bad/no-manifest", {"README.md": b"# a model, but no hanclip bundle\n"})
    hub.commit("bad/dims", with_manifest(dims={"image": 512, "text": 32, "output": 16}))
    hub.commit("bad/heads", {**good, "heads.safetensors": good["heads.safetensors"][:100]})
    hub.commit("bad/outside", with_manifest(text_model="/home/publisher/models/text"))
    hub.commit("bad/escape", with_manifest(heads="../../../heads.safetensors"))
    hub.commit("bad/json", {**good, "hanclip.json": b'{"format": 1, "name": '})
    return {
        "bad/missing": "no repository bad/missing on the hub",
        "bad/no-manifest": "holds no hanclip.json",
        "bad/dims": "wrong dimensions",
        "bad/heads": "cannot read heads file",
        "bad/outside": "outside the repository",
        "bad/escape": "outside the repository",
        "bad/json": "cannot read",
    }


def test_bad_repositories_are_one_line_and_install_nothing(
    hub, portable, library, tmp_path, monkeypatch, capsys
):
    for repo, said in _bad_repositories(hub, portable).items():
        line = _one_line(monkeypatch, capsys, "models", "install", f"hf-hub:{repo}", "-l", library)
        assert said in line and "nothing was installed" in line, (repo, line)
        assert _installed(library) == [], repo
    # With a bundle installed and the default set, still nothing changes.
    _publish(monkeypatch, capsys, portable, library)
    _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library, "--default")
    before = _installed(library)
    for repo in _bad_repositories(hub, portable):
        args = ("models", "install", f"hf-hub:{repo}", "-l", library, "--default")
        _one_line(monkeypatch, capsys, *args, "--name", "tiny-hub", "--force")
        assert _installed(library) == before, repo
    assert read_bundle(library / "models" / "default").name == "tiny-hub"


def test_a_truncated_download_installs_nothing(hub, portable, library, monkeypatch, capsys):
    _publish(monkeypatch, capsys, portable, library)
    size = len(hub.files(REPO)["heads.safetensors"])
    hub.cut_short["heads.safetensors"] = size // 2
    line = _one_line(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    assert "was cut short" in line and "heads.safetensors" in line
    assert "nothing was installed" in line and _installed(library) == []

    hub.cut_short.clear()
    result = _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    installed = Path(result["path"]) / "heads.safetensors"
    assert installed.read_bytes() == (portable / "heads.safetensors").read_bytes()


def test_a_dropped_connection_is_resumed(hub, portable, library, monkeypatch, capsys):
    from huggingface_hub import constants

    # huggingface_hub keeps what it received in chunks of this size: smaller than the file,
    # so that the part before the drop is kept and the rest asked for.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    _publish(monkeypatch, capsys, portable, library)
    hub.drop_once["heads.safetensors"] = 8192
    result = _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    heads = [s for s in hub.requests if s.method == "GET" and s.path.endswith("heads.safetensors")]
    assert [s.headers.get("range") for s in heads] == [None, "bytes=8192-"]
    installed = Path(result["path"]) / "heads.safetensors"
    assert installed.read_bytes() == (portable / "heads.safetensors").read_bytes()

    # Fetched once, the files come from the cache: a second install downloads none.
    seen = len(hub.requests)
    _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library, "--name", "둘")
    assert not [s for s in hub.requests[seen:] if s.method == "GET" and "/resolve/" in s.path]


def test_offline_without_a_cached_copy_is_one_line(hub, portable, library, monkeypatch, capsys):
    from huggingface_hub import constants

    _publish(monkeypatch, capsys, portable, library)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    line = _one_line(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    assert "offline mode is on (HF_HUB_OFFLINE)" in line and "not in the local cache" in line
    assert _installed(library) == []

    # Fetched once, it installs offline from the cache.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = len(hub.requests)
    other = _ok(
        monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library, "--name", "둘째"
    )
    assert other["name"] == "둘째" and len(hub.requests) == seen


def test_a_hub_that_cannot_be_reached_is_one_line(hub, library, monkeypatch, capsys):
    from huggingface_hub import constants

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    template = closed + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    line = _one_line(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    assert "cannot be reached" in line and closed in line
    assert _installed(library) == []


def test_a_bad_spec_is_one_line(hub, library, monkeypatch, capsys):
    for spec in ("hf-hub:", "hf-hub:no-org", "hf-hub:a/b/c", "hf-hub:org/repo@"):
        line = _one_line(monkeypatch, capsys, "models", "install", spec, "-l", library)
        assert "hf-hub:ORG/REPO" in line, spec
    assert hub.requests == []


# -- publish: what goes up, and what is refused ----------------------------------------------


def test_publish_an_installed_bundle_with_its_onnx_encoders(
    hub, portable, library, monkeypatch, capsys
):
    for side in ("image", "text"):
        folder = portable / "encoders" / side
        folder.mkdir(parents=True)
        (folder / f"fast_{side}.json").write_text(json.dumps({"dim": 32}), encoding="utf-8")
        (folder / "encoder.onnx").write_bytes(b"onnx graph of the " + side.encode())
    _write(portable, {"encoders": {"image": "encoders/image", "text": "encoders/text"}})
    (portable / CARD_NAME).unlink()  # no card: one is rendered from the manifest
    _ok(monkeypatch, capsys, "models", "install", portable, "-l", library, "--name", "내 모델")

    published = _publish(monkeypatch, capsys, "내 모델", library)
    assert published["bundle"] == str((library / "models" / "내 모델").resolve())
    assert published["encoders"] == ["image", "text"] and published["card"] == "rendered"
    files = hub.files(REPO)
    assert files["encoders/text/encoder.onnx"] == b"onnx graph of the text"
    manifest = json.loads(files["hanclip.json"])
    # The installed copy names its folders absolutely; the hub's names them inside.
    assert manifest["text_model"] == "text" and manifest["image_model"] == "local-dir:image"
    assert manifest["encoders"] == {"image": "encoders/image", "text": "encoders/text"}
    assert files["README.md"].decode("utf-8").count("# tiny-hub") == 1

    result = _ok(monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library)
    assert (
        read_bundle(result["path"]).text_export == Path(result["path"]).resolve() / "encoders/text"
    )

    # An ONNX encoder of another width is refused like any other wrong dimension.
    hub.commit(REPO, {"encoders/text/fast_text.json": json.dumps({"dim": 64}).encode()})
    line = _one_line(
        monkeypatch, capsys, "models", "install", f"hf-hub:{REPO}", "-l", library, "--name", "x"
    )
    assert "wrong dimensions" in line and "the ONNX text encoder says 64" in line


def test_publish_refusals_are_one_line(hub, portable, tiny, library, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    args = ("models", "publish", portable, "--repo", REPO, "-l", library)
    monkeypatch.delenv("HF_TOKEN")
    assert "needs a Hugging Face token" in _one_line(monkeypatch, capsys, *args)
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    assert "refused the upload" in _one_line(monkeypatch, capsys, *args)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.refuse_writes = True
    assert "(403)" in _one_line(monkeypatch, capsys, *args)
    hub.refuse_writes = False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "offline mode is on" in _one_line(monkeypatch, capsys, *args)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert REPO not in hub.repos

    # The tiny test bundle names encoder folders elsewhere on this machine.
    line = _one_line(monkeypatch, capsys, "models", "publish", tiny.heads_bundle, "--repo", REPO)
    assert "outside its folder" in line
    line = _one_line(monkeypatch, capsys, "models", "publish", "mclip", "--repo", REPO)
    assert "built-in model" in line
    line = _one_line(monkeypatch, capsys, "models", "publish", portable, "--repo", "no-org")
    assert "hf-hub:ORG/REPO" in line
    _write(portable, {"dims": {"image": 48}})
    assert "wrong dimensions" in _one_line(monkeypatch, capsys, *args)
    assert REPO not in hub.repos


def test_help_has_korean_examples(monkeypatch, capsys):
    for command in (("models", "install"), ("models", "publish")):
        code, out, _ = _hanclip(monkeypatch, capsys, *command, "--help")
        assert code == 0 and "hf-hub:" in out and "한국어" in out
