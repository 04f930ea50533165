"""What every decoder family's model shares (models/llama.py, models/gpt2.py, models/phi.py): which weights
train in LoRA or full fine-tuning, the head's name, and which layers the backward visits (what
T5 shares with them, where full fine-tuning puts the head's gradient included, is
lora.AdaptedModel's). A family sets config, lora, full and linears, and names its tensors."""

from .dropout_rates import override_rates
from .lora import AdaptedModel, Linears


class DecoderModel(AdaptedModel):
    decoder = True     # the GPU loads the decoder kernel families

    def _build(self, config, lora, modules, family, conv1d=False, dropout=None):
        """lora: a LoraConfig, or None to train every weight (full fine-tuning); modules: the
        family's linears, {name: (out, in)} in model order (see Linears); dropout: None for the
        checkpoint's rates (dropout_rates(config)), a float for all of them (0.0: none while
        training), or a dict naming some of them."""
        self.config = config
        self.dropout = override_rates(self.dropout_rates(config), dropout, family)
        self.full = lora is None
        self.linears = Linears(modules, lora, family, full=self.full, conv1d=conv1d,
                               params=config.parameter_shapes())
        self.lora = self.linears.lora        # "all-linear" spelled out
        self.targets = self.linears.targets
        self.trainable = dict(config.parameter_shapes()) if self.full else dict(self.linears.trainable)

    @property
    def head_name(self):
        """The head's weight: the token embedding when tied (transformers' names)."""
        return "model.embed_tokens.weight" if self.config.tie_word_embeddings else "lm_head.weight"

    @staticmethod
    def dropout_rates(config):
        """{name: probability} of the dropout the family applies in training: none unless a
        family says otherwise."""
        return {}

    def _lowest_layer(self):
        """The lowest layer the backward visits: 0 in full fine-tuning, else the lowest one
        holding an adapter (module names "<prefix>.<layers>.<n>....")."""
        if self.backward_to_inputs:
            return 0
        return self.linears.lowest_layer(lambda m: int(m.split(".")[2]))

    def _layernorm(self, be, x, name, eps):
        """LayerNorm with weight and bias (GPT-2, Phi-2): the output and what its backward needs."""
        return be.layernorm(x, be.param(name + ".weight"),
                            be.param(self.linears.param_name(name + ".bias")), eps)

    def _layernorm_backward(self, be, dy, saved, name):
        """dx; in full fine-tuning the norm's weight and bias gradients are added too, with
        bias="all" its bias's."""
        return be.layernorm_backward(dy, saved, be.grad(name + ".weight") if self.full else None,
                                     self.linears.bias_grad(be, name + ".bias"))
