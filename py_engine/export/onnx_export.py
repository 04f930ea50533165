"""A merged BERT-family classifier as an ONNX graph (host only: built with the `onnx` package),
for ONNX Runtime: the encoder, the pooling it was trained with ([CLS] through the pooler, or the
mean over real tokens) and the head, giving logits and probabilities.

    inputs:  input_ids, attention_mask, token_type_ids   int64 [batch, sequence]
    outputs: logits, probabilities                        float32 [batch, labels]

The math is models/bert.py's at inference (no dropout): embeddings summed and normalized;
per layer scaled dot-product attention (with MPNet's relative position bias added to the
scores) with padded keys masked by adding float32's lowest value (as transformers does), the exact (erf) GELU, post-norm residuals; opset 17 (LayerNormalization).
Linear weights are stored transposed ([in, out]) so that MatMul reads them as they are, which
is also the form onnxruntime.quantization.quantize_dynamic turns into int8 MatMuls.

    save_onnx(merged, "out_dir", quant="int8")    # model.onnx, labels.json, tokenizer files
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
from ..models.bert_config import MPNET_BUCKETS, MPNET_MAX_DISTANCE
from ..models.relative_position import relative_position_bucket
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

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
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
    """x @ W^T + b, W stored transposed."""
    w = g.const(f"{module}.weight_t", _weight(merged, f"{module}.weight").T.copy())
    b = g.const(f"{module}.bias", _weight(merged, f"{module}.bias"))
    return g.op("Add", [g.op("MatMul", [x, w]), b])


def _layer_norm(g, merged, x, module, eps):
    return g.op("LayerNormalization", [x, g.const(f"{module}.weight", _weight(merged, f"{module}.weight")),
                                       g.const(f"{module}.bias", _weight(merged, f"{module}.bias"))],
                axis=-1, epsilon=eps)


def _gelu(g, x):
    """0.5 x (1 + erf(x / sqrt 2)): BERT's exact GELU."""
    inner = g.op("Erf", [g.op("Div", [x, "sqrt2"])])
    return g.op("Mul", [g.op("Mul", [x, "half"]), g.op("Add", [inner, "one"])])


def _attention(g, merged, x, mask_bias, names, config, position_bias=None):
    """names: {what: full name} of the layer's linears and norms (BertConfig.layer_names);
    position_bias: MPNet's relative position bias [H, T, T], added to the scores before the
    mask, or None."""
    heads, dim = config.num_attention_heads, config.head_dim
    split = g.const(f"{names['query']}.split_shape", np.array([0, 0, heads, dim], np.int64))

    def project(name, perm):
        y = _linear(g, merged, x, names[name])
        return g.op("Transpose", [g.op("Reshape", [y, split])], perm=perm)

    q, k, v = project("query", [0, 2, 1, 3]), project("key", [0, 2, 3, 1]), \
        project("value", [0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, k]), "attn_scale"])
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
    g.const("offset_span", np.array(span, np.int64))
    length = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one_index", np.array(1, np.int64))],
                  axis=0)
    steps = g.op("Range", [g.const("zero_index", np.array(0, np.int64)), length, "one_index"])
    offset = g.op("Sub", [g.op("Unsqueeze", [steps, "zero"]), g.op("Unsqueeze", [steps, "axis1"])])
    buckets = g.op("Gather", [g.const("position_bucket_table", np.array(offsets, np.int64)),
                              g.op("Add", [offset, "offset_span"])], axis=0)
    name = prefix + config.relative_attention_bias
    rows = g.op("Gather", [g.const(name, _weight(merged, name)), buckets], axis=0)   # [T, T, H]
    return g.op("Transpose", [rows], perm=[2, 0, 1])


def classifier_graph(merged):
    """The onnx.ModelProto of a merged classifier (merged.kind ENCODER)."""
    if merged.kind != ENCODER:
        raise ExportError("the ONNX export is for classifiers (BERT family)")
    if merged.config.family == "modernbert":
        raise ExportError("the ONNX export builds BERT-family encoders' graphs; ModernBERT's "
                          "(rotary positions, sliding-window layers, a gated MLP) is not built: "
                          "export it merged, a Hugging Face checkpoint")
    config, eps = merged.config, merged.config.layer_norm_eps
    g = GraphBuilder()
    g.const("sqrt2", np.float32(math.sqrt(2.0)))
    g.const("half", np.float32(0.5))
    g.const("one", np.float32(1.0))
    g.const("attn_scale", np.float32(1.0 / math.sqrt(config.head_dim)))
    g.const("lowest", np.float32(np.finfo(np.float32).min))
    g.const("merge_shape", np.array([0, 0, config.hidden_size], np.int64))
    g.const("zero", np.array([0], np.int64))
    g.const("axis1", np.array([1], np.int64))

    prefix = config.prefix
    dense, head = config.head.dense, config.head.output
    e = prefix + "embeddings"
    words = g.op("Gather", [g.const(f"{e}.word_embeddings.weight",
                                    _weight(merged, f"{e}.word_embeddings.weight")), "input_ids"])
    if config.token_types:
        words = g.op("Add", [words, g.op("Gather", [
            g.const(f"{e}.token_type_embeddings.weight",
                    _weight(merged, f"{e}.token_type_embeddings.weight")), "token_type_ids"])])
    table = g.const(f"{e}.position_embeddings.weight", _weight(merged, f"{e}.position_embeddings.weight"))
    if config.first_position:
        # RoBERTa's kind and MPNet number each token from the row after the padding row, counting
        # the tokens that are not padding before it; padding takes the padding row
        # (transformers' create_position_ids_from_input_ids): right for either padding side
        padding = g.const("padding_row", np.array(config.first_position - 1, np.int64))
        real = g.op("Cast", [g.op("Not", [g.op("Equal", ["input_ids", padding])])], to=TensorProto.INT64)
        counted = g.op("Mul", [g.op("CumSum", [real, g.const("axis_one", np.array(1, np.int64))]), real])
        positions = g.op("Gather", [table, g.op("Add", [counted, padding])], axis=0)
    else:       # BERT's rows 0.. whatever the padding
        length = g.op("Slice", [g.op("Shape", ["input_ids"]), "axis1",
                                g.const("two", np.array([2], np.int64))])
        positions = g.op("Slice", [table, "zero", length, "zero"])
    x = _layer_norm(g, merged, g.op("Add", [words, positions]), f"{e}.LayerNorm", eps)

    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # Padded keys get float32's lowest value added to their scores: [B, 1, 1, T].
    mask_bias = g.op("Mul", [g.op("Sub", ["one", mask]), "lowest"])
    mask_bias = g.op("Unsqueeze", [mask_bias, g.const("axes12", np.array([1, 2], np.int64))])
    position_bias = _position_bias(g, merged, prefix) if config.relative_attention_bias else None
    for n in range(config.num_hidden_layers):
        p = {what: f"{prefix}{config.layers}{n}.{name}"
             for what, name in config.layer_names.items()}
        a = _attention(g, merged, x, mask_bias, p, config, position_bias)
        a = _layer_norm(g, merged, g.op("Add", [a, x]), p["attention_norm"], eps)
        h = _gelu(g, _linear(g, merged, a, p["intermediate"]))
        o = _linear(g, merged, h, p["output"])
        x = _layer_norm(g, merged, g.op("Add", [o, a]), p["output_norm"], eps)

    if merged.pooling == "mean":
        weights = g.op("Unsqueeze", [mask, g.const("axes2", np.array([2], np.int64))])
        total = g.op("ReduceSum", [g.op("Mul", [x, weights]), "axis1"], keepdims=0)
        count = g.op("Max", [g.op("ReduceSum", [mask, "axis1"], keepdims=1), "one"])
        pooled = g.op("Div", [total, count])
    else:
        first = g.op("Gather", [x, g.const("first", np.array(0, np.int64))], axis=1)
        pre = _linear(g, merged, first, dense)          # the head's activation (ClassifierHead)
        kind = config.head.activation
        pooled = _gelu(g, pre) if kind == "gelu" else g.op("Relu" if kind == "relu" else "Tanh", [pre])
    logits = _linear(g, merged, pooled, head)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=-1))

    batch = ["batch", "sequence"]
    graph = helper.make_graph(
        g.nodes, "py_engine_classifier",
        [helper.make_tensor_value_info(name, TensorProto.INT64, batch) for name in INPUTS
         if config.token_types or name != "token_type_ids"],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", len(merged.labels)])
         for name in ("logits", "probabilities")],
        initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="py_engine")
    model.ir_version = 8
    for k, label in enumerate(merged.labels):
        entry = model.metadata_props.add()
        entry.key, entry.value = f"label.{k}", label
    onnx.checker.check_model(model)
    return model


def quantize_int8(source, target):
    """onnxruntime's dynamic quantization: MatMul weights int8 (per tensor), activations
    quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def save_onnx(merged, directory, quant="f32", protected=(), progress=None):
    """OUT/model.onnx (float32, or with quant "int8" dynamically quantized), labels.json and
    the checkpoint's tokenizer files, atomically and only where py_engine may write."""
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
        for name in TOKENIZER_FILES:
            if (Path(merged.source) / name).is_file():
                shutil.copyfile(Path(merged.source) / name, staging / name)

    return write_output_dir(directory, fill, protected, kind="an export")
