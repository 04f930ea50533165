"""Gradient checkpointing (transformers' gradient_checkpointing_enable()): a training step's
forward keeps each layer's input alone, and the backward runs each layer's forward again just
before that layer's backward. The step computes about one more forward; the activations held at
once are the layers' inputs and one layer's intermediates instead of every layer's. The
gradients are those of the step without it: the same ops on the same inputs, each recomputed
dropout layer drawing its masks again from where it drew them (backends.Recomputing), and on
the GPU the buffers of what is no longer read handed to what is made after it.

A family takes part by writing one layer's forward as layer(n, x) -> (x, saved) and its
backward as layer_backward(n, dx, saved) -> dx, and running its layers through layers_forward
and layers_backward: every family does (models/llama.py, gpt2.py, phi.py, bert.py,
modernbert.py, t5.py; a decoder read as a classifier through its decoder's).
"""


class LayerInput:
    """What a checkpointed layer keeps from the forward: its input and its dropout mark."""

    __slots__ = ("x", "mark")

    def __init__(self, x, mark):
        self.x, self.mark = x, mark


def layers_forward(be, x, count, layer, train, checkpointing=False, lowest_layer=lambda: 0):
    """x through layers 0 .. count - 1; returns (x, each layer's saved state for the backward,
    [] without `train`). Inference hands each layer's intermediates to the next (end_layer).
    With `checkpointing` a layer keeps its input only (a LayerInput), and the layers below
    lowest_layer(), which no backward visits, not even that (asked only then: inference and
    the plain step need no lowest layer)."""
    saved = []
    lowest = lowest_layer() if train and checkpointing else 0
    for n in range(count):
        if not train:
            x, _ = layer(n, x)
            be.end_layer(x)       # inference: this layer's intermediates may be reused
        elif checkpointing:
            start, scope = LayerInput(x, be.dropout_mark()), be.scope()
            x, _ = layer(n, x)
            be.release_since(scope, keep=[x], also=[start.x] if n < lowest else ())
            saved.append(start)
        else:
            x, s = layer(n, x)
            saved.append(s)
    return x, saved


def layers_backward(be, dx, saved, layer, layer_backward, lowest, kept=()):
    """dx through the backward of layers len(saved) - 1 down to `lowest`, each checkpointed
    layer's forward run again first (its masks drawn again from its mark); what a layer's
    backward made, its input and the gradient it was given are then released but for the
    gradient it gives (None from a layer that computes none) and the tensors in `kept` (a list
    the layers' backward may add to: what is summed over the layers after them)."""
    for n in reversed(range(lowest, len(saved))):
        s = saved[n]
        if not isinstance(s, LayerInput):
            dx = layer_backward(n, dx, s)
            continue
        scope = be.scope()
        with be.dropout_from(s.mark):
            _, again = layer(n, s.x)
        given, dx = dx, layer_backward(n, dx, again)
        be.release_since(scope, keep=[dx, *kept], also=[given, s.x])
    return dx
