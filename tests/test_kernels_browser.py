"""A representative subset of the training kernels (BERT's, DoRA's, the multi-label loss, and the decoders' RMSNorm, RoPE and
SwiGLU) and generation's argmax, sampling candidates and split decoding attention run inside Chromium (Pyodide + WebGPU, compiled by Tint, run on SwiftShader), checked
against the NumPy references on the host with
the same bounds as on lavapipe. Inputs are drawn fresh here, outputs are NaN-poisoned there."""

import json

import numpy as np
import pytest

from py_engine.harness import run_json
from py_engine.ops import argmax as argmax_ops
from py_engine.ops import attention as attn_ops
from py_engine.ops import causal_attention as causal_ops
from py_engine.ops import cross_entropy as ce_ops
from py_engine.ops import dora as dora_ops
from py_engine.ops import dropout as dropout_ops
from py_engine.ops import gelu as gelu_ops
from py_engine.ops import layernorm as ln_ops
from py_engine.ops import matmul as mm_ops
from py_engine.ops import rmsnorm as rms_ops
from py_engine.ops import rope as rope_ops
from py_engine.ops import swiglu as swiglu_ops
from py_engine.ops import target_loss as target_ops

pytestmark = pytest.mark.browser

# Runs in the page: INPUTS is a dict of float/int lists; returns each output as a float list.
PAGE = """
import json, struct
from array import array
from py_engine.gpu import open_device
from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.argmax import ArgmaxKernels, decode_candidates, decode_choices
from py_engine.kernels.attention import AttentionKernels
from py_engine.kernels.causal_attention import CausalAttentionKernels
from py_engine.kernels.cross_entropy import CrossEntropyKernels, create_metrics, decode_metrics
from py_engine.kernels.dora import DoraKernels
from py_engine.kernels.dropout import DropoutKernels, pack_step
from py_engine.kernels.gelu import GeluKernels
from py_engine.kernels.layernorm import LayerNormKernels
from py_engine.kernels.matmul import MatmulKernels
from py_engine.kernels.rmsnorm import RmsNormKernels
from py_engine.kernels.rope import RopeKernels
from py_engine.kernels.swiglu import SwiGLUKernels
from py_engine.kernels.target_loss import TargetLossKernels

I = json.loads(INPUTS)
device = await open_device()
f = lambda name: device.buffer_from(array("f", I[name]))
u = lambda name: device.buffer_from(array("I", I[name]))
out = {}
program = device.program()
reads = {}
def result(name, buffer):
    reads[name] = program.read(buffer)

R, C = I["rows"], I["cols"]
ln = await LayerNormKernels.load(device)
y, mean, rstd = poisoned(device, R * C), poisoned(device, R), poisoned(device, R)
ln.forward(program, f("x"), f("gamma"), f("beta"), y, mean, rstd, R, C)
result("layernorm", y)

gelu = await GeluKernels.load(device)
g, dg = poisoned(device, R * C), poisoned(device, R * C)
gelu.forward(program, f("x"), g, R * C)
gelu.backward(program, f("dy"), f("x"), dg, R * C)
result("gelu", g); result("gelu_backward", dg)

B, T, H, D = I["B"], I["T"], I["H"], I["D"]
mm = await MatmulKernels.load(device)
attn = await AttentionKernels.load(device, matmul=mm)
probs, ctx = poisoned(device, B * H * T * T), poisoned(device, B * T * H * D)
attn.forward(program, f("q"), f("k"), f("v"), u("mask"), probs, ctx, batch=B, seq=T, heads=H, head_dim=D)
result("context", ctx)

y2 = poisoned(device, R * I["out"])
mm.linear(program, f("x"), f("w"), y2, R, C, I["out"], bias=f("b"))
result("linear", y2)

# DoRA around the same weight: W + s B.A, its row norms, the scaled output, the magnitude's
# gradient (z: y2 without the bias stands in), the merged weight
O, DR = I["out"], I["dora_r"]
dora = await DoraKernels.load(device)
adapted, dnorm, dscale = poisoned(device, O * C), poisoned(device, O), poisoned(device, O)
dy_out, dmag = poisoned(device, R * O), poisoned(device, O)
dora.adapted_weight(program, mm, f("w"), f("dora_a"), f("dora_b"), adapted, O, C, DR, I["dora_s"])
dora.weight_norm(program, adapted, f("dora_m"), dnorm, dscale, O, C)
dora.scale_columns(program, y2, dscale, dy_out, R, O, bias=f("b"))
dora.magnitude_grad(program, f("dora_dy"), y2, dnorm, dmag, R, O)
dora.scale_rows(program, dscale, adapted, O, C)
result("dora_norm", dnorm); result("dora_y", dy_out); result("dora_dm", dmag)
result("dora_merged", adapted)
# the tiled variant too (small workgroups: every thread's four rows and columns in use): no
# browser runs it by default, so Tint must be shown to compile it
y3 = poisoned(device, R * I["out"])
tiled = await MatmulKernels.load(device, "tiled", {"WG_X": 2, "WG_Y": 2, "TILE_K": 4})
tiled.linear(program, f("x"), f("w"), y3, R, C, I["out"], bias=f("b"))
result("linear_tiled", y3)

ce = await CrossEntropyKernels.load(device)
metrics, predictions, dlogits = create_metrics(device), device.create_buffer(4 * R), poisoned(device, R * I["classes"])
shape = dict(rows=R, classes=I["classes"], weights=f("weights"), label_smoothing=0.1)
ce.forward(program, f("logits"), u("labels"), metrics, predictions, **shape)
ce.backward(program, f("logits"), u("labels"), metrics, dlogits, **shape)
result("metrics", metrics); result("dlogits", dlogits)

# a multi-label head's loss (BCE with logits) against f32 targets, a padded row among them
tl = await TargetLossKernels.load(device)
tl_metrics, tl_dlogits = create_metrics(device), poisoned(device, R * I["classes"])
tl.forward(program, f("logits"), u("targets"), tl_metrics, R, I["classes"], "bce")
tl.backward(program, f("logits"), u("targets"), tl_metrics, tl_dlogits, R, I["classes"], "bce")
result("target_metrics", tl_metrics); result("target_dlogits", tl_dlogits)

drop = await DropoutKernels.load(device)
step = drop.step_buffer(); step.write(pack_step(I["seed"], 0))
dropped = poisoned(device, R * C)
drop.forward(program, f("x"), dropped, step, R * C, 0.25, base=I["base"])
result("dropout", dropped)
noised = poisoned(device, R * C)            # NEFTune's noise from the same bits
drop.noise(program, f("x"), noised, step, R * C, 0.05, base=I["base"])
result("noise", noised)

rms = await RmsNormKernels.load(device)
ry, rr = poisoned(device, R * C), poisoned(device, R)
rms.forward(program, f("x"), f("gamma"), ry, rr, R, C)
result("rmsnorm", ry)

sw = await SwiGLUKernels.load(device)
so = poisoned(device, R * C)
sw.forward(program, f("x"), f("dy"), so, R * C)
result("swiglu", so)

rope = await RopeKernels.load(device)
cos, sin = rope.tables(D, T, {"rope_type": "default", "rope_theta": 10000.0})
rq = poisoned(device, B * T * H * D)
rope.forward(program, f("q"), cos, sin, rq, B * T, H, D, T)
result("rope", rq)

am = await ArgmaxKernels.load(device)
chosen = device.buffer_from(bytes([0xef, 0xbe, 0xad, 0xde]) * am.out_words(I["am_rows"]))
am.rows(program, f("am"), chosen, rows=I["am_rows"], cols=I["am_cols"])
result("argmax", chosen)
picked = device.buffer_from(bytes([0xef, 0xbe, 0xad, 0xde]) * am.candidate_words(2, 2048))
am.candidates(program, f("sc"), picked, rows=2, cols=I["sc_cols"], capacity=2048,
              inv_temperature=1.25, top_k=0, tail=0.05)
result("candidates", picked)

# a decoding step whose keys three workgroups per row share, then combined
ca = await CausalAttentionKernels.load(device)
dd, past = I["dec_dim"], I["dec_past"]
dec_out, dec_lse = poisoned(device, 2 * dd), poisoned(device, 2)
ca.forward(program, f("dec_q"), f("dec_k"), f("dec_v"), u("dec_mask"), dec_out, dec_lse, batch=1,
           seq=1, heads=2, kv_heads=1, head_dim=dd, past=past, decode_splits=3)
result("decode_out", dec_out); result("decode_lse", dec_lse)

values = await program.run()
for name, slot in reads.items():
    out[name] = list(array("f", bytes(values[slot])))
out["metrics"] = decode_metrics(bytes(values[reads["metrics"]]))
out["target_metrics"] = decode_metrics(bytes(values[reads["target_metrics"]]))
out["argmax"] = decode_choices(values[reads["argmax"]])
out["candidates"] = [[c.tokens, c.count, c.cut, c.total, c.problem]
                     for c in decode_candidates(values[reads["candidates"]], I["sc_cols"], 2048)]
json.dumps(out)
"""


def rel(out, ref):
    out = np.asarray(out, np.float64)
    assert np.all(np.isfinite(out)), "NaN left in an output: an element was never written"
    return np.linalg.norm(out - np.ravel(ref)) / np.linalg.norm(ref)


def test_training_kernels_in_the_browser(engine_page):
    rng = np.random.default_rng()
    R, C, OUT, CLASSES = 37, 48, 20, 5
    B, T, H, D = 2, 9, 3, 8
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    x, dy, w, b = f32(R, C), f32(R, C), f32(OUT, C), f32(OUT)
    gamma, beta = 1 + 0.1 * f32(C), 0.1 * f32(C)
    q, k, v = f32(B * T, H * D), f32(B * T, H * D), f32(B * T, H * D)
    mask = np.ones((B, T), np.uint32)
    mask[1, 5:] = 0
    logits, labels = 3 * f32(R, CLASSES), rng.integers(0, CLASSES, R).astype(np.uint32)
    weights = rng.uniform(0.5, 2.0, CLASSES).astype(np.float32)
    targets = rng.integers(0, 2, (R, CLASSES)).astype(np.float32)
    targets[:, 0] = rng.uniform(0, 1, R)            # soft targets too
    words = targets.view(np.uint32).copy()
    words[3] = 0xFFFFFFFF                           # a padded row
    seed, base = int(rng.integers(0, 2**32)), int(rng.integers(0, 2**20))
    # argmax rows: normal draws, ties everywhere, a NaN, a +inf, a row of -inf, -inf scattered
    am = np.concatenate([f32(1, 1000), rng.integers(0, 3, (1, 1000)).astype(np.float32),
                         f32(4, 1000)])
    am[2, rng.integers(1000)], am[3, rng.integers(1000)], am[4] = np.nan, np.inf, -np.inf
    am[5, rng.choice(1000, 50, replace=False)] = -np.inf
    # sampling candidates: rows on a grid of 1/16 (every bin exact in f32), a few masked
    sc = (np.round(rng.normal(0.0, 3.0, (2, 3000)) * 16) / 16).astype(np.float32)
    sc[1, rng.choice(3000, 40, replace=False)] = -np.inf
    # decoding: 2 query heads on one KV head over 601 keys in three splits of 201, keys 201 to
    # 599 padding (the second split sees no real key)
    DEC_DIM, DEC_PAST = 8, 600
    dec_q, dec_k, dec_v = f32(1, 2 * DEC_DIM), f32(DEC_PAST + 1, DEC_DIM), f32(DEC_PAST + 1, DEC_DIM)
    dec_mask = np.ones(DEC_PAST + 1, np.uint32)
    dec_mask[201:-1] = 0
    dora_a, dora_b, dora_dy = 0.3 * f32(3, C), 0.3 * f32(OUT, 3), f32(R, OUT)
    dora_m = rng.uniform(0.5, 2.0, OUT).astype(np.float32)
    inputs = {"rows": R, "cols": C, "out": OUT, "classes": CLASSES, "B": B, "T": T, "H": H, "D": D,
              "x": x.ravel().tolist(), "dy": dy.ravel().tolist(), "w": w.ravel().tolist(),
              "b": b.tolist(), "gamma": gamma.tolist(), "beta": beta.tolist(),
              "q": q.ravel().tolist(), "k": k.ravel().tolist(), "v": v.ravel().tolist(),
              "mask": mask.ravel().tolist(), "logits": logits.ravel().tolist(),
              "labels": labels.tolist(), "weights": weights.tolist(), "seed": seed, "base": base,
              "targets": words.ravel().tolist(),
              "am": am.ravel().tolist(), "am_rows": am.shape[0], "am_cols": am.shape[1],
              "sc": sc.ravel().tolist(), "sc_cols": sc.shape[1],
              "dec_dim": DEC_DIM, "dec_past": DEC_PAST, "dec_q": dec_q.ravel().tolist(),
              "dec_k": dec_k.ravel().tolist(), "dec_v": dec_v.ravel().tolist(),
              "dec_mask": dec_mask.tolist(), "dora_r": 3, "dora_s": 1.5,
              "dora_a": dora_a.ravel().tolist(), "dora_b": dora_b.ravel().tolist(),
              "dora_m": dora_m.tolist(), "dora_dy": dora_dy.ravel().tolist()}
    got = run_json(engine_page, PAGE.replace("INPUTS", repr(json.dumps(inputs))))

    d = lambda a: np.asarray(a, np.float64)
    assert rel(got["layernorm"], ln_ops.layernorm_forward(d(x), d(gamma), d(beta))[0]) <= 1e-6
    assert rel(got["gelu"], gelu_ops.gelu_forward(d(x))) <= 1e-6
    assert rel(got["gelu_backward"], gelu_ops.gelu_backward(d(dy), d(x))) <= 1e-6
    assert rel(got["context"], attn_ops.attention_forward(d(q), d(k), d(v), mask, H)[0]) <= 1e-5
    assert rel(got["linear"], mm_ops.linear_forward(d(x), d(w), d(b))) <= 1e-5
    assert rel(got["linear_tiled"], mm_ops.linear_forward(d(x), d(w), d(b))) <= 1e-5
    z = mm_ops.linear_forward(d(x), d(w), d(b))
    scale, norm = dora_ops.weight_norm_scale(d(w), d(dora_a), d(dora_b), 1.5, d(dora_m))
    assert rel(got["dora_norm"], norm) <= 1e-6
    assert rel(got["dora_y"], dora_ops.scale_columns(z, scale, d(b))) <= 1e-5
    assert rel(got["dora_dm"], dora_ops.magnitude_grad(d(dora_dy), z, norm)) <= 1e-5
    assert rel(got["dora_merged"], dora_ops.merged_weight(d(w), d(dora_a), d(dora_b), 1.5, d(dora_m))) <= 1e-6
    loss, correct, wsum = ce_ops.cross_entropy_forward(d(logits), labels, d(weights), 0.1)
    assert abs(got["metrics"]["loss"] - loss) <= 2e-6 * abs(loss)
    assert got["metrics"]["correct"] == correct.sum()
    want = ce_ops.cross_entropy_backward(d(logits), labels, wsum, d(weights), 0.1)
    assert rel(got["dlogits"], want) <= 2e-6
    loss, correct, counted, denominator = target_ops.target_loss_forward(d(logits), words, "bce")
    assert abs(got["target_metrics"]["loss"] - loss) <= 2e-6 * abs(loss)
    assert got["target_metrics"]["correct"] == correct.sum()
    assert got["target_metrics"]["counted"] == counted.sum() == R - 1
    want = target_ops.target_loss_backward(d(logits), words, denominator, "bce")
    assert rel(got["target_dlogits"], want) <= 2e-6
    assert rel(got["rmsnorm"], rms_ops.rmsnorm_forward(d(x), d(gamma))[0]) <= 1e-6
    assert rel(got["swiglu"], swiglu_ops.swiglu_forward(d(x), d(dy))) <= 1e-6
    cos, sin = rope_ops.rope_tables(rope_ops.rope_inv_freq(D, {"rope_type": "default", "rope_theta": 10000.0}), T)
    assert rel(got["rope"], rope_ops.rope_forward(d(q), cos, sin, H)) <= 1e-6
    ref, keep = dropout_ops.dropout_forward(d(x), 0.25, seed, 0, base)
    assert np.array_equal(np.asarray(got["dropout"]).reshape(R, C) != 0, keep)   # the same mask
    assert rel(got["dropout"], ref) <= 2e-7
    noise = dropout_ops.uniform_noise(R * C, 0.05, seed, 0, base).reshape(R, C)
    assert rel(got["noise"], x + noise) <= 2e-7
    index, flags = argmax_ops.argmax_rows(am)
    assert [i for i, _ in got["argmax"]][:2] + [got["argmax"][5][0]] == [index[0], index[1], index[5]]
    assert got["argmax"][4][0] == 0 == index[4]
    assert [p for _, p in got["argmax"]] == [None, None, "NaN", "inf", None, None]
    assert flags.tolist() == [0, 0, 2, 1, 0, 0]
    want_out, want_lse = causal_ops.causal_attention_forward(
        d(dec_q), d(dec_k), d(dec_v), batch=1, heads=2, kv_heads=1, past=DEC_PAST,
        attention_mask=dec_mask[None])
    assert rel(got["decode_out"], want_out) <= 1e-5 and rel(got["decode_lse"], want_lse) <= 1e-5
    for row, (tokens, count, cut, total, problem) in zip(sc, got["candidates"]):
        # the cut is one the reference's f64 sums allow within 1e-4; its tokens are exact
        low = argmax_ops.sampling_candidates(row[None], 1.25, 0, 0.05 * (1 + 1e-4))[0]
        high = argmax_ops.sampling_candidates(row[None], 1.25, 0, 0.05 * (1 - 1e-4))[0]
        assert low[1] <= cut <= high[1] and problem is None
        bins = argmax_ops.candidate_bins(row, low[2], 1.25)
        want = np.flatnonzero((row != -np.inf) & (bins <= cut)).tolist()
        assert tokens == want and count == len(want) and abs(total - low[3]) <= 1e-5 * low[3]
