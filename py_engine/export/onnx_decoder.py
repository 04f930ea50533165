"""A decoder read as a sequence classifier (models/decoder_classifier.py) as ONNX nodes: its final
hidden states [batch, sequence, hidden] for onnx_export's classifier graph, which pools them
(the last real token, or the mean over real tokens) and applies the score head.

The math is the decoder's at inference (models/llama.py, gpt2.py, phi.py; no dropout):
    Llama family (Llama, Qwen2/3, Mistral, SmolLM3, Gemma 1/2/3, Phi-3): embeddings (Gemma:
        times sqrt(hidden)); per layer RMSNorm (Gemma's by 1 + weight), q, k, v (Phi-3's fused
        qkv_proj split by columns), QK-norm per head (Qwen3, Gemma 3), RoPE at the layer's
        base (not on SmolLM3's NoPE layers), grouped-query causal attention (Gemma's
        query_pre_attn_scalar, Gemma 2's soft cap, a sliding window where the layer has one),
        o_proj (Gemma 2/3: normalised before the add), the gated MLP (SiLU or GELU-tanh);
        the final RMSNorm.
    GPT-2: token and learned position rows, pre-norm LayerNorm blocks with the fused c_attn,
        GELU (tanh), the final ln_f.
    Phi-2: one LayerNorm feeding the attention (partial rotary) and the MLP side by side.
Attention is causal over the keys the attention mask keeps: a masked pair's score gets
float32's lowest value (padding, the future and a window's outside taken together by Min,
never summed), as transformers' eager attention masks. Positions count from 0 in every row
(transformers' default position ids), so texts are padded on the right as the engine pads
them; the pooled token is the last one the attention mask keeps. The rotary tables are built
in the graph from each layer's inverse frequencies (kernels/rope.py's: default, linear,
llama3, longrope, whose long factors take over past original_max_position_embeddings), in
float32 as transformers builds them.
Grouped-query attention keeps the query heads of one KV head together ([B, Hkv, G, T, D])
and lets MatMul broadcast the keys and values over them, as transformers' repeat_kv pairs
query head h with KV head h // G.
"""

import math

import numpy as np
from onnx import TensorProto

from ..kernels.rope import rope_attention_scaling, rotary_dim
from ..models.gpt2_config import Gpt2Config
from ..models.phi_config import PhiConfig
from ..ops.rope import rope_inv_freq
from .onnx_export import _columns, _gelu, _layer_norm, _linear, _rotate, _steps, _weight


def decoder_hidden(g, merged, mask):
    """The decoder's final hidden states [B, T, hidden] (after its final norm). mask: the
    attention mask as float32 [B, T]."""
    decoder = merged.config.decoder
    biases = _Biases(g, mask)
    if isinstance(decoder, Gpt2Config):
        return _gpt2(g, merged, decoder, biases)
    if isinstance(decoder, PhiConfig):
        return _phi(g, merged, decoder, biases)
    return _llama(g, merged, decoder, biases)


class _Biases:
    """The additive masks of the scores [B, Hkv, G, T, T]: padding and the future, and for a
    sliding window also the keys a window or more behind the query, made once per window."""

    def __init__(self, g, mask):
        self.g = g
        steps = _steps(g)
        offset = g.op("Sub", [g.op("Unsqueeze", [steps, "zero"]),
                              g.op("Unsqueeze", [steps, "axis1"])])     # key - query [T, T]
        self.offset = offset
        zero = g.const("zero_f", np.float32(0.0))
        ahead = g.op("Where", [g.op("Greater", [offset, g.const("zero_offset", np.array(0, np.int64))]),
                               "lowest", zero])
        padding = g.op("Mul", [g.op("Sub", ["one", mask]), "lowest"])
        padding = g.op("Unsqueeze", [padding, g.const("axes123", np.array([1, 2, 3], np.int64))])
        self.causal = g.op("Min", [padding, ahead])     # [B, 1, 1, T, T]
        self._windows = {None: self.causal}

    def of(self, window):
        """The bias of a layer attending over `window` keys (None: every earlier key)."""
        if window not in self._windows:
            g = self.g
            far = g.op("Not", [g.op("Greater", [self.offset, g.const(
                f"window_{window}", np.array(-window, np.int64))])])    # key - query <= -window
            outside = g.op("Where", [far, "lowest", "zero_f"])
            self._windows[window] = g.op("Min", [self.causal, outside])
        return self._windows[window]


def _rope_tables(g, head_dim, rope, key):
    """(cos, sin) [T, R] (R the rotated dimensions, each table its halves' frequencies twice) for
    the input's length T: positions times inverse frequencies in float32, times the attention
    scaling. longrope: the long factors' frequencies where T exceeds
    original_max_position_embeddings, as transformers picks them by length."""
    positions = g.op("Unsqueeze", [g.op("Cast", [_steps(g)], to=TensorProto.FLOAT), "axis1"])

    def frequencies(name, seq_len):
        inv = np.asarray(rope_inv_freq(head_dim, rope, seq_len), np.float32)
        return g.const(name, np.concatenate([inv, inv])[None, :])

    inv = frequencies(f"{key}_inv_freq", None)
    p = rope or {}
    if p.get("rope_type", p.get("type")) == "longrope":
        long = frequencies(f"{key}_inv_freq_long", int(p["original_max_position_embeddings"]) + 1)
        length = g.op("Gather", [g.op("Shape", ["input_ids"]), "one_index"], axis=0)
        beyond = g.op("Greater", [length, g.const(f"{key}_original", np.array(
            int(p["original_max_position_embeddings"]), np.int64))])
        inv = g.op("Where", [beyond, long, inv])
    angles = g.op("Mul", [positions, inv])
    scaling = g.const(f"{key}_scaling", np.float32(rope_attention_scaling(rope)))
    return tuple(g.op("Mul", [g.op(kind, [angles]), scaling]) for kind in ("Cos", "Sin"))


def _rms_norm(g, merged, x, name, eps, offset=0.0):
    """x / sqrt(mean(x^2) + eps) * (offset + weight) over the last axis (float32, as
    transformers' RMSNorm computes)."""
    weight = _weight(merged, name) + np.float32(offset)
    square = g.op("ReduceMean", [g.op("Mul", [x, x])], axes=[-1], keepdims=1)
    root = g.op("Sqrt", [g.op("Add", [square, g.const(f"eps_{eps!r}", np.float32(eps))])])
    return g.op("Mul", [g.op("Div", [x, root]), g.const(f"{name}+{offset}", weight)])


def _heads(g, x, heads, kv_heads, dim, role):
    """[B, T, heads * D] -> queries [B, Hkv, G, T, D], keys [B, Hkv, 1, D, T] (transposed for
    the product) or values [B, Hkv, 1, T, D]."""
    if role == "query":
        shape, perm = [0, 0, kv_heads, heads // kv_heads, dim], [0, 2, 3, 1, 4]
    else:
        shape = [0, 0, kv_heads, 1, dim]
        perm = [0, 2, 3, 4, 1] if role == "key" else [0, 2, 3, 1, 4]
    split = g.const(f"split_{shape}", np.array(shape, np.int64))
    return g.op("Transpose", [g.op("Reshape", [x, split])], perm=perm)


def _attend(g, q, k, v, bias, scale, softcap=None):
    """softmax(q k^T scale (soft-capped) + bias) v, merged back to [B, T, H * D]."""
    scores = g.op("Mul", [g.op("MatMul", [q, k]), g.const(f"scale_{scale!r}", np.float32(scale))])
    if softcap is not None:
        cap = g.const(f"softcap_{softcap!r}", np.float32(softcap))
        scores = g.op("Mul", [g.op("Tanh", [g.op("Div", [scores, cap])]), cap])
    context = g.op("MatMul", [g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1), v])
    context = g.op("Transpose", [context], perm=[0, 3, 1, 2, 4])     # [B, T, Hkv, G, D]
    return g.op("Reshape", [context, g.const("merge_heads", np.array([0, 0, -1], np.int64))])


def _llama(g, merged, c, biases):
    H, Hkv, D, h = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size
    eps, offset = c.rms_norm_eps, c.norm_offset
    x = g.op("Gather", [g.const("model.embed_tokens.weight",
                                _weight(merged, "model.embed_tokens.weight")), "input_ids"])
    if c.embedding_scale is not None:
        x = g.op("Mul", [x, g.const("embedding_scale", np.float32(c.embedding_scale))])
    tables = {}
    for rope in c.layer_rope:
        if id(rope) not in tables:
            tables[id(rope)] = _rope_tables(g, D, rope, f"rope{len(tables)}")
    scale = (c.query_scale or 1.0) / math.sqrt(D)
    for n in range(c.num_hidden_layers):
        p = f"model.layers.{n}."
        a = _rms_norm(g, merged, x, p + "input_layernorm.weight", eps, offset)
        if c.fused_projections:
            qkv = _linear(g, merged, a, p + "self_attn.qkv_proj")
            q, k, v = (_columns(g, qkv, lo, hi) for lo, hi in
                       ((0, H * D), (H * D, (H + Hkv) * D), ((H + Hkv) * D, (H + 2 * Hkv) * D)))
        else:
            q, k, v = (_linear(g, merged, a, p + f"self_attn.{m}_proj") for m in "qkv")
        q, v = _heads(g, q, H, Hkv, D, "query"), _heads(g, v, H, Hkv, D, "value")
        k = _heads(g, k, H, Hkv, D, "value")        # [B, Hkv, 1, T, D] until rotated
        if c.qk_norm:
            q = _rms_norm(g, merged, q, p + "self_attn.q_norm.weight", eps, offset)
            k = _rms_norm(g, merged, k, p + "self_attn.k_norm.weight", eps, offset)
        if c.layer_rope_used[n]:          # SmolLM3's NoPE layers do not rotate
            rope = c.layer_rope[n]
            rotated = rotary_dim(D, rope)
            q = _rotate(g, q, tables[id(rope)], rotated, D)
            k = _rotate(g, k, tables[id(rope)], rotated, D)
        k = g.op("Transpose", [k], perm=[0, 1, 2, 4, 3])
        a = _attend(g, q, k, v, biases.of(c.layer_windows[n]), scale, c.attn_logit_softcapping)
        a = _linear(g, merged, a, p + "self_attn.o_proj")
        if c.sandwich_norms:
            a = _rms_norm(g, merged, a, p + "post_attention_layernorm.weight", eps, offset)
        x = g.op("Add", [x, a])
        mlp_norm = "pre_feedforward_layernorm" if c.sandwich_norms else "post_attention_layernorm"
        a = _rms_norm(g, merged, x, p + mlp_norm + ".weight", eps, offset)
        if c.fused_projections:
            gate_up = _linear(g, merged, a, p + "mlp.gate_up_proj")
            gate = _columns(g, gate_up, 0, c.intermediate_size)
            up = _columns(g, gate_up, c.intermediate_size, 2 * c.intermediate_size)
        else:
            gate, up = (_linear(g, merged, a, p + f"mlp.{m}_proj") for m in ("gate", "up"))
        if c.mlp_activation == "gelu_tanh":
            gate = _gelu(g, gate, "tanh")
        else:                           # SiLU: x sigmoid(x)
            gate = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        m = _linear(g, merged, g.op("Mul", [gate, up]), p + "mlp.down_proj")
        if c.sandwich_norms:
            m = _rms_norm(g, merged, m, p + "post_feedforward_layernorm.weight", eps, offset)
        x = g.op("Add", [x, m])
    return _rms_norm(g, merged, x, "model.norm.weight", eps, offset)


def _gpt2(g, merged, c, biases):
    H, h, eps = c.num_attention_heads, c.hidden_size, c.layer_norm_epsilon
    positions = g.op("Gather", [g.const("transformer.wpe.weight", _weight(merged, "transformer.wpe.weight")),
                                _steps(g)])
    x = g.op("Add", [g.op("Gather", [g.const("transformer.wte.weight", _weight(
        merged, "transformer.wte.weight")), "input_ids"]), positions])
    for n in range(c.num_hidden_layers):
        p = f"transformer.h.{n}."
        a = _layer_norm(g, merged, x, p + "ln_1", eps)
        qkv = _linear(g, merged, a, p + "attn.c_attn")
        q, k, v = (_columns(g, qkv, i * h, (i + 1) * h) for i in range(3))
        a = _attend(g, _heads(g, q, H, H, h // H, "query"), _heads(g, k, H, H, h // H, "key"),
                    _heads(g, v, H, H, h // H, "value"), biases.of(None), 1.0 / math.sqrt(h // H))
        x = g.op("Add", [x, _linear(g, merged, a, p + "attn.c_proj")])
        a = _layer_norm(g, merged, x, p + "ln_2", eps)
        f = _gelu(g, _linear(g, merged, a, p + "mlp.c_fc"), c.gelu_approximate)
        x = g.op("Add", [x, _linear(g, merged, f, p + "mlp.c_proj")])
    return _layer_norm(g, merged, x, "transformer.ln_f", eps)


def _phi(g, merged, c, biases):
    H, Hkv, D, eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.layer_norm_eps
    x = g.op("Gather", [g.const("model.embed_tokens.weight",
                                _weight(merged, "model.embed_tokens.weight")), "input_ids"])
    tables = _rope_tables(g, D, c.rope_parameters, "rope0")
    rotated = rotary_dim(D, c.rope_parameters)
    for n in range(c.num_hidden_layers):
        p = f"model.layers.{n}."
        a = _layer_norm(g, merged, x, p + "input_layernorm", eps)
        q = _rotate(g, _heads(g, _linear(g, merged, a, p + "self_attn.q_proj"), H, Hkv, D, "query"),
                    tables, rotated, D)
        k = _rotate(g, _heads(g, _linear(g, merged, a, p + "self_attn.k_proj"), H, Hkv, D, "value"),
                    tables, rotated, D)
        v = _heads(g, _linear(g, merged, a, p + "self_attn.v_proj"), H, Hkv, D, "value")
        k = g.op("Transpose", [k], perm=[0, 1, 2, 4, 3])
        attention = _linear(g, merged, _attend(g, q, k, v, biases.of(None), 1.0 / math.sqrt(D)),
                            p + "self_attn.dense")
        f = _gelu(g, _linear(g, merged, a, p + "mlp.fc1"), c.gelu_approximate)
        x = g.op("Add", [g.op("Add", [x, attention]), _linear(g, merged, f, p + "mlp.fc2")])
    return _layer_norm(g, merged, x, "model.final_layernorm", eps)
