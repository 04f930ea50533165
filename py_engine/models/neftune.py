"""NEFTune (transformers' TrainingArguments.neftune_noise_alpha): in training, noise uniform in
[-m, m] is added to the input embeddings, m = alpha / sqrt(L d) for a batch of padded length L
and embedding width d, as transformers' hook on get_input_embeddings() adds it (before any
position embedding, scale or dropout of the model's own; on both stacks of an encoder-decoder,
whose shared embedding both read). Its gradient passes through as it is. The noise is drawn as
a dropout mask is, from the step's seed at the running counter (ops/dropout.py uniform_noise),
so the NumPy and GPU backends draw the same; L is the batch's length as padded here (to a
multiple of 8), where transformers' collator pads to the longest example.
"""

import math


def noised_embeddings(be, x, alpha, length, train):
    """The input embeddings x [B*L, d] with NEFTune's noise for `alpha` (None or 0: none), in
    training only."""
    if not train or not alpha:
        return x
    return be.add_noise(x, alpha / math.sqrt(length * x.shape[-1]))
