"""LoRA initialisations that change the base model's weights: PEFT's init_lora_weights "pissa"
and "olora". A new adapter's first values are taken out of each wrapped weight W, and the model
trains over the residual W - s B0.A0 in W's place, so that it starts as the base model does:

    pissa   W's r largest singular triplets (W = V S U^T): A0 = sqrt(S_r / s) U_r^T,
            B0 = V_r sqrt(S_r / s), so that s B0.A0 is W's best rank-r part (PiSSA)
    olora   W = Q R: A0 = R's first r rows, B0 = Q's first r columns (OLoRA)

s is the module's scale (lora_alpha / r, or / sqrt(r) with rsLoRA). PEFT does the same to the
base whenever it loads such an adapter (adapter_config.json keeps init_lora_weights), so an
adapter trained here loads in PEFT as trained, and one trained with PEFT loads here: the
residual is rebuilt from the checkpoint each time a model with such an adapter is made
(residual_base), and everything that reads the base weights (the runtimes, generation, the
merge and the exports) reads it from there. PEFT's "pissa_niter_K" draws a random subspace,
which no load rebuilds (PEFT's own neither), and is refused.

The decompositions are LAPACK's (NumPy, in float64; PEFT's torch does them in float32): host
only, as the browser runtime has no NumPy. A singular vector's sign is LAPACK's choice, and so
may differ from torch's, but s B0.A0 and the residual do not depend on it.
"""

from array import array

BASE_CHANGING = ("pissa", "olora")


def base_init(lora):
    """The init of `lora` (a LoraConfig, an adapter_config.json's dict, or None) that changes
    the base weights, or None."""
    init = lora.get("init_lora_weights") if isinstance(lora, dict) else \
        getattr(lora, "init_lora_weights", None)
    return init.lower() if isinstance(init, str) and init.lower() in BASE_CHANGING else None


def check_same_base(current, other, source):
    """ValueError where an adapter (`source`, made as model `other`) cannot be taken by a model
    made as `current` without making that model again: either changes the base weights."""
    init = base_init(other.linears.lora) or base_init(current.linears.lora)
    if init is not None:
        raise ValueError(f"{source} was made with other LoRA options, and init_lora_weights "
                         f"{init!r} changes the base weights the model holds (their residual is "
                         "rebuilt for each adapter): load the model with the adapter instead")


def residual_base(model, checkpoint):
    """`checkpoint`, or where the model's LoRA changes the base (base_init) a ResidualCheckpoint
    over it: its wrapped weights read as their residuals. ValueError where such an init cannot
    be made here (see check_base_init)."""
    init = base_init(model.linears.lora)
    if init is None:
        return checkpoint
    if isinstance(checkpoint, ResidualCheckpoint):
        checkpoint = checkpoint.base
    check_base_init(model, init, checkpoint)
    return ResidualCheckpoint(checkpoint, model.merge_names(), init)


def check_base_init(model, init, checkpoint):
    """ValueError naming what a base-changing `init` cannot wrap here: an embedding or output
    layer under LoRA (PEFT's table layers draw their own way), OLoRA on GPT-2's Conv1D layers
    (PEFT decomposes them as stored, [in, out], which does not fit lora_A), a rank above a
    layer's smaller side (PEFT fails on it), and the browser (no NumPy)."""
    tables = model.linears.tables.targets
    if tables:
        raise ValueError(f"init_lora_weights {init!r} decomposes linear layers' weights, and "
                         f"{', '.join(tables)} is an embedding or output layer under LoRA; leave it "
                         "out of target_modules, or choose another init_lora_weights")
    if init == "olora" and model.linears.lora.fan_in_fan_out:
        raise ValueError("init_lora_weights 'olora' on Conv1D layers (GPT-2's; fan_in_fan_out): "
                         "PEFT decomposes their weights as stored, [in, out], which gives lora_A "
                         "the wrong shape; choose pissa, or another init_lora_weights")
    for merge in model.merge_names():
        rows, cols = checkpoint.shape(merge.weight)
        if merge.rank > min(rows, cols):
            raise ValueError(f"init_lora_weights {init!r}: r {merge.rank} is more than "
                             f"{merge.weight}'s {min(rows, cols)} singular values")
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise ValueError(f"init_lora_weights {init!r} decomposes the base weights with NumPy, "
                         "which this runtime (the browser's) has not: train it with py-engine "
                         "on the host") from None


class ResidualCheckpoint:
    """A checkpoint whose LoRA-wrapped weights read as W - s B0.A0 (floats, f16_bits; each
    decomposed once, when first read); any other tensor and attribute is the wrapped
    checkpoint's (`base`). decomposed(weight) gives (A0, B0, residual) as array('f')."""

    def __init__(self, base, merges, init):
        self.base = base
        self.init = init
        self._merges = {m.weight: m for m in merges}
        self._done = {}

    def __getattr__(self, name):        # what this class does not hold: the checkpoint's
        return getattr(self.base, name)

    def floats(self, name):
        return self.decomposed(name)[2] if name in self._merges else self.base.floats(name)

    def f16_bits(self, name):
        if name not in self._merges:
            return self.base.f16_bits(name)
        from ..formats.safetensors import f32_to_f16_bits

        return f32_to_f16_bits(self.floats(name).tobytes())

    def decomposed(self, weight):
        """(A0 [r, in], B0 [out, r], W - s B0.A0 [out, in]) of wrapped weight `weight`, as
        row-major array('f')."""
        if weight not in self._done:
            merge = self._merges[weight]
            rows, cols = self.base.shape(weight)
            self._done[weight] = decompose(self.base.floats(weight), rows, cols, merge.rank,
                                           merge.scaling, self.init)
        return self._done[weight]


def decompose(values, rows, cols, rank, scaling, init):
    """(A0, B0, residual) of a [rows, cols] weight (row-major floats) by `init` (see the module
    docstring), each array('f'); the residual is W - scaling * B0.A0 rounded to float32, as
    PEFT holds it."""
    import numpy as np

    w = np.frombuffer(values, np.float32).reshape(rows, cols).astype(np.float64)
    if init == "pissa":
        v, s, uh = np.linalg.svd(w, full_matrices=False)
        root = np.sqrt(s[:rank] / scaling)
        a, b = root[:, None] * uh[:rank], v[:, :rank] * root[None, :]
    else:
        q, r = np.linalg.qr(w)
        a, b = r[:rank], q[:, :rank]
    a, b = a.astype(np.float32), b.astype(np.float32)
    residual = (w - scaling * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)
    return tuple(array("f", x.tobytes()) for x in (a, b, residual))
