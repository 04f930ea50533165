"""RoPE reference (py_engine.ops.rope) against transformers' LlamaRotaryEmbedding (frequencies
and cos/sin tables, from a LlamaConfig built offline) and apply_rotary_pos_emb (the rotation,
and its gradient through torch autograd in float64)."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from py_engine.ops.rope import rope_backward, rope_forward, rope_inv_freq, rope_tables

ROPE_PARAMETERS = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "default-500k": {"rope_type": "default", "rope_theta": 500000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
}


def llama_config(rope, heads=4, kv_heads=2, head_dim=16):
    return LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, head_dim=head_dim,
                       max_position_embeddings=256, rope_parameters=dict(ROPE_PARAMETERS[rope]))


@pytest.mark.parametrize("rope", sorted(ROPE_PARAMETERS))
@pytest.mark.parametrize("head_dim", [16, 64])
def test_frequencies_and_tables_match_llama_rotary_embedding(rope, head_dim):
    """transformers computes inv_freq and the angles in float32: ours (float64) agree to that
    precision. With original_max_position_embeddings 64 and head_dim 64 the llama3 case has
    frequencies in all three of its bands."""
    config = llama_config(rope, head_dim=head_dim)
    rotary = LlamaRotaryEmbedding(config)
    inv_freq = rope_inv_freq(head_dim, config.rope_parameters)
    np.testing.assert_allclose(inv_freq, rotary.inv_freq.double().numpy(), rtol=1e-6)
    assert rotary.attention_scaling == 1.0

    seq, offset = 9, 37
    positions = torch.arange(offset, offset + seq)[None, :]
    cos_t, sin_t = rotary(torch.zeros(1, dtype=torch.float32), positions)
    cos, sin = rope_tables(inv_freq, seq, offset)
    # angles up to ~46 rad rounded in float32: ~3e-6 rad
    np.testing.assert_allclose(cos_t[0].double().numpy(), np.concatenate([cos, cos], -1), atol=2e-5)
    np.testing.assert_allclose(sin_t[0].double().numpy(), np.concatenate([sin, sin], -1), atol=2e-5)


def test_llama3_bands():
    p = ROPE_PARAMETERS["llama3"]
    base = rope_inv_freq(64, {"rope_theta": p["rope_theta"]})
    scaled = rope_inv_freq(64, p)
    wavelen = 2 * np.pi / base
    high = wavelen < 64 / 4.0
    low = wavelen > 64 / 1.0
    assert high.any() and low.any() and (~high & ~low).any()
    np.testing.assert_array_equal(scaled[high], base[high])
    np.testing.assert_allclose(scaled[low], base[low] / 8.0, rtol=1e-15)
    mid = ~high & ~low
    assert np.all((scaled[mid] < base[mid]) & (scaled[mid] > base[mid] / 8.0))


@pytest.mark.parametrize("batch, seq, heads, kv_heads, head_dim, offset, rope", [
    (1, 1, 1, 1, 2, 0, "default"), (2, 5, 4, 2, 16, 0, "default"), (3, 7, 2, 1, 32, 11, "linear"),
    (2, 6, 4, 4, 64, 3, "llama3"),
])
def test_rope_matches_apply_rotary_pos_emb(batch, seq, heads, kv_heads, head_dim, offset, rope):
    """q [B*T, H*D] and k [B*T, Hkv*D] as the projections produce them; transformers rotates
    [B, H, T, D] views with cos, sin [B, T, D] (cat(freqs, freqs)). float64 throughout."""
    rng = np.random.default_rng()
    rows = batch * seq
    q = rng.standard_normal((rows, heads * head_dim))
    k = rng.standard_normal((rows, kv_heads * head_dim))
    dq_out = rng.standard_normal(q.shape)
    dk_out = rng.standard_normal(k.shape)
    cos, sin = rope_tables(rope_inv_freq(head_dim, ROPE_PARAMETERS[rope]), seq, offset)

    def heads_view(a, h):
        return torch.tensor(a).reshape(batch, seq, h, head_dim).transpose(1, 2)

    def rows_view(t):
        return t.transpose(1, 2).reshape(rows, -1).detach().numpy()

    tq = torch.tensor(q, requires_grad=True)
    tk = torch.tensor(k, requires_grad=True)
    full = lambda t: torch.tensor(np.concatenate([t, t], -1))[None].expand(batch, -1, -1)
    q_embed, k_embed = apply_rotary_pos_emb(
        tq.reshape(batch, seq, heads, head_dim).transpose(1, 2),
        tk.reshape(batch, seq, kv_heads, head_dim).transpose(1, 2), full(cos), full(sin))
    torch.autograd.backward([q_embed, k_embed],
                            [heads_view(dq_out, heads), heads_view(dk_out, kv_heads)])

    np.testing.assert_allclose(rope_forward(q, cos, sin, heads), rows_view(q_embed), rtol=1e-13,
                               atol=1e-14)
    np.testing.assert_allclose(rope_forward(k, cos, sin, kv_heads), rows_view(k_embed),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(rope_backward(dq_out, cos, sin, heads), tq.grad.numpy(),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(rope_backward(dk_out, cos, sin, kv_heads), tk.grad.numpy(),
                               rtol=1e-13, atol=1e-14)


def test_rope_with_transformers_float32_tables():
    """The whole transformers path (LlamaRotaryEmbedding's float32 tables, apply_rotary_pos_emb)
    against ours on float32 q, to float32 precision."""
    rng = np.random.default_rng()
    seq, heads, head_dim = 8, 2, 32
    config = llama_config("llama3", heads=heads, kv_heads=heads, head_dim=head_dim)
    q = rng.standard_normal((seq, heads * head_dim)).astype(np.float32)
    cos_t, sin_t = LlamaRotaryEmbedding(config)(torch.zeros(1), torch.arange(seq)[None])
    tq = torch.tensor(q).reshape(1, seq, heads, head_dim).transpose(1, 2)
    want, _ = apply_rotary_pos_emb(tq, tq, cos_t, sin_t)
    want = want.transpose(1, 2).reshape(seq, -1).numpy()
    cos, sin = rope_tables(rope_inv_freq(head_dim, config.rope_parameters), seq)
    np.testing.assert_allclose(rope_forward(q.astype(np.float64), cos, sin, heads), want,
                               rtol=1e-5, atol=1e-5)


def test_backward_is_inverse_and_positions_restart_per_sequence():
    rng = np.random.default_rng()
    seq, heads, head_dim = 4, 3, 8
    x = rng.standard_normal((3 * seq, heads * head_dim))
    cos, sin = rope_tables(rope_inv_freq(head_dim), seq)
    np.testing.assert_allclose(rope_backward(rope_forward(x, cos, sin, heads), cos, sin, heads), x,
                               rtol=1e-13, atol=1e-14)
    y = rope_forward(x, cos, sin, heads)
    np.testing.assert_array_equal(y[:seq], rope_forward(x[:seq], cos, sin, heads))
    np.testing.assert_array_equal(y[2 * seq:], rope_forward(x[2 * seq:], cos, sin, heads))
    np.testing.assert_array_equal(y[0::seq], x[0::seq])   # position 0: identity


def test_rope_errors():
    with pytest.raises(ValueError, match="even head_dim"):
        rope_inv_freq(7)
    with pytest.raises(ValueError, match="not supported"):
        rope_inv_freq(8, {"rope_type": "yarn", "factor": 2.0})
    cos, sin = rope_tables(rope_inv_freq(8), 4)
    with pytest.raises(ValueError, match="whole sequences"):
        rope_forward(np.zeros((6, 16)), cos, sin, 2)
    with pytest.raises(ValueError, match="heads"):
        rope_forward(np.zeros((4, 16)), cos, sin, 3)


def phi3_longrope(head_dim=16, attention_factor=None):
    """A Phi3Config with LongRoPE (short and long factors of its own), switching at 24."""
    from transformers import Phi3Config

    g = np.random.default_rng(3)
    rope = {"rope_type": "longrope", "rope_theta": 10000.0,
            "short_factor": (1 + 0.3 * g.random(head_dim // 2)).tolist(),
            "long_factor": (1 + 8 * g.random(head_dim // 2)).tolist()}
    if attention_factor is not None:
        rope["attention_factor"] = attention_factor
    return Phi3Config(hidden_size=4 * head_dim, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, original_max_position_embeddings=24,
                      rope_parameters=rope)


@pytest.mark.parametrize("attention_factor", [None, 1.3])
@pytest.mark.parametrize("seq", [24, 25, 40])
def test_longrope_matches_phi3_rotary_embedding(seq, attention_factor):
    """Phi-3's LongRoPE: short factors for sequences up to original_max_position_embeddings,
    long ones past it, cos and sin times the attention factor (by default sqrt(1 + ln(256 /
    24) / ln(24))), as transformers' Phi3RotaryEmbedding computes them for position ids 0..seq-1."""
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    from py_engine.kernels.rope import rope_attention_scaling

    config = phi3_longrope(attention_factor=attention_factor)
    rotary = Phi3RotaryEmbedding(config)
    params = dict(config.rope_parameters, factor=256 / 24)      # as LlamaConfig fills it in
    scaling = rope_attention_scaling(params)
    assert scaling == pytest.approx(rotary.attention_scaling, rel=1e-12)
    assert scaling == pytest.approx(attention_factor or np.sqrt(1 + np.log(256 / 24) / np.log(24)))
    cos_t, sin_t = rotary(torch.zeros(1, dtype=torch.float32), torch.arange(seq)[None, :])
    cos, sin = rope_tables(rope_inv_freq(16, params, seq), seq, scaling=scaling)
    np.testing.assert_allclose(cos_t[0].double().numpy(), np.concatenate([cos, cos], -1), atol=2e-6)
    np.testing.assert_allclose(sin_t[0].double().numpy(), np.concatenate([sin, sin], -1), atol=2e-6)
    other = rope_inv_freq(16, params, 24 if seq > 24 else 25)        # the other side of the switch
    assert np.max(np.abs(other - rope_inv_freq(16, params, seq))) > 1e-3
