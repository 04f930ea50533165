"""Initial values of the trainable parameters, as PEFT and transformers draw them.

PEFT's default LoRA init: lora_A from kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)),
lora_B zeros (so training starts from the base model exactly), and on an embedding (PEFT's
lora.Embedding) the other way round, lora_embedding_A zeros and lora_embedding_B from N(0, 1);
LoraConfig.init_lora_weights' other draws: "gaussian" lora_A from N(0, 1/r); False lora_B from
kaiming_uniform too (U(-1/sqrt(r), 1/sqrt(r))), lora_bias's lora_B bias alike (zeros otherwise),
and an embedding's both from N(0, 1); "orthogonal"
(PEFT's orthogonal_init) lora_A = (X1 Q_odd)^T / 10 and lora_B = X2^T Q_even / 10, X1 [in, r/2]
and X2 [r/2, out] from N(0, 1) and Q_odd, Q_even the odd and even rows of the Q of a random
[r, r] matrix, so that B.A is zero; DoRA's magnitude where B.A is not zero (False), the row
norms of W + s B.A; "pissa" and "olora", out of the base weights (base_init.py);
trainable tokens (trainable_token_indices), their table's rows; DoRA's magnitude, each row's norm
of the base weight (of W + s B.A, which is W while B is zero); a base bias that trains beside
the adapter (PEFT's bias option), and a classifier's dense layer the checkpoint holds
(model.head_sources), the checkpoint's value. transformers initializes a fresh
classification head (and a pooler a checkpoint lacks) from N(0, initializer_range), biases 0.
Pure Python (random.Random): this runs in the browser too. Seeded, so runs are reproducible;
the values are not torch's bit for bit (a different generator), only the same distributions.
"""

import math
import random
from array import array

from ..labels import SINGLE_LABEL
from .base_init import BASE_CHANGING, ResidualCheckpoint, residual_base
from .head_rows import relabel_rows


def initial_trainable(model, seed, checkpoint=None, labels=None, problem_type=SINGLE_LABEL,
                      fresh=True):
    """{name: (shape, array('f'))} of every trainable tensor. DoRA's magnitudes and the base
    biases that train are read from `checkpoint`'s tensors (floats(name), shape(name)); without
    one they are NaN, for an adapter's tensors to replace (merge_loaded requires every one of
    them). A classifier's `labels` (its head of `problem_type`'s kind): the rows of those a
    fine-tuned checkpoint's head of that kind holds start from its (checkpoint_head). `fresh`:
    a new adapter, drawn as its init_lora_weights says (LoraConfig.fresh_init); False for
    values an adapter's tensors replace (PEFT's default draw)."""
    rng = random.Random(seed)
    lora = model.linears.lora
    init = lora.fresh_init() if fresh and lora is not None else True
    pairs = {}              # "orthogonal": each module's (lora_A, lora_B), drawn together
    std = model.config.initializer_range
    magnitudes = model.magnitude_weights()
    biases = model.bias_sources()
    heads = {name: source for name, source in model.head_sources().items()
             if checkpoint is not None and checkpoint.holds(source)}
    read = set(checkpoint.names()) if checkpoint is not None else set()
    fresh_table = model.linears.tables.fresh_embedding_tensor
    token_rows = model.token_sources()
    decomposed = {}         # PiSSA's, OLoRA's lora_A and lora_B: out of the base weights
    if init in BASE_CHANGING and checkpoint is not None:
        if not isinstance(checkpoint, ResidualCheckpoint):
            checkpoint = residual_base(model, checkpoint)
        for merge in model.merge_names():
            decomposed[merge.lora_a], decomposed[merge.lora_b] = (merge.weight, 0), (merge.weight, 1)
    values = {}
    for name, shape in model.trainable.items():
        n = math.prod(shape)
        if name in token_rows:      # trainable tokens start from their table's rows (PEFT's)
            table, rows = token_rows[name]
            if checkpoint is None:
                data = array("f", [math.nan]) * n
            else:
                floats, width = checkpoint.floats(table), shape[1]
                data = array("f")
                for token in rows:
                    data.extend(floats[token * width:(token + 1) * width])
        elif name in heads:
            source = heads[name]    # one the model does not read otherwise is checked first
            data = array("f", checkpoint.floats(source) if source in read
                         else checkpoint.head_floats(source, shape))
        elif name in biases:
            data = (array("f", checkpoint.floats(biases[name])) if checkpoint is not None
                    else array("f", [math.nan]) * n)
        elif name in magnitudes:    # with init False, of W + s B.A once B is drawn (below)
            data = (row_norms(checkpoint.floats(magnitudes[name]), *checkpoint.shape(magnitudes[name]))
                    if checkpoint is not None and init is not False else array("f", [math.nan]) * n)
        elif fresh_table(name) == "zeros" and init is not False:
            data = array("f", bytes(4 * n))     # PEFT's embedding LoRA: A zeros, B N(0, 1)
        elif fresh_table(name) is not None:     # (without init: both N(0, 1))
            data = array("f", (rng.gauss(0.0, 1.0) for _ in range(n)))
        elif name in decomposed:
            weight, which = decomposed[name]
            data = checkpoint.decomposed(weight)[which]
        elif name.endswith(("lora_A.weight", "lora_B.weight")) and init == "orthogonal":
            module, _, which = name.rpartition(".lora_")
            if module not in pairs:
                a_shape = model.trainable[f"{module}.lora_A.weight"]
                b_shape = model.trainable[f"{module}.lora_B.weight"]
                pairs[module] = orthogonal_pair(rng, a_shape[0], a_shape[1], b_shape[0])
            data = pairs[module][0 if which == "A.weight" else 1]
        elif name.endswith("lora_A.weight") and init == "gaussian":
            data = array("f", (rng.gauss(0.0, 1.0 / shape[0]) for _ in range(n)))
        elif name.endswith("lora_A.weight") or (name.endswith("lora_B.weight") and init is False):
            bound = 1.0 / math.sqrt(shape[1])    # kaiming_uniform(a=sqrt(5)): nn.Linear's
            data = array("f", (rng.uniform(-bound, bound) for _ in range(n)))
        elif name.endswith("lora_B.bias") and init is False:
            # nn.Linear's bias, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): lora_B's fan_in is r
            bound = 1.0 / math.sqrt(model.trainable[name[:-len("bias")] + "weight"][1])
            data = array("f", (rng.uniform(-bound, bound) for _ in range(n)))
        elif name.endswith("lora_B.weight") or name.endswith(".bias"):
            data = array("f", bytes(4 * n))
        else:  # classifier.weight, pooler.dense.weight
            data = array("f", (rng.gauss(0.0, std) for _ in range(n)))
        values[name] = (shape, data)
    if init is False and magnitudes and checkpoint is not None:
        # DoRA's magnitudes start from the rows of W + s B.A, lora_B drawn too (PEFT's)
        for merge in model.linears.merge_names():
            if merge.magnitude in values:
                rows, cols = checkpoint.shape(merge.weight)
                values[merge.magnitude] = (values[merge.magnitude][0], adapted_row_norms(
                    checkpoint.floats(merge.weight), rows, cols, values[merge.lora_a][1],
                    values[merge.lora_b][1], merge.rank, merge.scaling))
    if labels is not None and checkpoint is not None:
        values.update(checkpoint_head(model, checkpoint, labels, problem_type))
    return values


def orthogonal_pair(rng, r, fan_in, fan_out):
    """(lora_A [r, fan_in], lora_B [fan_out, r]) as PEFT's orthogonal_init draws them (see the
    module docstring): the rows of A and the columns of B lie in complementary halves of one
    orthogonal basis, so B.A is zero while neither is. Gram-Schmidt gives the Q (a QR's, up to
    the signs of its rows, which leave its distribution as it is)."""
    x = [[rng.gauss(0.0, 1.0) for _ in range(r)] for _ in range(r)]
    q = []                                  # orthonormal columns of x, as rows
    for j in range(r):
        v = [x[i][j] for i in range(r)]
        for u in q:
            dot = math.fsum(a * b for a, b in zip(u, v))
            v = [a - dot * b for a, b in zip(v, u)]
        norm = math.sqrt(math.fsum(a * a for a in v))
        q.append([a / norm for a in v])
    # torch.linalg.qr's Q holds those columns; PEFT takes Q's rows
    rows = [[q[j][i] for j in range(r)] for i in range(r)]
    odd, even = rows[0::2], rows[1::2]
    half = r // 2
    x1 = [[rng.gauss(0.0, 1.0) for _ in range(half)] for _ in range(fan_in)]
    x2 = [[rng.gauss(0.0, 1.0) for _ in range(fan_out)] for _ in range(half)]
    a = array("f", bytes(4 * r * fan_in))   # A[k][c] = sum_h x1[c][h] odd[h][k] / 10
    for c in range(fan_in):
        for k in range(r):
            a[k * fan_in + c] = math.fsum(x1[c][h] * odd[h][k] for h in range(half)) / 10.0
    b = array("f", bytes(4 * fan_out * r))  # B[o][k] = sum_h x2[h][o] even[h][k] / 10
    for o in range(fan_out):
        for k in range(r):
            b[o * r + k] = math.fsum(x2[h][o] * even[h][k] for h in range(half)) / 10.0
    return a, b


def checkpoint_head(model, checkpoint, labels, problem_type=SINGLE_LABEL):
    """{name: (shape, array('f'))} of the classifier's output layer where `checkpoint` is a
    fine-tuned classifier (Checkpoint.head_labels) of `problem_type`'s kind holding some of
    `labels`: each of those starts from its row there, as transformers' from_pretrained starts
    the head (but by label name, not position), an added label from the mean of those rows (as
    relabelling adds one: nothing is predicted as it until it is trained on). {} where it holds
    none of them, or a head of another kind (a multi-label head's rows are no softmax's)."""
    if checkpoint.head_problem() != problem_type:
        return {}
    held = checkpoint.head_labels()
    sources = [held.index(label) if label in held else None for label in labels] if held else []
    if all(s is None for s in sources):
        return {}
    out = {}
    for name in (model.head_module + ".weight", model.head_module + ".bias"):
        if name in model.trainable:     # a decoder's score has no bias
            stored = (len(held),) + tuple(model.trainable[name][1:])
            out[name] = relabel_rows(stored, checkpoint.head_floats(name, stored), sources)
    return out


def row_norms(values, rows, cols):
    """array('f') of the Euclidean norm of each row of a row-major [rows, cols] array('f').
    Pure Python (the browser has no NumPy); math.sumprod (Python 3.12, Pyodide's) where there."""
    sumprod = getattr(math, "sumprod", None)
    view = memoryview(values)
    norms = array("f", bytes(4 * rows))
    for r in range(rows):
        row = view[r * cols:(r + 1) * cols]
        norms[r] = math.sqrt(sumprod(row, row) if sumprod else math.fsum(v * v for v in row))
    return norms


def adapted_row_norms(weight, rows, cols, a, b, rank, scaling):
    """row_norms of W + scaling * B.A (W [rows, cols], A [rank, cols], B [rows, rank],
    row-major floats; the sum rounded to float32, as PEFT holds it): a DoRA magnitude's start
    where lora_B is not zero. Pure Python, row by row."""
    adapted = array("f")
    a_rows = [a[k * cols:(k + 1) * cols] for k in range(rank)]
    for r in range(rows):
        row = list(weight[r * cols:(r + 1) * cols])
        for k in range(rank):
            coef = scaling * b[r * rank + k]
            row = [w + coef * x for w, x in zip(row, a_rows[k])]
        adapted.extend(row)
    return row_norms(adapted, rows, cols)


def merge_loaded(model, values, loaded, source):
    """Replace initial values by an adapter's tensors; every trainable tensor must be present
    with its shape, and the adapter may hold nothing this model does not train (but for the
    copies PEFT writes of what trains: _peft_copy, model.tied_copies)."""
    from .runtime import check_trainable

    copies = model.tied_copies()
    known = set(model.trainable) | set(copies)
    tables = model.linears.tables.base_copies()
    for name, (shape, _) in loaded.items():
        if name in tables and tuple(shape) != tables[name]:
            raise ValueError(f"{source}: adapter holds {name} {list(shape)}, its own copy of a "
                             f"table of {list(tables[name])} in the checkpoint (a vocabulary "
                             "resized for a LoRA on the embedding is not read here; train the "
                             "resized tables whole with modules_to_save)")
    loaded = {n: (tuple(shape), data) for n, (shape, data) in loaded.items()
              if not _peft_copy(n, known) and n not in copies and n not in tables}
    check_trainable(model, loaded, f"{source}: adapter")
    return dict(values, **loaded)


def _peft_copy(name, trainable):
    """Whether `name` is a copy PEFT writes beside a module trained whole: bias="all" saves
    every state-dict key holding "bias" ("classifier.original_module.bias",
    "classifier.modules_to_save.bias" beside "classifier.bias"), and a resized vocabulary's
    embedding layers are saved whole ("lm_head.original_module.weight", the resized
    checkpoint's table); the module's own tensor is the trained one, as PEFT loads it."""
    for copy in (".original_module.", ".modules_to_save."):
        module, found, rest = name.partition(copy)
        if found and f"{module}.{rest}" in trainable:
            return True
    return False
