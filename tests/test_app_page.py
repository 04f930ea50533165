"""The app page (web/src/app.html) in real Chromium, driven as a user drives it: the engine in
its worker (Pyodide, WebGPU through SwiftShader, IndexedDB), the tiny BERT and tiny chat
checkpoints given to the page as a picked folder and as dropped files.

The classifier tests are steps of one session on one page, in order (booting costs seconds):
a model from a folder, imports that land in the queue, a forced slice that trains and redraws
the chart, a correction learned after one forced slice, a poisoned import rolled back and shown,
the rollback button, a reload that restores everything, a URL imported through the server's
fetch endpoint, no main-thread long task while training, the adapter and the dataset exported
and imported again, the phone layout and the keyboard.
The chat and the failures (no WebGPU, a model that does not fit, a bad folder) have pages of
their own.

With PY_ENGINE_SCREENSHOTS=DIR the page is photographed at each stage into DIR.
"""

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

import peft_oracle as po
from py_engine import harness
from py_engine.server import ServerThread
from test_fetch_endpoint import PAGE, Upstream
from saved_states import STATES_JS
from test_service import jsonl, sentiment
from t5_tokenizer import t5_dir
from tiny_chat import tiny_chat_dir
from chat_template_fixtures import model_template

pytestmark = pytest.mark.browser

BOOT_MS = 120_000
TRAIN_MS = 120_000
SCREENS = os.environ.get("PY_ENGINE_SCREENSHOTS")


def shot(page, name, full=True):
    if SCREENS:
        Path(SCREENS).mkdir(parents=True, exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(Path(SCREENS) / f"{name}.png"), full_page=full)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream():
    """A web site on this machine that the fetch endpoint is allowed to reach."""
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(built_dist, upstream):
    with ServerThread(built_dist, allow_fetch={("127.0.0.1", upstream.port)}) as url:
        yield url


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    chat = tiny_chat_dir(base / "chat")
    # Qwen3's template, whose thinking switch the page shows
    config = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps(dict(config, chat_template=model_template("qwen-3"))))
    return {"bert": po.tiny_bert_dir(base / "tiny-bert", seed=3),
            "chat": chat, "t5": t5_dir(base / "t5")[0]}


def open_app(context, site):
    page = context.new_page()
    page.console_lines = []
    page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console_lines.append(f"pageerror: {e}"))
    page.goto(site + "app.html?idle=manual")
    wait_ready(page)
    return page


def wait_ready(page):
    try:
        page.wait_for_function("() => window.app && (window.app.ready || window.app.engine.failure)",
                               timeout=BOOT_MS)
    except Exception:
        pytest.fail("the app did not start:\n" + "\n".join(page.console_lines[-30:]))
    failure = page.evaluate("() => window.app.engine.failure")
    assert failure is None, failure


def wait_model(page):
    page.wait_for_function("() => window.app.model || !document.getElementById('model-error').hidden",
                           timeout=BOOT_MS)
    error = page.inner_text("#model-error") if page.is_visible("#model-error") else ""
    assert not error, error
    return page.evaluate("() => window.app.model")


def status(page):
    return page.evaluate("() => window.app.engine.call('status')")


def now(page):
    return page.evaluate("() => performance.now()")


def train_now(page):
    """Click Train now and wait for its slice; returns the page-clock window it ran in."""
    start = now(page)
    page.click("#train-now")
    page.wait_for_function("() => !document.getElementById('train-now').disabled", timeout=TRAIN_MS)
    return start, now(page)


def train_until_learned(page, most):
    """Train now until the trainer has learned every record, `most` slices at most."""
    for _ in range(most):
        if status(page)["trainer"]["idle_reason"]:
            break
        page.training.append(train_now(page))
    assert status(page)["trainer"]["idle_reason"] == "every record has been learned"


def finish_imports(page, count):
    page.wait_for_function(f"() => document.querySelectorAll('#imports li:not(.busy)').length >= {count}",
                           timeout=TRAIN_MS)
    return page.locator("#imports li").first


def predict(page, text):
    page.fill("#classify-input", text)
    page.evaluate("() => { document.getElementById('prediction').dataset.waiting = '1'; }")
    page.click("#classify-go")
    page.wait_for_function("() => !document.getElementById('classify-go').disabled && "
                           "!document.getElementById('prediction').hidden", timeout=TRAIN_MS)
    return page.evaluate("(text) => window.app.engine.call('predict', {text})", text)


def download_adapter(page):
    with page.expect_download() as info:
        page.click("#export-adapter")
    data = Path(info.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def session(browser, site):
    """One user's classifier session: a context (its IndexedDB and storage) and a page, plus the
    page-clock windows in which training ran (for the long-task check)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = open_app(context, site)
    page.training = []
    yield page
    context.close()


# --- the classifier session, step by step -----------------------------------------------------

def test_a_model_from_a_picked_folder(session, checkpoints):
    page = session
    assert page.inner_text("#scheduler-line") == "Load a model to start."
    assert page.is_disabled("#train-now") and page.is_visible("#load-bundled")
    # the GPU is told before any model is loaded
    page.wait_for_function("() => document.getElementById('device-badge').textContent.includes('GPU')")
    assert "Software GPU" in page.inner_text("#device-badge")
    shot(page, "01-empty")
    page.fill("#model-labels", "neg, pos")
    page.set_input_files("#model-folder", str(checkpoints["bert"]))
    model = wait_model(page)
    assert model["kind"] == "classification" and model["labels"] == ["neg", "pos"]
    assert model["backend"] == "gpu" and model["name"] == "tiny-bert"
    summary = page.inner_text("#model-summary")
    assert "tiny-bert" in summary and "classifier" in summary and "neg, pos" in summary
    # SwiftShader is a software adapter: it works, and the page says it is slow
    assert "software implementation" in page.inner_text("[data-banner=software]")
    assert "Software GPU" in page.inner_text("#device-badge")
    # the tests train at a higher rate than a user's default, through the Settings form, and
    # with gradient checkpointing (each layer recomputed in the backward on the page's GPU)
    page.click("#settings summary")
    page.fill("#set-lr", "0.01")
    page.fill("#set-epochs", "4")
    assert not page.is_checked("#set-checkpointing")
    page.check("#set-checkpointing")
    page.click("#settings-apply")
    page.wait_for_function("() => document.getElementById('settings-message').textContent === 'Applied.'")
    config = page.evaluate("() => window.app.engine.call('configure', {})")
    assert config["learner"]["train"] == {"lr": 0.01, "epochs": 4, "gradient_checkpointing": True}
    shot(page, "02-model-loaded")


def test_imports_land_in_the_queue(session):
    page = session
    page.fill("#paste-text", jsonl(sentiment(160, 1)).decode())
    page.click("#paste-import")
    item = finish_imports(page, 1)
    text = item.inner_text()
    assert "pasted text" in text and "160 records" in text, text
    queue = status(page)["queue"]
    assert queue["total"] >= 150 and queue["by_source"] == {"text": queue["total"]}
    page.wait_for_function(f"() => document.getElementById('queue-total').textContent.startsWith('{queue['total']} ')")
    assert "text" in page.inner_text("#queue-sources") and str(queue["total"]) in page.inner_text("#queue-sources")
    # a queue the browser found corrupt and started empty says so (IndexedDB's dataLoss); read
    # in the same task as the render, before the page's own refresh can draw the card again
    # until the user dismisses it (the button's call is given to renderQueue)
    render = """async (q) => {
        let dismissed = 0;
        (await import('./views.mjs')).renderQueue(q, null, () => { dismissed += 1; });
        const shown = document.querySelector('#queue-work .error')?.textContent ?? null;
        document.getElementById('dismiss-loss')?.click();
        return { shown, dismissed };
    }"""
    shown = page.evaluate(render, {**queue, "lost": "IndexedDB (database was corrupt): checksum mismatch"})
    assert shown["shown"] and "started it empty: the queue and the training state from before " \
        "then are gone (IndexedDB (database was corrupt)" in shown["shown"], shown
    assert shown["dismissed"] == 1, shown
    page.evaluate("""async (q) => (await import('./views.mjs')).renderQueue(q, null, () => {})""",
                  {**queue, "lost": "IndexedDB (database was corrupt): checksum mismatch"})
    shot(page, "03b-queue-started-empty")
    assert page.evaluate(render, queue) == {"shown": None, "dismissed": 0}
    # the engine's side of the button: nothing was lost here, and nothing changes
    assert "lost" not in page.evaluate("() => window.app.engine.call('acknowledge_loss')") and status(page)["queue"]["total"] == queue["total"]


def test_a_forced_slice_trains_and_the_chart_updates(session):
    page = session
    chart = "() => document.getElementById('loss-chart').toDataURL()"
    blank = page.evaluate(chart)
    page.training.append(train_now(page))
    state = status(page)
    assert state["trainer"]["step"] > 0 and state["history"]
    page.wait_for_function(f"() => document.getElementById('m-step').textContent === '{state['trainer']['step']}'")
    assert page.evaluate(chart) != blank
    assert f"{len(state['history'])} steps" in page.get_attribute("#loss-chart", "aria-label")
    assert float(page.inner_text("#m-loss")) == pytest.approx(state["trainer"]["loss"], rel=1e-3)
    # train the import to its end: a correction's slice is then about the correction alone
    train_until_learned(page, 8)
    assert page.locator("#snapshots tbody button.restore").count() >= 2
    shot(page, "03-training")


def test_a_correction_changes_the_next_prediction_after_forced_slices(session):
    page = session
    text = "the actor in this scene"
    before = predict(page, text)
    wanted = "neg" if before["label"] == "pos" else "pos"
    assert before["label"] in page.inner_text("#prediction")
    page.click(f"#prediction button.correct-as:has-text('{wanted}')")
    page.wait_for_function("() => document.querySelector('#prediction .message.ok')")
    assert "Queued as a correction" in page.inner_text("#prediction .message")
    assert status(page)["queue"]["by_priority"].get("300") == 1
    # one Train now (a 4 s slice) learns it here; on two loaded cores its steps can take
    # longer than the slice, so the slices go on until the correction's generation is learned
    page.training.append(train_now(page))
    train_until_learned(page, 3)
    after = predict(page, text)
    assert after["label"] == wanted, (before, after)
    assert page.inner_text("#prediction .label") == wanted
    shot(page, "04-classifier-corrected")


def test_a_poisoned_import_is_rolled_back_and_shown(session):
    page = session
    page.fill("#paste-text", jsonl(sentiment(120, 2, flip=True)).decode())
    page.click("#paste-import")
    assert "120 records" in finish_imports(page, 2).inner_text()
    for _ in range(6):
        page.training.append(train_now(page))
        if status(page)["rollbacks"]:
            break
    rollbacks = status(page)["rollbacks"]
    assert rollbacks and "worse than" in rollbacks[0]["reason"]
    page.wait_for_function("() => document.querySelector('#rollbacks li.auto')")
    shown = page.inner_text("#rollbacks")
    assert "Automatic" in shown and "worse than" in shown
    assert "rolled back" in page.inner_text("[data-banner=rollback]")
    shot(page, "05-rollback-shown")


def test_the_rollback_button_restores_a_chosen_snapshot(session):
    page = session
    listed = status(page)["snapshots"]
    chosen, other = listed[0], listed[-1]
    assert chosen["step"] != other["step"], listed

    def restore(snapshot, restores):
        page.click(f"#snapshots button[aria-label^='Roll back to snapshot {snapshot['index']} ']")
        # a restore reloads the snapshot's weights onto the GPU: on two loaded cores (SwiftShader)
        # it once took more than the default 30 s, so it gets the training waits' budget
        page.wait_for_function(f"() => document.querySelectorAll('#rollbacks li.manual').length === {restores}",
                               timeout=TRAIN_MS)
        assert f"snapshot #{snapshot['index']}" in page.inner_text("[data-banner=restore]")
        return download_adapter(page)

    # the chosen snapshot's weights come back, whatever was restored in between
    first = restore(chosen, 1)
    assert set(first) >= {"adapter_config.json", "adapter_model.safetensors", "labels.json"}
    between = restore(other, 2)
    assert between["adapter_model.safetensors"] != first["adapter_model.safetensors"]
    assert restore(chosen, 3) == first
    assert f"snapshot #{chosen['index']} restored" in page.inner_text("#rollbacks")


def test_a_reload_restores_everything(session):
    page = session
    page.wait_for_function("() => window.app.status && window.app.status.trainer && "
                           "!window.app.status.trainer.unsaved", timeout=TRAIN_MS)
    before = status(page)
    probs = predict(page, "good great fine")["probs"]
    shown = {sel: page.inner_text(sel) for sel in ("#imports", "#rollbacks", "#queue-total")}
    page.click("#pause")                  # the user's pause outlasts the reload
    page.wait_for_function("() => window.app.status.scheduler.state === 'paused'")
    page.reload()
    page.training = []                    # the page's clock starts again
    wait_ready(page)
    model = wait_model(page)
    assert model["restored"] is True
    assert status(page)["scheduler"]["state"] == "paused"
    page.click("#pause")
    page.wait_for_function("() => window.app.status.scheduler.state !== 'paused'")
    after = status(page)
    for key in ("queue", "snapshots", "rollbacks", "history"):
        assert json.dumps(after[key], sort_keys=True) == json.dumps(before[key], sort_keys=True), key
    assert after["trainer"]["step"] == before["trainer"]["step"]
    again = predict(page, "good great fine")["probs"]
    assert again == pytest.approx(probs, rel=1e-6, abs=1e-7)
    page.wait_for_function("() => window.app.status && window.app.status.history.length")
    for sel, text in shown.items():
        assert page.inner_text(sel) == text, sel
    assert page.input_value("#set-lr") == "0.01" and page.is_checked("#set-checkpointing")


def test_a_url_is_imported_through_the_fetch_endpoint(session, site, upstream):
    page = session
    page.click("#tab-url")
    page.fill("#import-url", upstream.url + "/page")
    page.click("#url-import")
    text = finish_imports(page, 3).inner_text()
    assert upstream.url + "/page" in text and "1 record" in text, text
    assert upstream.requests[-1][0] == "/page"
    # the page's origin cannot read the upstream site itself: only the server's endpoint can
    blocked = page.evaluate(f"() => fetch('{upstream.url}/page').then(() => 'read', () => 'blocked')")
    assert blocked == "blocked"
    page.fill("#import-url", "http://169.254.169.254/latest/meta-data/")
    page.click("#url-import")
    text = finish_imports(page, 4).inner_text()
    assert "link-local address" in text and "only public addresses" in text, text
    page.fill("#import-url", site + "fetch?url=x")
    page.click("#url-import")
    assert "own fetch endpoint" in finish_imports(page, 5).inner_text()


# Long animation frames name the scripts that ran in them: what the page itself did.
WATCH_FRAMES = """() => {
  window.frames_seen = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.frames_seen.push({start: e.startTime, duration: e.duration,
      scripts: e.scripts.map((s) => ({invoker: s.invoker, duration: s.duration}))});
  }).observe({type: "long-animation-frame"});
}"""


def test_no_long_task_on_the_main_thread_while_training(session):
    """No main-thread long task caused by training: the page's own scripts (what handles the
    worker's events and redraws) never run 50 ms in one task while training. A long task
    with no script of the page's in it is the machine's doing (a loaded 2-core machine, where
    SwiftShader's threads compete with the main thread, stretches any task): it is reported,
    not counted; an idle machine shows none (README, bench)."""
    page = session
    # page-clock windows since the reload (performance.now() restarted there), a new import's
    # training among them
    page.evaluate(WATCH_FRAMES)
    page.click("#tab-paste")
    page.fill("#paste-text", jsonl(sentiment(200, 7)).decode())
    page.click("#paste-import")
    finish_imports(page, 6)
    for _ in range(4):
        page.training.append(train_now(page))
    windows = page.training
    assert sum(b - a for a, b in windows) >= 2000, windows

    def during(items):
        return [t for t in items if any(t["start"] < b and t["start"] + t["duration"] > a
                                        for a, b in windows)]

    frames = page.evaluate("() => window.frames_seen")
    ours = [f for f in during(frames) if sum(s["duration"] for s in f["scripts"]) > 50]
    assert ours == [], ours
    # the page reports the long tasks it saw, in words
    tasks = page.evaluate("() => window.app.longTasks")
    shown = page.inner_text("#longtasks")
    flagged = len([t for t in tasks if t["training"]])
    assert (f"{flagged} long task" if flagged else "no long task over 50 ms while training") in shown


def test_the_adapter_and_the_dataset_go_out_and_back_in(session, tmp_path):
    page = session
    # the page saves a few seconds after training, and a save finishes a step under way; the
    # download finishes it first, so that no step lands between it and the prediction held to it
    adapter = download_adapter(page)
    assert not status(page)["trainer"]["mid_step"]
    probs = predict(page, "good great fine")["probs"]
    # the oldest snapshot's weights, then the downloaded adapter put back: its predictions
    first = min(status(page)["snapshots"], key=lambda snapshot: snapshot["step"])
    assert first["step"] < status(page)["trainer"]["step"]
    manual = page.locator("#rollbacks li.manual").count()
    page.click(f"#snapshots button[aria-label^='Roll back to snapshot {first['index']} ']")
    page.wait_for_function(f"() => document.querySelectorAll('#rollbacks li.manual').length === {manual + 1}")
    assert predict(page, "good great fine")["probs"] != pytest.approx(probs, rel=1e-3)
    paths = []
    for name, data in adapter.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    page.set_input_files("#import-adapter", paths)
    page.wait_for_function("() => document.getElementById('files-message').textContent.startsWith('Adapter imported')")
    assert predict(page, "good great fine")["probs"] == pytest.approx(probs, rel=1e-6, abs=1e-7)
    # the dataset: the queue as JSONL, and back in (every record already queued)
    total = status(page)["queue"]["total"]
    page.select_option("#dataset-format", "jsonl")
    with page.expect_download() as info:
        page.click("#export-dataset")
    with zipfile.ZipFile(info.value.path()) as archive:      # data.jsonl and stats.json
        assert sorted(archive.namelist()) == ["data.jsonl", "stats.json"]
        lines = archive.read("data.jsonl").decode().splitlines()
    assert len(lines) == total and all("text" in json.loads(line) for line in lines)
    (tmp_path / "queue.jsonl").write_text("\n".join(lines) + "\n")
    imports = page.locator("#imports li").count()
    page.set_input_files("#import-dataset", str(tmp_path / "queue.jsonl"))
    text = finish_imports(page, imports + 1).inner_text()
    assert f"{total} already queued" in text, text
    assert status(page)["queue"]["total"] == total


def test_phone_width_and_keyboard(session):
    page = session
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for card in page.locator("section.card").all():
        box = card.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    shot(page, "06-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    # every control has a name, and Tab reaches the main ones in reading order
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, input, select, textarea')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map((e) => e.outerHTML.slice(0, 80))""")
    assert unnamed == []
    # from the page's first control (sequential focus goes on from the last one clicked)
    page.evaluate("() => { window.scrollTo(0, 0); "
                  "document.querySelector('a[href], button:not([disabled]), input, select, textarea, summary').focus(); }")
    order = []
    for _ in range(60):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.id || document.activeElement.className || document.activeElement.tagName"))
    for first, second in (("paste-text", "paste-import"), ("paste-import", "classify-input"),
                          ("classify-input", "train-now"), ("train-now", "export-adapter")):
        assert order.index(first) < order.index(second), order
    page.focus("#train-now")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline


def test_a_bad_folder_and_a_model_too_large_are_told(browser, site, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = open_app(context, site)
    try:
        notes = tmp_path / "notes"
        notes.mkdir()
        (notes / "readme.txt").write_text("not a model")
        page.set_input_files("#model-folder", str(notes))
        page.wait_for_selector("#model-error:not([hidden])")
        assert "Not a model folder: no config.json" in page.inner_text("#model-error")
        # a checkpoint whose embedding table alone outgrows the GPU's largest buffer, told from
        # its safetensors header before anything is loaded
        big = tmp_path / "big"
        big.mkdir()
        (big / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 300_000,
                                                     "hidden_size": 1024}))
        (big / "vocab.txt").write_text("[PAD]\n")
        header = json.dumps({"bert.embeddings.word_embeddings.weight": {
            "dtype": "F32", "shape": [300_000, 1024], "data_offsets": [0, 1_228_800_000]}}).encode()
        (big / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
        page.set_input_files("#model-folder", str(big))
        page.wait_for_function("() => document.getElementById('model-error').textContent.includes('does not fit')")
        message = page.inner_text("#model-error")
        assert "does not fit on this GPU" in message and "word_embeddings" in message
        assert page.evaluate("() => window.app.model") is None
        shot(page, "07-error-model-too-large")
    finally:
        context.close()


def test_without_webgpu_the_page_says_so(playwright, site):
    browser = playwright.chromium.launch(**harness.launch_args(webgpu=False))
    try:
        page = browser.new_page()
        page.goto(site + "app.html?idle=manual")
        page.wait_for_selector("[data-banner=webgpu]")
        assert "no GPU adapter" in page.inner_text("[data-banner=webgpu]")
        assert page.is_disabled("#load-bundled") and page.inner_text("#device-badge") == "No WebGPU"
        shot(page, "08-error-no-webgpu")
    finally:
        browser.close()


def test_a_lost_gpu_is_told_and_the_engine_starts_again(playwright, site, checkpoints):
    """Chrome's GPU process crashes under a loaded model (CDP Browser.crashGpuProcess: what a
    driver reset does), and the engine's WebGPU device is lost for good. The next call fails
    with kind "device_lost"; the page says so and makes the engine anew on a new device by
    itself, which brings the model back, answering as before, and says that too. A browser of
    its own: the crash reaches every page of a browser."""
    browser = playwright.chromium.launch(**harness.launch_args())
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = open_app(context, site)
        page.fill("#model-labels", "neg, pos")
        page.set_input_files("#model-folder", str(checkpoints["bert"]))
        wait_model(page)
        ask = """async (text) => { try { return {result: await window.app.engine.call('predict', {text})}; }
                                   catch (e) { return {error: {kind: e.kind, message: e.message}}; } }"""
        before = page.evaluate(ask, "a fine film")["result"]
        browser.new_browser_cdp_session().send("Browser.crashGpuProcess")
        deadline = time.monotonic() + 60
        while "error" not in (answer := page.evaluate(ask, "a fine film")):
            assert time.monotonic() < deadline, "no call met the lost GPU"
            time.sleep(0.25)
        assert answer["error"]["kind"] == "device_lost", answer
        assert answer["error"]["message"].startswith("the GPU device was lost: "), answer
        page.wait_for_selector("[data-banner=gpu]")
        told = page.inner_text("[data-banner=gpu]")
        assert told.startswith("The GPU went away (the browser said: ") and \
            "The engine is starting again on a new one" in told, told
        shot(page, "09-error-gpu-lost")
        page.wait_for_function("() => window.app.remade && window.app.remade.back", timeout=BOOT_MS)
        assert page.evaluate("() => window.app.engine.failure") is None
        told = page.inner_text("[data-banner=gpu]")
        assert "the engine started again on a new one, and tiny-bert is back" in told, told
        shot(page, "09b-gpu-lost-engine-back")
        assert wait_model(page)["labels"] == ["neg", "pos"]
        again = page.evaluate(ask, "a fine film")["result"]
        assert again["label"] == before["label"], (before, again)
        assert all(abs(again["probs"][k] - p) < 1e-4 for k, p in before["probs"].items()), (before, again)
        # two more losses are met the same way; the fourth within the hour asks for a reload
        lose = "() => window.app.engine.emit({event: 'device_lost', message: 'the GPU device was lost: again.'})"
        for _ in range(2):
            page.evaluate(lose)
            assert "The engine is starting again on a new one" in page.inner_text("[data-banner=gpu]")
        page.evaluate(lose)
        told = page.inner_text("[data-banner=gpu]")
        assert told.startswith("The GPU went away again (the browser said: again), the 4th time within "
                               "an hour. Reload the page") and "Reload" in told, told
    finally:
        browser.close()


def test_an_engine_that_stops_answering_is_told_until_it_answers_again(browser, site):
    """The page pings the engine's worker (every 15 s, silent after 60 s without an answer;
    shortened here). While the page hears nothing from it (what a worker stuck in a loop looks
    like from the page), it says so with a Reload button; when the worker answers again, the
    message goes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = open_app(context, site)
    try:
        assert page.evaluate("() => window.app.watch") == {"every_ms": 15_000, "hung_ms": 60_000}
        page.evaluate("() => { window.app.watch = {every_ms: 100, hung_ms: 500}; }")
        page.wait_for_timeout(1500)
        assert not page.is_visible("[data-banner=silent]")          # it answers
        page.evaluate("() => { window.app.engine.worker.onmessage = null; }")
        page.wait_for_selector("[data-banner=silent]", timeout=10_000)
        told = page.inner_text("[data-banner=silent]")
        assert told.startswith("The engine has not answered for 1 s.") and "Reload" in told, told
        shot(page, "10-engine-silent")
        page.evaluate("() => { const e = window.app.engine; e.worker.onmessage = (m) => e.receive(m.data); }")
        page.wait_for_selector("[data-banner=silent]", state="detached", timeout=10_000)
    finally:
        context.close()


def test_a_saved_state_that_cannot_be_put_back_is_kept_aside(browser, site, checkpoints):
    """The model's saved state in IndexedDB is cut short (what storage that failed mid-write or
    an older version's state looks like to the engine): the reload does not fail to load the
    model for good, as it did. The unreadable state is kept under another key, the model starts
    from what it was loaded with (answering as it did then), and the page says so; the next
    reload finds the fresh state saved in its place."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = open_app(context, site)
    try:
        page.fill("#model-labels", "neg, pos")
        page.set_input_files("#model-folder", str(checkpoints["bert"]))
        key = "app/" + wait_model(page)["key"]
        assert page.evaluate("() => window.app.engine.call('save')")["saved"]
        loaded = page.evaluate("(text) => window.app.engine.call('predict', {text})", "a fine film")
        before = page.evaluate(STATES_JS, None)
        assert before[key]["adapter_model.safetensors"] > 100, before    # beside it: the picked files
        page.evaluate(STATES_JS, {"key": key, "name": "adapter_model.safetensors", "keep": 100})
        page.reload()
        wait_ready(page)
        model = wait_model(page)
        assert model["restored"] is False, model
        aside = model["set_aside"]
        assert aside["kept_as"] == key.removeprefix("app/") + ".unreadable-1", aside
        assert "adapter_model.safetensors" in aside["reason"], aside
        page.wait_for_selector("[data-banner=state]")
        told = page.inner_text("[data-banner=state]")
        assert told.startswith("The saved training state could not be put back (") and aside["kept_as"] in told, told
        shot(page, "11-state-set-aside")
        states = page.evaluate(STATES_JS, None)
        assert set(states) == set(before) | {"app/" + aside["kept_as"]}, states
        assert states["app/" + aside["kept_as"]] == dict(before[key], **{"adapter_model.safetensors": 100})
        # the state set aside is listed where the files are; its files download as kept
        page.wait_for_selector("#set-aside:not([hidden])")
        rows = page.locator("#set-aside-list tbody tr")
        assert rows.count() == 1 and rows.nth(0).locator("td").nth(0).inner_text() == aside["kept_as"]
        assert rows.nth(0).locator("td").nth(1).inner_text() == "could not be put back"
        page.locator("#set-aside").scroll_into_view_if_needed()
        shot(page, "11b-state-set-aside-listed")
        with page.expect_download() as info:
            rows.nth(0).locator("button.download").click()
        with zipfile.ZipFile(info.value.path()) as archive:
            kept = {name: len(archive.read(name)) for name in archive.namelist()}
        assert kept == states["app/" + aside["kept_as"]], kept
        # Remove asks once more on the same button, then the state is gone from the browser
        rows.nth(0).locator("button.remove").click()
        assert rows.nth(0).locator("button.remove").inner_text() == "Remove for good"
        shot(page, "11c-state-set-aside-confirm")
        assert set(page.evaluate(STATES_JS, None)) == set(states)
        rows.nth(0).locator("button.remove").click()
        page.wait_for_selector("#set-aside", state="hidden")
        assert page.inner_text("#files-message") == f"Saved state {aside['kept_as']} removed."
        assert not page.is_visible("[data-banner=state]")       # it named the state removed
        shot(page, "11d-state-set-aside-removed")
        assert set(page.evaluate(STATES_JS, None)) == set(states) - {"app/" + aside["kept_as"]}
        again = page.evaluate("(text) => window.app.engine.call('predict', {text})", "a fine film")
        assert again["label"] == loaded["label"], (loaded, again)
        assert all(abs(again["probs"][k] - p) < 1e-5 for k, p in loaded["probs"].items()), (loaded, again)
        page.reload()
        wait_ready(page)
        model = wait_model(page)
        assert model["restored"] is True and "set_aside" not in model, model
        assert not page.is_visible("[data-banner=state]")
    finally:
        context.close()


def test_chat_streams_a_reply_and_logs_the_conversation(browser, site, checkpoints):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = open_app(context, site)
    try:
        # the checkpoint's files dropped on the page (no folder: loose files)
        files = {p.name: list(p.read_bytes()) for p in checkpoints["chat"].iterdir()}
        page.evaluate("""(files) => {
            const dt = new DataTransfer();
            for (const [name, bytes] of Object.entries(files)) dt.items.add(new File([new Uint8Array(bytes)], name));
            const zone = document.getElementById('model-drop');
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""", files)
        model = wait_model(page)
        assert model["kind"] == "causal_lm" and page.is_visible("#chat")
        assert model["thinking"] and page.is_visible("#chat-thinking") and page.is_checked("#chat-thinking")
        page.evaluate("""() => {
            window.tokens = []; window.app.engine.on('token', (e) => window.tokens.push(e));
            window.chatCalls = [];
            const call = window.app.engine.call.bind(window.app.engine);
            window.app.engine.call = (method, params) => {
                if (method === 'chat') window.chatCalls.push(params);
                return call(method, params);
            };
        }""")
        page.fill("#chat-input", "Hello! How are you today?")
        page.keyboard.press("Enter")
        page.wait_for_selector("#chat-log li.assistant.streaming", timeout=TRAIN_MS)
        page.wait_for_function("() => !document.querySelector('#chat-log li.streaming')", timeout=TRAIN_MS)
        tokens = page.evaluate("() => window.tokens")
        reply = page.evaluate("() => JSON.parse(localStorage.getItem('py_engine.app')).conversation.messages")[-1]
        assert len(tokens) >= 2 and "".join(t["text"] for t in tokens) == reply["content"]
        assert page.locator("#chat-log li.user").inner_text() == "Hello! How are you today?"
        queue = status(page)["queue"]
        assert queue["by_source"].get("chat") == 1, queue
        shot(page, "09-chat")
        # with logging off, the next exchange is not queued; with thinking off, the template
        # gets enable_thinking false
        page.uncheck("#chat-log-switch")
        page.uncheck("#chat-thinking")
        page.fill("#chat-input", "What is the capital of France?")
        page.click("#chat-send")
        page.wait_for_function("() => document.querySelectorAll('#chat-log li.assistant').length === 2 && "
                               "!document.querySelector('#chat-log li.streaming')", timeout=TRAIN_MS)
        assert status(page)["queue"]["by_source"].get("chat") == 1
        calls = page.evaluate("() => window.chatCalls")
        assert [c.get("template_args") for c in calls] == [{"enable_thinking": True}, {"enable_thinking": False}]
        # the tiny model's 256 positions hold the second prompt only without the first exchange
        assert page.locator("#chat-log li.bad").count() == 0
        assert "did not see the 2 oldest messages" in page.inner_text("#chat-log li.note")
        shot(page, "09b-chat-thinking-off")
        # a reply that thought first (as Qwen3 with thinking on): the thinking folds away
        page.evaluate("""async () => {
            const view = await import('./views.mjs');
            view.renderChat(document.getElementById('chat-log'), [
                {role: 'user', content: 'What is 2 + 2?'},
                {role: 'assistant', content: '<think>\\nTwo plus two is four.\\n</think>\\n\\nIt is 4.'},
                {role: 'user', content: 'And 3 + 3?'},
                {role: 'assistant', content: '<think>\\nThree and three'}]);
        }""")
        thinking = page.locator("#chat-log details.thinking")
        assert thinking.count() == 2 and not thinking.first.get_attribute("open")
        assert thinking.first.locator("summary").inner_text() == "Thinking (5 words)"
        assert not thinking.first.locator("div").is_visible()
        first = page.locator("#chat-log li.assistant").first
        assert first.inner_text().endswith("It is 4.") and "Two plus" not in first.inner_text()
        assert "(no answer after thinking)" in page.locator("#chat-log li.assistant").last.inner_text()
        thinking.first.locator("summary").click()
        assert thinking.first.locator("div").inner_text() == "Two plus two is four."
        shot(page, "09c-chat-thinking-folded")
    finally:
        context.close()


def test_a_chat_model_as_a_classifier_and_a_fine_tuned_classifier(browser, site, checkpoints,
                                                                  tmp_path):
    """"Use a chat model as a classifier" reads a picked decoder as a sequence classifier of the
    labels typed; a fine-tuned classifier's folder (a RoBERTa's, not BERT's family name) loads
    with its own labels and pooling when none are typed, and with the typed ones when they are
    (none of its own: a note says its head is not used)."""
    from test_fine_tuned_classifier import LABELS, bare_dir, fine_tuned_dir

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = open_app(context, site)
    try:
        page.check("#model-as-classifier")
        page.fill("#model-labels", "news, code")
        shot(page, "12a-chat-model-as-classifier-asked")
        page.set_input_files("#model-folder", str(checkpoints["chat"]))
        model = wait_model(page)
        assert model["kind"] == "classification" and model["labels"] == ["news", "code"]
        assert model["pooling"] == "last" and model["family"] == "qwen2"
        assert page.is_visible("#classify") and not page.is_visible("#chat")
        summary = page.inner_text("#model-summary")
        assert "classifier" in summary and "news, code" in summary and "last" in summary
        assert set(predict(page, "a bug in the parser")["probs"]) == {"news", "code"}
        shot(page, "12b-chat-model-as-classifier")
    finally:
        context.close()
    fine_tuned = fine_tuned_dir(bare_dir(tmp_path, "roberta"), tmp_path / "sentiment-roberta")
    for typed, labels in (("", LABELS), ("positive, sarcastic", ["positive", "sarcastic"]),
                          ("spam, ham", ["spam", "ham"])):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = open_app(context, site)
        try:
            page.fill("#model-labels", typed)
            page.set_input_files("#model-folder", str(fine_tuned))
            model = wait_model(page)
            assert model["kind"] == "classification" and model["labels"] == labels
            assert model["pooling"] == "cls" and model["family"] == "roberta"
            notes = page.locator("[data-banner=model-notes]")
            if not typed:
                assert ", ".join(LABELS) in page.inner_text("#model-summary")
                shot(page, "12c-fine-tuned-classifier")
            if labels == ["spam", "ham"]:   # none of its own: the page says its head is not used
                assert model["notes"] == [f"The checkpoint is a classifier of the labels {LABELS}, "
                                          "none of which is among ['spam', 'ham']: its head is "
                                          "not used, a new one starts"]
                assert "its head is not used" in notes.inner_text()
                shot(page, "12d-fine-tuned-classifier-other-labels")
            else:
                assert model["notes"] == [] and notes.count() == 0
        finally:
            context.close()


def test_an_encoder_decoder_from_a_picked_folder_chats(browser, site, checkpoints):
    """FLAN-T5's layout picked as a folder: the page shows it as an encoder-decoder with the chat
    panel, and its reply streams in and is logged to learn from."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = open_app(context, site)
    try:
        page.set_input_files("#model-folder", str(checkpoints["t5"]))
        model = wait_model(page)
        assert model["kind"] == "seq2seq" and model["family"] == "t5"
        assert page.is_visible("#chat") and not page.is_visible("#classify")
        assert not page.is_visible("#chat-thinking")      # no chat template, no switch
        assert "encoder-decoder (seq2seq)" in page.inner_text("#model-summary")
        page.fill("#chat-input", "Spell cat backwards.")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#chat-log li.assistant').length === 1 && "
                               "!document.querySelector('#chat-log li.streaming')", timeout=TRAIN_MS)
        assert status(page)["queue"]["by_source"].get("chat") == 1
        page.wait_for_function("() => document.getElementById('queue-total').textContent.startsWith('1 ')",
                               timeout=TRAIN_MS)
        shot(page, "10-encoder-decoder")
    finally:
        context.close()
