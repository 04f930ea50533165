"""The product demo, `python build.py demo`: the tab sorter extension at work (host side).

1. The evaluation table: the deployed classifier (extension/dist/model, what `py-engine tabs
   deploy` wrote) on the hand-checked evaluation set (data/tabs/eval.jsonl), accuracy and
   per-class F1 as `py-engine tabs eval` reports them, and the fallback rules on the same tabs.
2. Headless Chromium with extension/dist loaded unpacked and DEMO_TABS opened to local
   stand-ins of their pages (tab_pages.py): the tabs are grouped by the rules while the model
   loads, then by the model on WebGPU; the groups are printed.
3. A correction: a tab moved into another group is learned in an idle slice.

With `screenshots`, the popup in each of its states and the overview of the groups are saved
there. SwiftShader (a CPU implementation of WebGPU) runs the model at seconds per tab, over the
extension's latency budget: the demo raises the budget so that the model answers at all, and
says so.
"""

import time
from pathlib import Path

from .tab_pages import TabPages
from .tabs.categories import Categories

ROOT = Path(__file__).resolve().parents[1]
EVAL_FILE = ROOT / "data" / "tabs" / "eval.jsonl"
SOFTWARE_BUDGET = {"perTabMs": 600_000, "minMs": 600_000}
POPUP_SIZE = {"width": 380, "height": 760}

# (url, title, the category a person would choose): tabs of a working day, hard ones included
DEMO_TABS = [
    ("https://github.com/pola-rs/polars/issues/17742", "Lazy join drops rows with null keys · Issue #17742 · pola-rs/polars", "dev"),
    ("https://www.youtube.com/watch?v=8rmP5M0DVUY", "Rust for Python developers - PyCon US 2024 talk - YouTube", "dev"),
    ("http://localhost:5173/dashboard", "Vite + React dashboard", "dev"),
    ("https://stackoverflow.com/questions/231767/what-does-the-yield-keyword-do", "What does the \"yield\" keyword do in Python? - Stack Overflow", "dev"),
    ("https://www.linkedin.com/feed/", "Feed | LinkedIn", "social"),
    ("https://mastodon.social/@nasa", "NASA (@nasa@mastodon.social) - Mastodon", "social"),
    ("https://open.spotify.com/playlist/37i9dQZF1DXcBWIGoYBM5M", "Today's Top Hits - playlist by Spotify | Spotify", "entertainment"),
    ("https://www.netflix.com/title/80057281", "Stranger Things | Netflix Official Site", "entertainment"),
    ("https://acme.slack.com/archives/C024BE91L", "#release-planning (Channel) - Acme - Slack", "work"),
    ("https://www.linkedin.com/jobs/view/3912345678/", "Senior Data Engineer - Acme Corp - Berlin | LinkedIn", "work"),
    ("https://console.cloud.google.com/run?project=acme-prod", "Cloud Run – acme-prod – Google Cloud console", "cloud"),
    ("https://grafana.acme.io/d/api-latency/api-latency", "API latency - Dashboards - Grafana", "cloud"),
    ("https://www.booking.com/hotel/pt/lisbon-central.html", "Lisbon Central Hotel, Lisbon – Updated 2024 Prices | Booking.com", "shopping"),
    ("https://www.ebay.com/itm/266512345678", "Sony WH-1000XM5 Wireless Headphones - Black | eBay", "shopping"),
    ("https://www.reuters.com/technology/aws-outage-disrupts-websites-2024-06-13/", "AWS outage disrupts websites across the US | Reuters", "news"),
    ("https://www.nytimes.com/2024/10/05/science/nobel-prize-physics.html", "Nobel Prize in Physics Awarded for Work on Machine Learning - The New York Times", "news"),
]


def evaluation_table(model_dir, data=EVAL_FILE, backend="numpy", device=None, count=None,
                     latency_runs=None):
    """The deployed classifier, with the deployed rules, on labelled tabs (the first `count`
    of them when given): evaluate_tabs' report, with latency when `latency_runs` gives
    (single tabs, batches of 50) to time."""
    from .gpu import run_sync
    from .tabs.evaluate import evaluate_tabs
    from .tabs.rules import load_rules
    from .tabs.tab_data import read_tabs

    rules = load_rules(Path(model_dir) / "rules.json", Path(model_dir) / "listed_domains.json")
    tab_runs, batch_runs = latency_runs or (0, 0)
    return run_sync(evaluate_tabs(Path(model_dir) / "base", Path(model_dir) / "adapter",
                                  read_tabs(data)[:count], backend=backend, device=device,
                                  timing=latency_runs is not None, rules=rules,
                                  tab_runs=tab_runs, batch_runs=batch_runs))


def print_evaluation(report, data=EVAL_FILE):
    from .tabs.evaluate import print_report

    print(f"== The shipped classifier on {Path(data).relative_to(ROOT)} "
          f"(hand-checked tabs the generator never writes)", flush=True)
    print_report(report)


def groups_text(ext):
    """The window's groups as lines: title (colour): tabs, each with what sorted it."""
    known = ext.sorter("snapshot")["tabs"]
    strip = ext.tab_strip()
    lines = []
    for group in strip["groups"]:
        lines.append(f"  {group['title']} ({group['color']})")
        lines += [f"      {t['title'][:76]}  [{known.get(str(t['id']), {}).get('source', '?')}]"
                  for t in strip["tabs"] if t["groupId"] == group["id"]]
    return "\n".join(lines)


def popup_shot(ext, path, tab_id, wait_for=None):
    page = ext.context.new_page()
    page.set_viewport_size(POPUP_SIZE)
    page.goto(ext.url(f"popup.html?tab={tab_id}"))
    page.wait_for_function("() => document.body.dataset.phase")
    if wait_for:
        page.wait_for_function(wait_for, timeout=600_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)
    return page


def run(dist, model_dir, profile, screenshots=None):
    """The demo (see the module docstring); returns the exit status."""
    from playwright.sync_api import sync_playwright

    from . import harness

    started = time.monotonic()
    print_evaluation(evaluation_table(model_dir))
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    cats = Categories.default()
    with TabPages([(u, t) for u, t, _ in DEMO_TABS]) as pages, sync_playwright() as pw:
        ext = harness.launch_extension(pw, dist, profile, pages.chromium_args)
        blank = [p for p in ext.context.pages if p.url == "about:blank"]
        print(f"\n== Chromium with the extension ({dist}), {len(DEMO_TABS)} tabs opened", flush=True)
        ids = []
        for url, _, _ in DEMO_TABS:
            ext.context.new_page().goto(url)
            ids.append(ext.tab_id(url))
        for page in blank:
            page.close()                        # the window's first, empty tab
        if shots:
            popup_shot(ext, shots / "popup-starting.png", ids[0]).close()
        state = wait_for_engine(ext)
        if state["phase"] != "ready":
            print(f"the model did not load ({state['error']}): the rules sorted the tabs")
            print(groups_text(ext))
            return 1
        a = state["adapter"]
        print(f"engine ready: Python booted in {state['timings']['boot_ms'] / 1000:.1f} s, the model "
              f"loaded in {state['timings']['load_ms'] / 1000:.1f} s and its first call (the GPU "
              f"pipelines compiled) took {state['timings']['warm_ms'] / 1000:.1f} s, on {a['vendor']} "
              f"{a['architecture']}"
              f"{' (a software adapter)' if a['is_software'] else ''}")
        wait_sorted(ext, ids)
        print("grouped by the rules while the model loaded:")
        print(groups_text(ext))

        if a["is_software"]:
            print("this WebGPU adapter is software: the latency budget is raised so that the model answers")
            ext.sorter("configure", SOFTWARE_BUDGET)
        t0 = time.monotonic()
        results = ext.sorter("upgrade", timeout_ms=900_000)
        seconds = time.monotonic() - t0
        right = sum(r["category"] == c for r, (_, _, c) in zip(sorted(results, key=lambda r: ids.index(r["tabId"])), DEMO_TABS))
        print(f"\nsorted again by the model: {len(results)} tabs in {seconds:.1f} s, "
              f"{right}/{len(DEMO_TABS)} where a person would put them")
        print(groups_text(ext))
        if shots:
            overview = ext.context.new_page()
            overview.goto(ext.url("groups.html"))
            overview.set_viewport_size({"width": 1280, "height": 900})
            overview.wait_for_function("() => document.body.dataset.rendered")
            overview.wait_for_timeout(300)
            overview.screenshot(path=str(shots / "groups.png"), full_page=True)
            popup_shot(ext, shots / "popup-ready.png", ids[1]).close()

        # a correction: the talk on YouTube is wanted with the videos, not with the code
        talk, wanted = ids[1], "entertainment"
        groups = ext.sorter("snapshot")["groups"]
        target = next((int(g) for g, info in groups.items() if info["category"] == wanted), None)
        ext.evaluate("([id, group]) => chrome.tabs.group({tabIds: [id], groupId: group})", [talk, target])
        print(f"\nyou move \"{DEMO_TABS[1][1]}\" into {cats.by_id(wanted).name}: a correction")
        ext.sorter("setIdleState", "idle")
        if shots:
            ext.worker.evaluate("() => { self.tabSorter.forceSlice(600000); return null; }")
            popup_shot(ext, shots / "popup-training.png", talk,
                       "() => document.getElementById('training').textContent.startsWith('training now')").close()
        learned = None
        for _ in range(4):
            ext.sorter("forceSlice", 600_000, timeout_ms=900_000)
            learned = ext.engine("categorise", {"tabs": [{"url": DEMO_TABS[1][0], "title": DEMO_TABS[1][1]}]})["results"][0]
            if learned["category"] == wanted:
                break
        status = ext.engine("status")
        print(f"learned while you were away: the model now says {cats.by_id(learned['category']).name} "
              f"({learned['confidence']:.2f}) after {status['trainer']['step']} training steps")
        ext.engine("save")                      # learned records leave the queue once saved
        gpu_lost(ext, DEMO_TABS[1], cats, shots and (shots / "popup-gpu-lost.png"), talk)
        if shots:
            popup_shot(ext, shots / "popup-learned.png", talk).close()
            ext.engine("pause")
            popup_shot(ext, shots / "popup-paused.png", talk).close()
            ext.engine("resume")
            ext.context.close()
            rules_only_shot(pw, dist, profile.parent / f"{profile.name}-no-webgpu", pages, shots, ids)
        else:
            ext.context.close()
    print(f"\nextension/dist is ready: in Chrome open chrome://extensions, turn on Developer mode, "
          f"\"Load unpacked\" and pick {dist}  ({time.monotonic() - started:.0f} s)")
    return 0


def gpu_lost(ext, tab, cats, shot, tab_id, timeout_s=600):
    """Chrome's GPU process crashes (CDP Browser.crashGpuProcess; a driver reset does the same):
    the engine's next call meets the lost device, the engine is made anew on a new one, and it
    answers as it did."""
    cdp = ext.context.new_cdp_session(ext.context.pages[0])
    cdp.send("Browser.crashGpuProcess")
    started = time.monotonic()
    probe = {"tabs": [{"url": tab[0], "title": tab[1]}]}
    while True:                                 # the device goes a moment after the crash
        try:
            ext.engine("categorise", probe, timeout_ms=60_000)
        except Exception:                       # noqa: BLE001 - the lost GPU, as expected
            break
        if time.monotonic() - started > 60:
            raise RuntimeError("the GPU process crashed, yet the engine's calls still work")
        time.sleep(0.25)
    if shot:
        popup_shot(ext, shot, tab_id, "() => document.getElementById('engine-detail').textContent.startsWith('The GPU went away')").close()
    state = wait_for_engine(ext, timeout_s)
    if state["phase"] != "ready" or not state["restarts"]:
        raise RuntimeError(f"the engine did not come back after the GPU was lost: {state}")
    answer = ext.engine("categorise", probe)["results"][0]
    print(f"\nthe GPU process crashes (as after a driver reset): the engine is back on a new device "
          f"in {time.monotonic() - started:.1f} s, and the model still says "
          f"{cats.by_id(answer['category']).name} ({answer['confidence']:.2f})")


def wait_for_engine(ext, timeout_s=600):
    deadline = time.monotonic() + timeout_s
    while True:
        state = ext.sorter("snapshot")["engine"]
        if state["phase"] in ("ready", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def wait_sorted(ext, ids, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        known = ext.sorter("snapshot")["tabs"]
        if all(str(i) in known for i in ids):
            return
        time.sleep(0.5)


def rules_only_shot(pw, dist, profile, pages, shots, ids):
    """The popup where the browser offers no WebGPU: the rules sort every tab."""
    from . import harness

    ext = harness.launch_extension(pw, dist, profile, pages.chromium_args, webgpu=False)
    ext.context.new_page().goto(DEMO_TABS[4][0])
    tab = ext.tab_id(DEMO_TABS[4][0])
    wait_for_engine(ext)
    wait_sorted(ext, [tab])
    popup_shot(ext, shots / "popup-rules-only.png", tab).close()
    ext.context.close()
