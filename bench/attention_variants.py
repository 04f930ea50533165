"""The causal attention's variants side by side on one adapter (shaders/causal_attention.wgsl):
the backward's grad_kv with a workgroup per KV head (each summing its group's query heads)
against a workgroup per query head writing partial sums that a second kernel adds
(`split_heads`), on decoder shapes whose KV heads alone make few workgroups; and a decoding
step (one query row over all the shape's positions, cached, as one sequence) on
causal_attention_decode with the keys split as the engine chooses (`decode_splits`), with one
workgroup a row, and on the training forward, which gives the row one thread. Milliseconds
per backward (stats, grad_q, grad_kv and the sum) and per decoding step, the forward beside
them, rounds alternating; the engine's choice is named.

    python bench/attention_variants.py [--size small|full] [--seconds 60]   # native adapter: JSON

"full": TinyLlama's attention at batch 4 x 256 (32 query heads, 4 KV heads of 64) and Llama 3
8B's at 1 x 1024 (32 and 8 of 128); "small": a shape a software adapter runs in seconds.
"""

import sys
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from gpu_profile import on_native, time_alternating, variants_main  # noqa: E402

# (name, batch, seq, heads, kv_heads, head_dim)
SHAPES = {"full": [("TinyLlama", 4, 256, 32, 4, 64), ("Llama 3 8B", 1, 1024, 32, 8, 128)],
          "small": [("small", 2, 64, 8, 2, 32)]}
VARIANTS = {"per KV head": False, "per query head": True}
# forward()'s options for each way of a decoding step; the first is the engine's
DECODE_VARIANTS = {"decode entry": {}, "one workgroup a row": {"decode_splits": 1},
                   "training forward": {"decode_entry": False}}


async def measure(device, size="full", seconds=60.0, repeats=3, rounds=3):
    """{"shapes": {shape: {"forward_ms", "decode_ms": {entry: ms}, "backward_ms": {variant: ms},
    "refused": {label: why}, "engine": variant}}}: medians over `rounds` (after one that
    compiles and warms up), variants alternating; what the recorder refused is not timed."""
    import random

    from py_engine.kernels.causal_attention import CausalAttentionKernels

    started = time.perf_counter()
    rng = random.Random(0)
    out = {"adapter": device.info.as_dict(), "repeats": repeats, "shapes": {}}
    kernels = {}
    for name, batch, seq, heads, kv_heads, dim in SHAPES[size]:
        if time.perf_counter() - started > seconds:
            out["stopped"] = f"out of time before {name}"
            return out
        if dim not in kernels:
            kernels[dim] = await CausalAttentionKernels.load(device, head_dim=max(128, dim))
        att = kernels[dim]

        def buffer(count):
            return device.buffer_from(array("f", (rng.uniform(-1, 1) for _ in range(count))))
        q, dout = buffer(batch * seq * heads * dim), buffer(batch * seq * heads * dim)
        k, v = buffer(batch * seq * kv_heads * dim), buffer(batch * seq * kv_heads * dim)
        make = lambda count: device.create_buffer(4 * count)
        out_, dq, lse, stats = make(q.size // 4), make(q.size // 4), make(batch * heads * seq), \
            make(2 * batch * heads * seq)
        dk, dv = make(k.size // 4), make(v.size // 4)
        shape = dict(batch=batch, seq=seq, heads=heads, kv_heads=kv_heads, head_dim=dim)
        programs, refused = {}, {}

        def record(label, add):
            """programs[label]: `repeats` calls of add(program), unless the recorder refuses
            the shape (loops an adapter would cut short: lavapipe)."""
            program = device.program(label)
            try:
                for _ in range(repeats):
                    add(program)
            except ValueError as e:
                refused[label] = str(e)
                return
            programs[label] = program

        record("forward", lambda p: att.forward(p, q, k, v, None, out_, lse, **shape))
        step = dict(shape, batch=1, seq=1, past=batch * seq - 1)   # every row, one sequence
        for label, options in DECODE_VARIANTS.items():
            record(label, lambda p, o=options: att.forward(p, q, k, v, None, out_, lse, **o, **step))
        for label, split in VARIANTS.items():
            record(label, lambda p, split=split: att.backward(
                p, dout, q, k, v, None, out_, lse, stats, dq, dk, dv, split_heads=split, **shape))
        seconds_each = await time_alternating(device, programs, repeats, rounds)
        ms = {label: 1e3 * t for label, t in seconds_each.items()}
        print(f"[attention_variants] {name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items()),
              flush=True)
        engine = "per query head" if att.splits_heads(**shape) else "per KV head"
        out["shapes"][f"{name} {batch}x{seq}, {heads}/{kv_heads} heads of {dim}"] = {
            "forward_ms": ms.pop("forward", None),
            "decode_ms": {label: ms.pop(label) for label in DECODE_VARIANTS if label in ms},
            "decode_keys": batch * seq, "decode_splits": att.decode_splits(1, heads, batch * seq),
            "backward_ms": ms, "refused": refused, "engine": engine}
    out["seconds"] = time.perf_counter() - started
    return out


def measure_native(size="full", seconds=60.0):
    """measure() on the native adapter (what bench/gpu_device.py calls in a process)."""
    return on_native(measure, size, seconds)


def table_rows(result):
    """Rows (measure, value, note) for bench/gpu_device.py's table: each shape's backward and
    decoding step as the engine records them, against the other way."""
    rows = []
    for shape, r in result["shapes"].items():
        splits = r.get("decode_splits", 1)
        decode = (f"decoding step over {r['decode_keys']:,} keys" if "decode_keys" in r
                  else "decoding step")
        for what, times, engine, labels in (
                ("backward", r["backward_ms"], r["engine"], VARIANTS),
                (decode, r["decode_ms"], "decode entry", DECODE_VARIANTS)):
            if engine not in times:
                continue
            notes = [f"{other} {times[other]:.3f} ms: the engine's way "
                     f"{times[other] / times[engine]:.2f}x as fast" if other in times
                     else f"{other} refused: {r['refused'].get(other, '')[:100]}"
                     for other in labels if other != engine]
            named = f"decode entry, {splits} split{'s' * (splits != 1)}" if labels is DECODE_VARIANTS else engine
            rows.append((f"attention {what} {shape} ({named})", f"{times[engine]:.3f} ms",
                         "; ".join(notes)))
    return rows


def main(argv=None):
    variants_main(__doc__, SHAPES, measure_native, 60.0, argv)


if __name__ == "__main__":
    main()
