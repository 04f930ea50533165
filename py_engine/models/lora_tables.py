"""PEFT's LoRA on a language model's token embedding and on its output layer, beside the LoRA on
its linears (models/lora.py's Linears, which holds one of these as `tables`).

    embedding (PEFT's lora.Embedding):  x = E[ids] + s * A^T[ids] B^T
        lora_embedding_A [r, vocab], lora_embedding_B [hidden, r]; no dropout; the rows of A^T
        are gathered as the table's are, and the padding token's row gets no gradient (PEFT
        gathers with the base layer's padding_idx). Fresh: A zeros, B from N(0, 1) (PEFT's).
    output layer (PEFT's lora.Linear on lm_head):  logits = h W^T + s * (dropout(h) A^T) B^T
        lora_A [r, hidden], lora_B [vocab, r]; the loss adds the low-rank term chunk by chunk
        (the backend's lm_head_loss, low_rank=), so no [vocab, hidden] update is ever made.

s is the module's scaling (lora_alpha / r, rank_pattern and alpha_pattern by its full name).
The base tables stay frozen, and a head tied to the embedding is still one table: PEFT wraps
each module on its own, so each LoRA changes only its own use of it. The merged model folds
them into the tables (`merges`: W + s B.A for the head, E + s (B.A)^T for the embedding); a
tied pair whose LoRAs differ is untied there (the exports' business).
"""

from .lora_config import LoraConfigError

EMBEDDING, HEAD = "embedding", "head"


class LoraTables:
    """tables: {module: (kind, rows, cols)}: the embedding [vocab, hidden] (EMBEDDING) and the
    output layer [vocab, hidden] (HEAD) a LoRA may wrap; `targeted(module)` tells whether the
    adapter names one; full_name(module) its name in adapter files."""

    def __init__(self, tables, lora, family, targeted, full_name):
        self.kinds = {m: kind for m, (kind, _, _) in tables.items()}
        self.shapes = {m: (rows, cols) for m, (_, rows, cols) in tables.items()}
        self.full_name = full_name
        self.targets = [m for m in tables if lora is not None and targeted(m)]
        self.ranks = {m: lora.rank_of(full_name(m)) for m in self.targets}
        self.scalings = {m: lora.scaling_of(full_name(m)) for m in self.targets}
        embedding = [m for m in self.targets if self.kinds[m] == EMBEDDING]
        if embedding and lora.lora_bias:
            # PEFT refuses it too: an embedding's lora_embedding_B is a tensor, not a linear
            raise LoraConfigError(
                f"lora_bias (a bias on lora_B) on {', '.join(map(full_name, embedding))} (the "
                f"token embedding of this {family}): PEFT refuses it on an embedding, and so "
                "does this")
        # an output layer's lora_B is a linear (PEFT's lora.Linear): with lora_bias its bias,
        # [vocab], adds scaling * b_B to the logits
        self.lora_bias = lora is not None and lora.lora_bias
        if self.targets and lora.use_dora:
            raise LoraConfigError(
                f"DoRA on {', '.join(map(full_name, self.targets))} (an embedding or output "
                f"layer of this {family}) is not built here: DoRA wraps its linear layers")
        saved = [m for m in self.targets
                 if any(full_name(m) == e or full_name(m).endswith("." + e)
                        for e in lora.modules_to_save)]
        if saved:
            raise LoraConfigError(
                f"{', '.join(map(full_name, saved))} is named by both target_modules and "
                "modules_to_save: a module trains either with a LoRA or whole")

    def of_kind(self, kind):
        """The wrapped module of `kind`, or None."""
        return next((m for m in self.targets if self.kinds[m] == kind), None)

    def names(self, module):
        """(A, B): the adapter tensors of wrapped `module`, PEFT's names."""
        full = self.full_name(module)
        if self.kinds[module] == EMBEDDING:
            return f"{full}.lora_embedding_A", f"{full}.lora_embedding_B"
        return f"{full}.lora_A.weight", f"{full}.lora_B.weight"

    def lora_b_bias(self, module):
        """lora_B's bias of the wrapped output layer `module` with lora_bias (PEFT's name), or
        None."""
        if not self.lora_bias or self.kinds[module] != HEAD:
            return None
        return f"{self.full_name(module)}.lora_B.bias"

    def trainable(self):
        """{name: shape} of the adapter tensors."""
        out = {}
        for m in self.targets:
            rows, cols = self.shapes[m]
            r = self.ranks[m]
            a, b = self.names(m)
            if self.kinds[m] == EMBEDDING:
                out[a], out[b] = (r, rows), (cols, r)
            else:
                out[a], out[b] = (r, cols), (rows, r)
                if self.lora_b_bias(m):
                    out[self.lora_b_bias(m)] = (rows,)
        return out

    def fresh_embedding_tensor(self, name):
        """How PEFT starts an embedding's LoRA tensor: "zeros" (A), "normal" (B), or None for
        a name that is not one."""
        for m in self.targets:
            if self.kinds[m] == EMBEDDING:
                a, b = self.names(m)
                if name in (a, b):
                    return "zeros" if name == a else "normal"
        return None

    def base_copies(self):
        """{name: shape} of the copies of the wrapped tables PEFT writes beside their LoRA
        (save_embedding_layers, "auto" when an embedding is targeted): "<module>.base_layer.weight",
        the frozen table itself, which the checkpoint holds."""
        return {f"{self.full_name(m)}.base_layer.weight": self.shapes[m] for m in self.targets}

    # --- the embedding ---

    def embed(self, be, x, ids, saved):
        """x (the gathered table rows) plus the embedding's LoRA term where one is wrapped;
        what the backward needs goes in saved["lora_embedding"]."""
        m = self.of_kind(EMBEDDING)
        if m is None:
            return x
        a, b = (be.param(n) for n in self.names(m))
        u = be.gather_rows(be.transpose(a), ids)                # A^T[ids]: [tokens, r]
        saved["lora_embedding"] = u
        return be.add(x, be.scale(be.linear(u, b, None), self.scalings[m]))

    def embed_backward(self, be, dx, ids, saved, padding=None):
        """The embedding LoRA's gradients from dx, the gradient of the embedding's output
        (nothing without one): dB += s dx^T u; dA^T gets s dx B scattered to the ids' rows."""
        m = self.of_kind(EMBEDDING)
        if m is None:
            return
        a, b = self.names(m)
        u = saved["lora_embedding"]
        g = be.scale(dx, self.scalings[m])
        be.linear_grad_params(g, u, be.grad(b), None)
        du = be.linear_grad_input(g, be.param(b))
        vocab, r = self.shapes[m][0], self.ranks[m]
        d_at = be.zeros(vocab, r)
        be.gather_rows_backward(du, ids, d_at, padding=padding)
        be.transpose_into(d_at, be.grad(a))

    # --- the output layer ---

    def head_term(self, be, hidden, dropout, train, saved):
        """The head LoRA's low-rank term (u, B, s) for the backend's lm_head_loss, u =
        dropout(h) A^T; None without one. saved["lora_head"] keeps what head_backward needs."""
        m = self.of_kind(HEAD)
        if m is None:
            return None
        a, b = self.names(m)
        hd, drop = be.dropout(hidden, dropout if train else 0.0)
        saved["lora_head"] = (hd, drop)
        return be.linear(hd, be.param(a), None), be.param(b), self.scalings[m]

    def head_bias(self, be, bias):
        """The logits' bias: the head's own `bias` (or None) plus the head LoRA's scaling * b_B
        with lora_bias."""
        m = self.of_kind(HEAD)
        if m is None or not self.lora_b_bias(m):
            return bias
        low = be.scale(be.param(self.lora_b_bias(m)), self.scalings[m])
        return low if bias is None else be.add(bias, low)

    def head_bias_backward(self, be, dbias):
        """Add the logits' bias gradient `dbias` to lora_B's bias's, scaled (nothing without)."""
        m = self.of_kind(HEAD)
        if m is not None and self.lora_b_bias(m):
            be.accumulate(be.grad(self.lora_b_bias(m)), dbias, self.scalings[m])

    def head_logits(self, be, logits, hidden):
        """Generation's logits plus the head LoRA's term s (h A^T) B^T (no dropout)."""
        m = self.of_kind(HEAD)
        if m is None:
            return logits
        a, b = (be.param(n) for n in self.names(m))
        term = be.linear(be.linear(hidden, a, None), b, None)
        return be.add(logits, be.scale(term, self.scalings[m]))

    def head_backward(self, be, du, saved):
        """dA += du^T dropout(h) (du from the loss, the scaling in it); the hidden states'
        gradient through the adapter: du A, back through the dropout mask."""
        a, _ = self.names(self.of_kind(HEAD))
        hd, drop = saved["lora_head"]
        be.linear_grad_params(du, hd, be.grad(a), None)
        dh = be.linear_grad_input(du, be.param(a))
        return dh if drop is None else be.dropout_backward(dh, drop)

    # --- merged ---

    def merges(self, table_of, merge, head_name, head_bias=None):
        """merge(...) (models/lora.py's Merge) of each wrapped table, table_of(module) its base
        tensor: W + s B.A for the output layer (named `head_name` in the merged model; with
        lora_bias its bias `head_bias` + s b_B, None where it has none), E + s (B.A)^T for the
        embedding."""
        out = []
        for m in self.targets:
            a, b = self.names(m)
            embedding = self.kinds[m] == EMBEDDING
            out.append(merge(f"{m}.merged.weight", table_of(m), a, b, self.ranks[m],
                             self.scalings[m], transposed=embedding,
                             name=None if embedding else head_name,
                             lora_bias=self.lora_b_bias(m), bias=None if embedding else head_bias))
        return out

    def unmergeable(self, head_bias):
        """The wrapped output layer, where its lora_B bias has no bias of the layer's own
        (`head_bias` None) to merge into."""
        m = self.of_kind(HEAD)
        return [self.full_name(m)] if m is not None and self.lora_b_bias(m) and not head_bias else []
