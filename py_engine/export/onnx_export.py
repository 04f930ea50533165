"""A merged classifier (BERT family, ModernBERT, a decoder read as a sequence classifier) as an
ONNX graph (host only: built with the `onnx` package), for ONNX Runtime: the encoder, the
pooling it was trained with ([CLS] through the pooler, a decoder's last real token, or the mean
over real tokens) and the head, giving logits and probabilities.

    inputs:  input_ids, attention_mask, token_type_ids   int64 [batch, sequence]
             (token_type_ids only where the family reads them: not ModernBERT, not decoders)
    outputs: logits, probabilities                        float32 [batch, labels]
             (probabilities: a softmax over the labels, or a multi-label head's sigmoid each;
             a regression head's values are its logits alone, no probabilities)

The math is models/bert.py's at inference (no dropout): embeddings summed and normalized;
per layer scaled dot-product attention (with MPNet's relative position bias added to the
scores) with padded keys masked by adding float32's lowest value (as transformers does), the
exact (erf) GELU, post-norm residuals; opset 17 (LayerNormalization). ModernBERT's is
models/modernbert.py's: pre-norm, rotary tables at each layer type's base, a sliding layer's
keys beyond its window masked as padding is (the two taken by Min, never added), the exact
GeGLU, then its head over the pooled state; it takes no token_type_ids. A decoder's hidden
states are onnx_decoder.py's.
Linear weights are stored transposed ([in, out]) so that MatMul reads them as they are, which
is also the form onnxruntime.quantization.quantize_dynamic turns into int8 MatMuls.

    save_onnx(merged, "out_dir", quant="int8")    # model.onnx, labels.json, config.json, tokenizer files
"""

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..formats.finite import NonFiniteWeightsError
from ..labels import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from ..models.bert_config import MPNET_BUCKETS, MPNET_MAX_DISTANCE
from ..kernels.rope import rope_inv_freq
from ..models.relative_position import relative_position_bucket
from ..models.decoder_classifier import DecoderClassifierConfig
from ..tokenizers.checkpoint import sentencepiece_tokenizer_json
from ..formats.model_dir import write_config_json
from ..formats.output_dir import write_output_dir
from .merged import ENCODER, ExportError

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


class GraphBuilder:
    """Nodes and initializers, with names made unique as they are added."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0
        self._consts = {}

    def const(self, name, array):
        """An initializer named `name`, made once (a second call must give the same values)."""
        array = np.asarray(array)
        if name in self._consts:
            if not np.array_equal(self._consts[name], array):
                raise ValueError(f"two constants named {name!r}")
            return name
        self._consts[name] = array
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, kind, inputs, **attrs):
        self._count += 1
        out = f"{kind.lower()}_{self._count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out


def _weight(merged, name):
    values = np.asarray(merged.floats(name), np.float32).reshape(merged.shape(name))
    if not np.isfinite(values).all():
        raise NonFiniteWeightsError(f"refusing to export tensor {name!r}: it holds NaN or "
                                    "infinity, as after a diverged run; nothing was written")
    return values


def _linear(g, merged, x, module):
    """x @ W^T (+ b, where the linear has one), W stored transposed."""
    w = g.const(f"{module}.weight_t", _weight(merged, f"{module}.weight").T.copy())
    y = g.op("MatMul", [x, w])
    if not merged.has(f"{module}.bias"):
        return y
    return g.op("Add", [y, g.const(f"{module}.bias", _weight(merged, f"{module}.bias"))])


def _layer_norm(g, merged, x, module, eps):
    """LayerNormalization (without bias where the norm has none: ModernBERT's)."""
    inputs = [x, g.const(f"{module}.weight", _weight(merged, f"{module}.weight"))]
    if merged.has(f"{module}.bias"):
        inputs.append(g.const(f"{module}.bias", _weight(merged, f"{module}.bias")))
    return g.op("LayerNormalization", inputs, axis=-1, epsilon=eps)


def _columns(g, x, start, stop):
    """x[..., start:stop] of a [batch, sequence, width] tensor."""
    return g.op("Slice", [x, g.const(f"cols_{start}", np.array([start], np.int64)),
                          g.const(f"cols_{stop}", np.array([stop], np.int64)),
                          g.const("last_axis", np.array([-1], np.int64))])


def _steps(g):
    """0 .. T-1 (int64) for the input's length T."""
    length = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one_index", np.array(1, np.int64))],
                  axis=0)
    return g.op("Range", [g.const("zero_index", np.array(0, np.int64)), length, "one_index"])


def _gelu(g, x, approximate="none"):
    """0.5 x (1 + erf(x / sqrt 2)): BERT's exact GELU; approximate "tanh", ALBERT's gelu_new:
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    if approximate == "tanh":
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const("gelu_cubic", np.float32(0.044715))])])
        inner = g.op("Tanh", [g.op("Mul", [inner, g.const("gelu_scale", np.float32(
            math.sqrt(2.0 / math.pi)))])])
    else:
        inner = g.op("Erf", [g.op("Div", [x, "sqrt2"])])
    return g.op("Mul", [g.op("Mul", [x, "half"]), g.op("Add", [inner, "one"])])


def _attention(g, merged, x, mask_bias, names, config, position_bias=None, relative=None):
    """names: {what: full name} of the layer's linears and norms (BertConfig.layer_names);
    position_bias: MPNet's relative position bias [H, T, T], added to the scores before the
    mask, or None; relative: DeBERTa's (relative rows [2 span, hidden], their index [B, H, T,
    T]) for its disentangled terms (_disentangled), or None."""
    heads, dim = config.num_attention_heads, config.head_dim
    split = g.const(f"{names['query']}.split_shape", np.array([0, 0, heads, dim], np.int64))

    def project(name, perm, rows=x):
        y = _linear(g, merged, rows, names[name])
        return g.op("Transpose", [g.op("Reshape", [y, split])], perm=perm)

    q, k, v = project("query", [0, 2, 1, 3]), project("key", [0, 2, 3, 1]), \
        project("value", [0, 2, 1, 3])
    scores = g.op("MatMul", [q, k])
    if relative is not None:
        rows, index = relative
        terms = config.pos_att_type
        rows = g.op("Unsqueeze", [rows, "zero"])        # [1, 2 span, hidden], as x is
        if "c2p" in terms:      # the query against the key projection of each distance's row
            c2p = g.op("MatMul", [q, project("key", [0, 2, 3, 1], rows)])     # [B, H, T, 2 span]
            scores = g.op("Add", [scores, g.op("GatherElements", [c2p, index], axis=3)])
        if "p2c" in terms:      # the key against the query projection of the same row
            keys = g.op("Transpose", [k], perm=[0, 1, 3, 2])
            p2c = g.op("MatMul", [keys, project("query", [0, 2, 3, 1], rows)])  # [B, H, Tk, 2 span]
            gathered = g.op("GatherElements", [p2c, g.op("Transpose", [index], perm=[0, 1, 3, 2])],
                            axis=3)
            scores = g.op("Add", [scores, g.op("Transpose", [gathered], perm=[0, 1, 3, 2])])
    scores = g.op("Mul", [scores, "attn_scale"])
    if position_bias is not None:
        scores = g.op("Add", [scores, position_bias])
    scores = g.op("Add", [scores, mask_bias])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), "merge_shape"])
    return _linear(g, merged, context, names["attention_output"])


def _position_bias(g, merged, prefix):
    """MPNet's relative position bias [H, T, T] for the input's length T: the bucket of each
    key's offset j - i from its query, looked up in a constant over every offset the position
    table allows, then the table's row for it (models/bert.py's _position_bias)."""
    config = merged.config
    span = config.positions - 1
    offsets = [relative_position_bucket(r, True, MPNET_BUCKETS, MPNET_MAX_DISTANCE)
               for r in range(-span, span + 1)]
    buckets = _by_offset(g, "position_bucket_table", offsets, key_minus_query=True)
    name = prefix + config.relative_attention_bias
    rows = g.op("Gather", [g.const(name, _weight(merged, name)), buckets], axis=0)   # [T, T, H]
    return g.op("Transpose", [rows], perm=[2, 0, 1])


def _disentangled(g, merged, prefix, q_shape):
    """DeBERTa's relative rows (normalised where config.json says) and, for the input's
    length T, the row of each query-key distance i - j looked up in a constant over every
    distance the positions allow (models/bert.py's _relative_embeddings), expanded to the
    scores' shape [B, H, T, T] for GatherElements."""
    config = merged.config
    relative_rows = config.relative_rows(config.positions)
    table_rows = [relative_rows.first + offset for offset in relative_rows.offsets]
    name = prefix + "encoder.rel_embeddings.weight"
    rows = g.const(name, _weight(merged, name))
    if config.norm_rel_ebd:
        rows = _layer_norm(g, merged, rows, prefix + "encoder.LayerNorm", config.layer_norm_eps)
    index = _by_offset(g, "relative_row_table", table_rows, key_minus_query=False)
    return rows, g.op("Expand", [index, q_shape])


def _by_offset(g, name, values, key_minus_query):
    """[T, T] for the input's length T: values[offset + span] of each query i and key j, with
    offset j - i (key_minus_query) or i - j, `values` a constant over every offset from -span
    to span (2 span + 1 of them)."""
    span = (len(values) - 1) // 2
    g.const("offset_span", np.array(span, np.int64))
    steps = _steps(g)
    queries, keys = g.op("Unsqueeze", [steps, "axis1"]), g.op("Unsqueeze", [steps, "zero"])
    offset = g.op("Sub", [keys, queries] if key_minus_query else [queries, keys])
    return g.op("Gather", [g.const(name, np.array(values, np.int64)),
                           g.op("Add", [offset, "offset_span"])], axis=0)


def _rotate(g, x, tables, rotated, head_dim):
    """x [..., T, D] rotated as transformers' apply_rotary_pos_emb (x cos + rotate_half(x) sin,
    rotate_half(x) = (-x2, x1) for the halves x1, x2) over its first `rotated` dimensions; the
    rest pass through (partial rotary). tables: (cos, sin) [T, rotated]."""
    half = rotated // 2
    part = _columns(g, x, 0, rotated) if rotated < head_dim else x
    x1, x2 = _columns(g, part, 0, half), _columns(g, part, half, rotated)
    turned = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
    out = g.op("Add", [g.op("Mul", [part, tables[0]]), g.op("Mul", [turned, tables[1]])])
    if rotated < head_dim:
        out = g.op("Concat", [out, _columns(g, x, rotated, head_dim)], axis=-1)
    return out


def _modernbert_encoder(g, merged, mask_bias):
    """ModernBERT's final hidden states [B, T, hidden] (models/modernbert.py's math)."""
    config, eps = merged.config, merged.config.norm_eps
    heads, dim, h, inner = (config.num_attention_heads, config.head_dim, config.hidden_size,
                            config.intermediate_size)
    x = g.op("Gather", [g.const("model.embeddings.tok_embeddings.weight",
                                _weight(merged, "model.embeddings.tok_embeddings.weight")), "input_ids"])
    x = _layer_norm(g, merged, x, "model.embeddings.norm", eps)
    length = g.op("Slice", [g.op("Shape", ["input_ids"]), "axis1", "two"])
    steps = _steps(g)
    tables = {}
    for kind in sorted(set(config.layer_types)):        # cos and sin [T, D] at each base
        inv_freq = np.asarray(rope_inv_freq(dim, config.rope_parameters[kind]), np.float64)
        angles = np.arange(config.positions, dtype=np.float64)[:, None] * inv_freq[None, :]
        angles = np.concatenate([angles, angles], axis=1)
        tables[kind] = tuple(g.op("Slice", [g.const(f"rope_{kind}_{f.__name__}", f(angles).astype(np.float32)),
                                            "zero", length, "zero"]) for f in (np.cos, np.sin))
    # sliding layers: float32's lowest value beyond the window, taken with the padding's by
    # Min (never their sum, which would be -inf and make a padded row's softmax NaN)
    offset = g.op("Abs", [g.op("Sub", [g.op("Unsqueeze", [steps, "zero"]),
                                       g.op("Unsqueeze", [steps, "axis1"])])])
    far = g.op("Greater", [offset, g.const("window", np.array(config.window, np.int64))])
    window = g.op("Where", [far, "lowest", g.const("zero_f", np.float32(0.0))])
    biases = {"full_attention": mask_bias, "sliding_attention": g.op("Min", [mask_bias, window])}
    split = g.const("head_split", np.array([0, 0, heads, dim], np.int64))
    for n in range(config.num_hidden_layers):
        p, kind = f"model.layers.{n}.", config.layer_types[n]
        hn = _layer_norm(g, merged, x, p + "attn_norm", eps) if n else x
        qkv = _linear(g, merged, hn, p + "attn.Wqkv")
        q, k, v = (g.op("Transpose", [g.op("Reshape", [_columns(g, qkv, i * h, (i + 1) * h), split])],
                        perm=[0, 2, 1, 3]) for i in range(3))
        q, k = (_rotate(g, y, tables[kind], dim, dim) for y in (q, k))
        k = g.op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), "attn_scale"]), biases[kind]])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), "merge_shape"])
        x = g.op("Add", [x, _linear(g, merged, context, p + "attn.Wo")])
        wi = _linear(g, merged, _layer_norm(g, merged, x, p + "mlp_norm", eps), p + "mlp.Wi")
        gated = g.op("Mul", [_gelu(g, _columns(g, wi, 0, inner)), _columns(g, wi, inner, 2 * inner)])
        x = g.op("Add", [x, _linear(g, merged, gated, p + "mlp.Wo")])
    return _layer_norm(g, merged, x, "model.final_norm", eps)


def classifier_graph(merged):
    """The onnx.ModelProto of a merged classifier (merged.kind ENCODER)."""
    if merged.kind != ENCODER:
        raise ExportError("the ONNX export is for classifiers (the BERT family, ModernBERT, a "
                          "decoder read as a sequence classifier)")
    config = merged.config
    g = GraphBuilder()
    g.const("sqrt2", np.float32(math.sqrt(2.0)))
    g.const("half", np.float32(0.5))
    g.const("one", np.float32(1.0))
    g.const("lowest", np.float32(np.finfo(np.float32).min))
    g.const("zero", np.array([0], np.int64))
    g.const("axis1", np.array([1], np.int64))
    g.const("two", np.array([2], np.int64))
    g.const("last_axis", np.array([-1], np.int64))
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    if isinstance(config, DecoderClassifierConfig):
        from .onnx_decoder import decoder_hidden

        pooled = _pooled(g, decoder_hidden(g, merged, mask), mask, merged.pooling)
        return _classifier_model(g, merged, _linear(g, merged, pooled, config.head_output))
    g.const("attn_scale", np.float32(config.attention_scaling))
    g.const("merge_shape", np.array([0, 0, config.hidden_size], np.int64))
    # Padded keys get float32's lowest value added to their scores: [B, 1, 1, T].
    mask_bias = g.op("Mul", [g.op("Sub", ["one", mask]), "lowest"])
    mask_bias = g.op("Unsqueeze", [mask_bias, g.const("axes12", np.array([1, 2], np.int64))])
    if config.pair_mask:
        # DeBERTa masks query i and key j unless both are real (get_attention_mask): a padded
        # query (the first token, padded on the left) attends to every key alike
        pairs = g.op("Mul", [g.op("Unsqueeze", [mask, g.const("axes13", np.array([1, 3], np.int64))]),
                             g.op("Unsqueeze", [mask, "axes12"])])
        mask_bias = g.op("Mul", [g.op("Sub", ["one", pairs]), "lowest"])
    if config.family == "modernbert":
        x = _modernbert_encoder(g, merged, mask_bias)
        pooled = _pooled(g, x, mask, merged.pooling)
        pooled = _layer_norm(g, merged, _gelu(g, _linear(g, merged, pooled, "head.dense")),
                             "head.norm", config.norm_eps)
        return _classifier_model(g, merged, _linear(g, merged, pooled, "classifier"))
    return _classifier_model(g, merged, _bert_logits(g, merged, mask, mask_bias))


def _pooled(g, x, mask, pooling):
    """The first token's hidden state, the last real token's (a decoder's: the last the
    attention mask keeps), or the mean over real tokens."""
    if pooling == "last":
        steps = _steps(g)
        real = g.op("Mul", [mask, g.op("Cast", [steps], to=TensorProto.FLOAT)])
        last = g.op("ArgMax", [real], axis=1, keepdims=1)       # [B, 1]
        chosen = g.op("Cast", [g.op("Equal", [steps, last])], to=TensorProto.FLOAT)
        weights = g.op("Unsqueeze", [chosen, g.const("axes2", np.array([2], np.int64))])
        return g.op("ReduceSum", [g.op("Mul", [x, weights]), "axis1"], keepdims=0)
    if pooling == "mean":
        weights = g.op("Unsqueeze", [mask, g.const("axes2", np.array([2], np.int64))])
        total = g.op("ReduceSum", [g.op("Mul", [x, weights]), "axis1"], keepdims=0)
        count = g.op("Max", [g.op("ReduceSum", [mask, "axis1"], keepdims=1), "one"])
        return g.op("Div", [total, count])
    return g.op("Gather", [x, g.const("first", np.array(0, np.int64))], axis=1)


def _positions(g, merged, e):
    """The learned position rows of each token (embeddings `e`)."""
    config = merged.config
    table = g.const(f"{e}.position_embeddings.weight",
                    _weight(merged, f"{e}.position_embeddings.weight"))
    if not config.first_position:       # BERT's rows 0.. whatever the padding
        length = g.op("Slice", [g.op("Shape", ["input_ids"]), "axis1", "two"])
        return g.op("Slice", [table, "zero", length, "zero"])
    # RoBERTa's kind and MPNet number each token from the row after the padding row, counting
    # the tokens that are not padding before it; padding takes the padding row
    # (transformers' create_position_ids_from_input_ids): right for either padding side
    padding = g.const("padding_row", np.array(config.first_position - 1, np.int64))
    real = g.op("Cast", [g.op("Not", [g.op("Equal", ["input_ids", padding])])], to=TensorProto.INT64)
    counted = g.op("Mul", [g.op("CumSum", [real, g.const("axis_one", np.array(1, np.int64))]), real])
    return g.op("Gather", [table, g.op("Add", [counted, padding])], axis=0)


def _bert_logits(g, merged, mask, mask_bias):
    """The BERT family's encoder and head: the logits [B, labels]."""
    config, eps = merged.config, merged.config.layer_norm_eps

    prefix = config.prefix
    dense, head = config.head.dense, config.head.output
    e = prefix + "embeddings"
    words = g.op("Gather", [g.const(f"{e}.word_embeddings.weight",
                                    _weight(merged, f"{e}.word_embeddings.weight")), "input_ids"])
    if config.token_types:
        words = g.op("Add", [words, g.op("Gather", [
            g.const(f"{e}.token_type_embeddings.weight",
                    _weight(merged, f"{e}.token_type_embeddings.weight")), "token_type_ids"])])
    if config.task_type_table:      # ERNIE's: task 0's row, added to every token
        task = _weight(merged, prefix + config.task_type_table)[:1]
        words = g.op("Add", [words, g.const("task_type_row", task)])
    positions = _positions(g, merged, e) if config.position_table else None   # DeBERTa-v3: none
    x = _layer_norm(g, merged, g.op("Add", [words, positions]) if positions else words,
                    f"{e}.LayerNorm", eps)
    if config.deberta:      # its embeddings zero the padding's rows (only padded rows differ)
        x = g.op("Mul", [x, g.op("Unsqueeze", [mask, g.const("axes2", np.array([2], np.int64))])])
    position_bias = _position_bias(g, merged, prefix) if config.relative_attention_bias else None
    relative = None
    if config.disentangled:
        batch = g.op("Slice", [g.op("Shape", ["input_ids"]), "zero", "axis1"])
        length = g.op("Slice", [g.op("Shape", ["input_ids"]), "axis1", "two"])
        scores_shape = g.op("Concat", [batch, g.const("heads", np.array([config.num_attention_heads],
                                                                        np.int64)), length, length], axis=0)
        relative = _disentangled(g, merged, prefix, scores_shape)
    if config.projection:       # ALBERT's, ELECTRA-small's: up to the layers' width
        x = _linear(g, merged, x, prefix + config.projection)
    for n in range(config.num_hidden_layers):       # ALBERT's depths read one layer's weights
        p = {what: f"{prefix}{config.layer_prefix(n)}{name}"
             for what, name in config.layer_names.items()}
        a = _attention(g, merged, x, mask_bias, p, config, position_bias, relative)
        a = _layer_norm(g, merged, g.op("Add", [a, x]), p["attention_norm"], eps)
        h = _gelu(g, _linear(g, merged, a, p["intermediate"]), config.gelu_approximation)
        o = _linear(g, merged, h, p["output"])
        x = _layer_norm(g, merged, g.op("Add", [o, a]), p["output_norm"], eps)

    pooled = _pooled(g, x, mask, merged.pooling)
    if merged.pooling == "cls":
        pre = _linear(g, merged, pooled, dense)          # the head's activation (ClassifierHead)
        kind = config.head.activation
        pooled = _gelu(g, pre) if kind == "gelu" else g.op("Relu" if kind == "relu" else "Tanh", [pre])
    return _linear(g, merged, pooled, head)


def _classifier_model(g, merged, logits):
    """The graph's outputs (logits, and but for a regression head probabilities: a softmax
    over the labels, a multi-label head's sigmoid each), inputs, labels and kind of head
    (metadata problem_type): the model."""
    config = merged.config
    problem_type = merged.problem_type or SINGLE_LABEL
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    outputs = ["logits"]
    if problem_type == MULTI_LABEL:
        g.nodes.append(helper.make_node("Sigmoid", [logits], ["probabilities"]))
    elif problem_type == SINGLE_LABEL:
        g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=-1))
    if problem_type != REGRESSION:
        outputs.append("probabilities")

    batch = ["batch", "sequence"]
    used = {name for node in g.nodes for name in node.input}     # shared constants some graphs skip
    graph = helper.make_graph(
        g.nodes, "py_engine_classifier",
        [helper.make_tensor_value_info(name, TensorProto.INT64, batch) for name in INPUTS
         if name != "token_type_ids" or not isinstance(config, DecoderClassifierConfig)
         and config.token_types],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", len(merged.labels)])
         for name in outputs],
        initializer=[i for i in g.initializers if i.name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="py_engine")
    model.ir_version = 8
    for k, label in enumerate(merged.labels):
        entry = model.metadata_props.add()
        entry.key, entry.value = f"label.{k}", label
    entry = model.metadata_props.add()
    entry.key, entry.value = "problem_type", problem_type
    onnx.checker.check_model(model)
    return model


def quantize_int8(source, target):
    """onnxruntime's dynamic quantization: MatMul weights int8 (per tensor), activations
    quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def save_onnx(merged, directory, quant="f32", protected=(), progress=None):
    """OUT/model.onnx (float32, or with quant "int8" dynamically quantized), labels.json,
    config.json (the merged export's) and the checkpoint's tokenizer files, atomically and
    only where py_engine may write."""
    if quant not in ("f32", "int8"):
        raise ExportError(f"ONNX export: quant {quant!r} is not f32 or int8")
    model = classifier_graph(merged)
    if progress is not None:
        progress(f"onnx: graph of {len(model.graph.node)} nodes, "
                 f"{merged.config.num_hidden_layers} layers")

    def fill(staging):
        target = staging / "model.onnx"
        if quant == "int8":
            with tempfile.TemporaryDirectory() as temp:
                onnx.save(model, f"{temp}/model.onnx")
                quantize_int8(f"{temp}/model.onnx", target)
            if progress is not None:
                progress("onnx: weights quantized to int8")
        else:
            onnx.save(model, str(target))
        (staging / "labels.json").write_text(json.dumps(merged.labels, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        # the merged export's config.json: what ONNX Runtime's wrappers (Optimum's
        # ORTModelForSequenceClassification, Transformers.js) read the labels and kind from
        write_config_json(staging, merged.classifier_config())
        for name in TOKENIZER_FILES:      # an adapter's own where it added tokens
            if (Path(merged.tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(merged.tokenizer_dir) / name, staging / name)
        spm = None if (staging / "tokenizer.json").is_file() else \
            sentencepiece_tokenizer_json(merged.tokenizer_dir)
        if spm is not None:
            # DeBERTa-v3's spm.model or ALBERT's spiece.model alone: the tokenizer.json
            # transformers builds from it
            (staging / "tokenizer.json").write_text(json.dumps(spm, ensure_ascii=False),
                                                    encoding="utf-8")

    return write_output_dir(directory, fill, protected, kind="an export")
