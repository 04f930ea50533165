"""The word table's gradient (shaders/embedding.wgsl, embedding_backward_word) on the native
WebGPU device: this checkout against an older revision, each in its own process, alternating
rounds (bench/processes.py). Full fine-tuning runs it once per step for each token embedding
(both stacks of a T5), with all of a batch's tokens.

    python bench/embedding_backward.py REV                  # 8 x 256 tokens, 576 wide, 49,152 rows
    python bench/embedding_backward.py REV --batch 4 --seq 128 --hidden 768 --vocab 32128

REV's py_engine/ and shaders/ are taken with `git archive` into a temporary directory. On a
software adapter (lavapipe) the times are a CPU's: they compare the two kernels' work, not a
GPU's speed. Writes bench/results/embedding_backward.json and prints a table.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from py_engine.cli import COUNT  # noqa: E402

from processes import Spec, alternate, export_revision  # noqa: E402


class WordBackward:
    """One contender: the word-table backward of a random batch, recorded once, replayed per
    round (each round waits for the GPU)."""

    def __init__(self, batch, seq, hidden, vocab, seed=0):
        import numpy as np

        from py_engine.gpu import open_device, run_sync
        from py_engine.kernels.embedding import EmbeddingKernels

        self.run_sync = run_sync
        self.device = device = run_sync(open_device())
        kernels = run_sync(EmbeddingKernels.load(device))
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, vocab, (batch, seq)).astype(np.uint32)
        dout = rng.standard_normal((batch * seq, hidden), dtype=np.float32)
        self.program = device.program("embedding backward bench")
        kernels.backward(self.program, device.buffer_from(dout), device.buffer_from(ids),
                         device.create_buffer(4 * batch * seq), device.create_buffer(4 * vocab * hidden),
                         None, None, batch=batch, seq=seq, hidden=hidden, vocab=vocab, positions=seq,
                         type_vocab=1, accumulate=True)
        self.info = {"tokens": batch * seq, "hidden": hidden, "vocab": vocab,
                     "adapter": repr(device.info)}
        self.round()                                   # compiles and warms the pipelines

    def round(self):
        start = time.perf_counter()
        self.program.submit()
        self.run_sync(self.device.synchronize())
        return {"seconds": [time.perf_counter() - start], "loss": 0.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the older revision (a commit, tag or branch)")
    parser.add_argument("--batch", type=COUNT, default=8)
    parser.add_argument("--seq", type=COUNT, default=256)
    parser.add_argument("--hidden", type=COUNT, default=576)
    parser.add_argument("--vocab", type=COUNT, default=49152)
    parser.add_argument("--rounds", type=COUNT, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embedding_backward.json")
    args = parser.parse_args()
    shape = {"batch": args.batch, "seq": args.seq, "hidden": args.hidden, "vocab": args.vocab}
    with tempfile.TemporaryDirectory() as tmp:
        commit = export_revision(args.rev, tmp, ("py_engine", "shaders"))
        specs = {f"{args.rev}": Spec("embedding_backward:WordBackward", shape, engine_root=tmp),
                 "this tree": Spec("embedding_backward:WordBackward", shape)}
        results = alternate(specs, baseline=args.rev, rounds=args.rounds, warmup=1)
    results.update(command="python bench/embedding_backward.py " + " ".join(sys.argv[1:]),
                   rev=commit, shape=shape)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    tokens = args.batch * args.seq
    print(f"| word-table backward, {tokens} tokens x {args.hidden}, {args.vocab} rows | ms "
          f"| {args.rev}'s time / this |")
    print("|---|---|---|")
    for name in specs:
        r = results[name]
        print(f"| {name} | {r['seconds'] * 1e3:.1f} | {r.get('vs_' + args.rev, 1.0):.1f}x |")


if __name__ == "__main__":
    main()
