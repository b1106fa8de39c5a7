"""Make docs/serve-timeline.png, docs/serve.png and docs/serve-viewer.png: the `hanclip serve`
page over the tiny demo library as it opens (the timeline, its photos dated over a few months),
searched for "바다 위 노을", and the large view of its first photo.

    python docs/screenshot.py [--out docs] [--chromium /usr/bin/chromium] [--font-dir DIR]

Everything runs offline: the demo's random-weight models and photos are written to a temporary
folder (as `hanclip-demo` does), indexed with `hanclip index`, and served by `hanclip serve
--port 0`; a headless Chromium driven by Playwright takes the pictures. Hangul needs a Korean
font that fontconfig can find (`fc-list :lang=ko`); where the system has none, --font-dir names
a folder of .ttf/.otf files to add for this run only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from hanclip_eval.server_process import CHROMIUM, HEADLESS_CHROMIUM_ARGS, spawned_server

QUERY = "바다 위 노을"
VIEWPORT = {"width": 1280, "height": 800}


def hanclip(*args: str | os.PathLike, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "hanclip_cli", *map(str, args)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def font_env(font_dir: Path | None, work: Path) -> dict[str, str]:
    """The browser's environment: with --font-dir, a fontconfig file that adds that folder."""
    env = dict(os.environ)
    if font_dir is None:
        if shutil.which("fc-list"):
            found = subprocess.run(["fc-list", ":lang=ko"], capture_output=True, text=True)
            if not found.stdout.strip():
                print("warning: no Korean font found (fc-list :lang=ko); Hangul will show as boxes")
        return env
    conf = work / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{font_dir.resolve()}</dir>\n"
        f"  <cachedir>{work / 'fontcache'}</cachedir>\n</fontconfig>\n",
        encoding="utf-8",
    )
    env["FONTCONFIG_FILE"] = str(conf)
    return env


def take(url: str, out: Path, chromium: str, env: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=list(HEADLESS_CHROMIUM_ARGS), env=env
        )
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1, locale="ko-KR")
            page.goto(url)
            page.wait_for_selector("#view .month .tile")
            wait_for_images(page, "#view .tile img")
            page.mouse.move(0, 0)
            page.screenshot(path=out / "serve-timeline.png")
            print(f"wrote {out / 'serve-timeline.png'}")

            page.fill("#q", QUERY)
            page.press("#q", "Enter")
            page.wait_for_selector("#grid .tile")
            wait_for_images(page, "#grid .tile img")
            page.mouse.move(0, 0)
            page.screenshot(path=out / "serve.png")
            print(f"wrote {out / 'serve.png'}")

            page.click("#grid .tile >> nth=0")
            page.wait_for_selector("#viewer[open]")
            page.wait_for_function(
                "() => document.querySelector('#viewer img.large').naturalWidth > 0"
            )
            page.wait_for_selector("#similar .tile")
            wait_for_images(page, "#similar .tile img")
            page.screenshot(path=out / "serve-viewer.png")
            print(f"wrote {out / 'serve-viewer.png'}")
        finally:
            browser.close()


def wait_for_images(page, selector: str) -> None:
    """Until every image under `selector` that is in view has loaded."""
    page.wait_for_function(
        """(selector) => [...document.querySelectorAll(selector)]
            .filter((img) => img.getBoundingClientRect().top < innerHeight)
            .every((img) => img.complete && img.naturalWidth > 0)""",
        arg=selector,
    )


def date_photos(photos: Path) -> None:
    """Spread the demo photos' file times over the months before July 2024, two or three a
    month, so the timeline has months to show (the files are the demo's own copies)."""
    for number, path in enumerate(sorted(p for p in photos.rglob("*") if p.is_file())):
        month = 7 - number // 3
        when = datetime(
            2024 if month > 0 else 2023, month if month > 0 else month + 12, 20 - number
        )
        os.utime(path, (when.timestamp(), when.timestamp()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--font-dir", type=Path, help="a folder of Korean fonts to add")
    args = parser.parse_args()

    from hanclip_eval.demo import build_demo

    with tempfile.TemporaryDirectory(prefix="hanclip-screenshot-") as temp:
        work = Path(temp)
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            HANCLIP_HOME=str(work / "home"),
            HANCLIP_CACHE=str(work / "cache"),
            HANCLIP_DEVICE="cpu",
        )
        env.pop("HANCLIP_MODEL", None)
        demo = build_demo(work / "demo")
        date_photos(demo / "photos")
        library = work / "library"
        hanclip("index", demo / "photos", "--library", library, "--model", demo / "bundle", env=env)
        args.out.mkdir(parents=True, exist_ok=True)
        with spawned_server(["--library", str(library)], env=env) as server:
            take(server.url, args.out, args.chromium, font_env(args.font_dir, work))


if __name__ == "__main__":
    main()
