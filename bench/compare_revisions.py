"""The NumPy backend of an older revision against this checkout's, side by side with torch +
PEFT: one alternating run (bench/processes.py) per shape, where each NumPy contender imports
py_engine from its own tree, so a change to the ops is measured under the same load as its
baseline.

    python bench/compare_revisions.py REV                 # tiny Llama and MiniLM steps
    python bench/compare_revisions.py REV --only decoder  # or --only bert

REV's py_engine/ is taken with `git archive` into a temporary directory; the contenders drive
both trees through the same public API (TextClassifier / ChatModel create and fit). Where
OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set, each tree also runs without them. Writes
bench/results/revisions.json and prints a table of per-step ratios to torch.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from py_engine.cli import COUNT  # noqa: E402

import bert_step  # noqa: E402
import decoder_step  # noqa: E402
from processes import Spec, alternate, call, export_revision, openblas_variants  # noqa: E402

SHAPES = {
    "decoder": ("tiny Llama 8x128", "decoder_step:TorchChat", "decoder_step:EngineChat"),
    "bert": ("MiniLM 16x32", "bert_step:TorchClassifier", "bert_step:EngineClassifier"),
}


def compare(shape, model_dir, old_root, rev, rounds, warmup):
    label, torch_factory, engine_factory = SHAPES[shape]
    args = {"model_dir": model_dir, "steps": 3}
    specs = {"torch": Spec(torch_factory, args)}
    for suffix, spec in openblas_variants(Spec(engine_factory, args)).items():
        specs[f"numpy {rev}{suffix}"] = Spec(spec.factory, spec.args, spec.unset, spec.set, engine_root=old_root)
        specs[f"numpy this tree{suffix}"] = spec
    return {"label": label, **alternate(specs, baseline="torch", rounds=rounds, warmup=warmup)}


def table(results):
    rows = [("step", "contender", "ms/step", "vs torch (paired rounds)")]
    for shape in SHAPES:
        r = results.get(shape)
        if r is None:
            continue
        for name in [n for n in r if n == "torch" or n.startswith("numpy")]:
            c = r[name]
            ratio = "" if name == "torch" else f"{c['vs_torch']:.2f}x ({c['vs_torch_paired']:.2f}x)"
            rows.append((r["label"], name, f"{c['seconds'] * 1e3:.0f}", ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the older revision (a commit, tag or branch)")
    parser.add_argument("--only", choices=sorted(SHAPES), action="append")
    parser.add_argument("--rounds", type=COUNT, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "revisions.json")
    args = parser.parse_args()
    results = {"command": "python bench/compare_revisions.py " + " ".join(sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "old"
        old_root.mkdir()
        results["rev"] = export_revision(args.rev, old_root)
        for shape in args.only or list(SHAPES):
            if shape == "decoder":
                model_dir = call("checkpoints:llama_dir", path=str(Path(tmp) / "llama"),
                                 config=decoder_step.TINY_LLAMA)
            else:
                model_dir = bert_step.minilm_dir()
            results[shape] = compare(shape, model_dir, str(old_root), args.rev, args.rounds, warmup=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
