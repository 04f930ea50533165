"""extension/dist as build.py assembles it: the extension's code with every module it imports
(some from web/src: the engine's worker and its client), the runtime, and under model/ exactly
what `py-engine tabs deploy` wrote (checked against the deploy manifest's hashes), plus the
background tabs replayed with corrections: a class-balanced sample of the default adapter's
training data."""

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from py_engine.tabs.categories import Categories
from py_engine.tabs.deploy import BACKGROUND_PER_CATEGORY
from py_engine.tabs.generator import generate

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "extension" / "dist"
IMPORT = re.compile(r"""\bfrom\s+["']\./([\w.-]+\.m?js)["']|new URL\(\s*["']\./([\w.-]+\.mjs)""")


@pytest.fixture(scope="module")
def dist():
    subprocess.run([sys.executable, str(ROOT / "build.py"), "build"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return DIST


def test_every_module_the_extension_loads_is_in_it(dist):
    manifest = json.loads((dist / "manifest.json").read_text())
    pages = [manifest["background"]["service_worker"], manifest["action"]["default_popup"],
             "offscreen.html", "groups.html"]
    seen, todo = set(), list(pages)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = dist / name
        assert path.is_file(), f"{name} is loaded but not in extension/dist"
        text = path.read_text()
        if name.endswith(".html"):
            todo += re.findall(r"""src=["']([\w.-]+\.m?js)["']""", text)
            todo += re.findall(r"""href=["']([\w.-]+\.css)["']""", text)
        elif name.endswith(("js", "mjs")):
            todo += [a or b for a, b in IMPORT.findall(text)]
    assert {"worker.mjs", "engine_client.mjs", "zip.mjs", "boot.mjs", "rules.mjs"} <= seen
    for name in seen:
        source = ROOT / "extension" / "src" / name
        source = source if source.is_file() else ROOT / "web" / "src" / name
        assert (dist / name).read_bytes() == source.read_bytes(), name


def test_the_model_is_what_tabs_deploy_wrote(dist):
    manifest = json.loads((dist / "model" / "manifest.json").read_text())
    assert manifest["written_by"] == "py-engine tabs deploy"
    for name, entry in manifest["files"].items():
        data = (dist / "model" / name).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name
    shipped = {p.relative_to(dist / "model").as_posix() for p in (dist / "model").rglob("*") if p.is_file()}
    assert shipped == set(manifest["files"]) | {"manifest.json", "background.jsonl"}


def test_the_background_tabs_are_a_balanced_sample_of_the_training_data(dist):
    record = json.loads((dist / "model" / "adapter" / "training.json").read_text())["config"] \
        if (dist / "model" / "adapter" / "training.json").is_file() else {}
    train, _, _ = generate(size=record.get("size", 10000), seed=record.get("seed", 0),
                           validation=record.get("validation", 0.1))
    trained = {(t["url"], t["title"], t["label"]) for t in train}
    rows = [json.loads(line) for line in (dist / "model" / "background.jsonl").read_text().splitlines()]
    assert all((r["url"], r["title"], r["label"]) in trained for r in rows)
    assert Counter(r["label"] for r in rows) == {name: BACKGROUND_PER_CATEGORY
                                                  for name in Categories.default().names()}


def test_the_notice_names_each_part_others_wrote_and_its_license(dist):
    notice = (dist / "NOTICE.txt").read_text()
    listed = json.loads((dist / "model" / "listed_domains.json").read_text())
    assert (dist / "pyodide" / "pyodide.asm.wasm").is_file() and "Mozilla Public License 2.0" in notice
    config = json.loads((dist / "model" / "base" / "config.json").read_text())
    assert config["model_type"] == "bert" and "all-MiniLM-L6-v2" in notice and "Apache License 2.0" in notice
    assert listed["source"]["url"] in notice and "Attribution-ShareAlike 4.0" in notice


def test_every_icon_the_manifest_names_is_its_size_and_the_drawing_it_comes_from(dist):
    import importlib.util

    from PIL import Image

    # loaded from its file: extension/ on sys.path would stay there for every later test
    spec = importlib.util.spec_from_file_location("draw_icons", ROOT / "extension" / "draw_icons.py")
    draw_icons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(draw_icons)

    manifest = json.loads((dist / "manifest.json").read_text())
    named = {**manifest["icons"], **manifest["action"]["default_icon"]}
    assert set(manifest["icons"]) == {str(s) for s in draw_icons.SIZES}
    for size, name in named.items():
        with Image.open(dist / name) as icon:
            assert icon.format == "PNG" and icon.size == (int(size), int(size)), name
            rgba = icon.convert("RGBA")
            # the file is what draw_icons draws now (so a change to the drawing is redrawn)
            assert rgba.tobytes() == draw_icons.draw(int(size)).tobytes(), name
            corner, middle = rgba.getpixel((0, 0)), rgba.getpixel((int(size) // 2, int(size) // 2))
            assert corner[3] == 0 and middle[3] == 255, f"{name}: a rounded tile on a transparent ground"
    pages = (dist / "groups.html").read_text()
    assert re.search(r'<link rel="icon" href="icons/icon-32.png">', pages)
