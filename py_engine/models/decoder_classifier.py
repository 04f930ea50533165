"""A decoder as a sequence classifier with LoRA: transformers' *ForSequenceClassification of the
decoder families (LlamaForSequenceClassification and its kind: Qwen2, Qwen3, Mistral, Gemma,
Phi-3, ...; GPT2ForSequenceClassification; PhiForSequenceClassification), over the decoder's
own forward and backward (models/llama.py, gpt2.py, phi.py):

    h = the decoder's final hidden states (after its final norm), [B*T, hidden]
    pooled = h at each sequence's last real token ("last"), or the mean over its real tokens
             ("mean", as a sentence encoder pools)
    logits = score(pooled)          (no bias)

transformers takes the rightmost token that is not the padding id; the batches here are padded
on the right, so that is the last token the attention mask keeps, which is what is taken
(the same unless a text's own last tokens are the padding id). LoRA wraps the decoder's
linears as PEFT wraps them (their names are the causal LM's: "model.layers.0.self_attn.q_proj",
"transformer.h.0.attn.c_attn"); `score` trains whole (PEFT's modules_to_save for SEQ_CLS,
"classifier" and "score"). The language-model head is not read.
"""

import copy

from .bert import check_classifier
from .bert_config import ConfigError
from .decoders import decoder_model
from .lora import AdaptedModel
from .lora_config import LoraConfigError
from .lora_tables import HEAD as TABLE_HEAD

POOLINGS = ("last", "mean")
HEAD = "score"
# modules_to_save entries that name the classifier's head (PEFT's defaults for SEQ_CLS)
HEAD_ENTRIES = ("classifier", "score")


class DecoderClassifierConfig:
    """A decoder checkpoint's config as the sequence classifier reads it: the classifier's
    fields, and the decoder's own (`decoder`: a LlamaConfig, Gpt2Config or PhiConfig), which
    every other attribute reads through."""

    prefix = ""                 # the decoder's names are transformers' whole
    pooling_in_config = False   # config.json has no field for the pooling
    default_pooling = "last"    # transformers' decoder sequence classifiers

    head_output = HEAD          # the head's output layer, one row per label

    def __init__(self, decoder, id2label=None, problem_type=None):
        """id2label, problem_type: config.json's (a fine-tuned classifier's labels and kind)."""
        if getattr(decoder, "encoder_decoder", False):
            raise ConfigError(f"model_type {decoder.model_type!r} is an encoder-decoder: its "
                              "sequence classifier is not built here")
        self.decoder = decoder
        self.id2label = id2label
        self.problem_type = problem_type

    def __getattr__(self, name):
        if name == "decoder":       # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.decoder, name)

    @property
    def family(self):
        return self.decoder.model_type

    @property
    def classifier_targets(self):
        """PEFT's default LoRA targets for the family (its causal LM's)."""
        return self.decoder.lora_targets

    @property
    def positions(self):
        return self.decoder.max_position_embeddings

    def trains_pooler(self, tensors):
        """No pooler: the head (score) is the adapter's."""
        return False

    def classifier_names(self, names):
        """{transformers name: checkpoint name} of the tensors a merged classifier keeps: the
        decoder's own names."""
        return {name: name for name in names}

    def classifier_architecture(self, architectures):
        """transformers' sequence classifier of the causal LM config.json names
        (LlamaForCausalLM -> LlamaForSequenceClassification, GPT2LMHeadModel ->
        GPT2ForSequenceClassification); a fine-tuned classifier's own."""
        for name in architectures or ():
            if isinstance(name, str) and name.endswith("ForSequenceClassification"):
                return name
            for suffix in ("ForCausalLM", "LMHeadModel"):
                if isinstance(name, str) and name.endswith(suffix):
                    return name[:-len(suffix)] + "ForSequenceClassification"
        raise ConfigError(f"config.json names no causal LM architecture ({architectures!r}) to "
                          "name its sequence classifier after")

    def parameter_shapes(self):
        """The decoder's tensors the classifier reads: all but the language-model head (a
        tied head is the embedding, read anyway)."""
        return {n: s for n, s in self.decoder.parameter_shapes().items()
                if not n.startswith("lm_head.")}


class DecoderClassifier(AdaptedModel):
    """Structure of the model: which parameters exist, which train, and the step's math."""

    decoder = False             # not a language model: no LM head, no generation
    decoder_kernels = True      # the GPU loads RoPE, RMSNorm, the gated MLP, causal attention
    head_module = HEAD
    train_pooler = pooler_lora = False      # BertClassifier's pooler options: no pooler here

    def __init__(self, config, lora, num_labels, pooling=None, dropout=None):
        """config: a DecoderClassifierConfig; pooling: "last" (None) or "mean"; dropout: the
        decoder's rates (None: the checkpoint's; a float or a dict, as ChatModel's)."""
        pooling = pooling or config.default_pooling
        if pooling not in POOLINGS:
            raise ValueError(f"a decoder classifier pools with {' or '.join(map(repr, POOLINGS))}, "
                             f"got {pooling!r} (its first token has seen nothing else)")
        check_classifier(lora, num_labels, pooling, POOLINGS)
        whole = [m for m in lora.modules_to_save if m not in HEAD_ENTRIES]
        if whole:
            raise LoraConfigError(f"modules_to_save {whole!r} trains those modules whole beside "
                                  f"the LoRA; a decoder classifier here trains only its head "
                                  f"({HEAD}) whole")
        body_lora = copy.copy(lora)
        body_lora.modules_to_save = []
        self.body = decoder_model(config.decoder, body_lora, dropout=dropout)
        if self.body.tokens.module is not None:
            raise LoraConfigError("trainable_token_indices (PEFT's trainable tokens) is built "
                                  "for causal LMs here, not a decoder read as a classifier")
        if self.body.linears.tables.of_kind(TABLE_HEAD) is not None:
            raise LoraConfigError("LoRA targets name lm_head, the causal LM's output layer: a "
                                  f"decoder classifier has none (its head, {HEAD}, trains whole)")
        self.config = config
        self.full = False
        self.num_labels = num_labels
        self.pooling = pooling
        self.linears = self.body.linears
        self.lora = copy.copy(self.linears.lora)        # "all-linear" spelled out
        self.lora.modules_to_save = list(lora.modules_to_save)
        self.targets = self.linears.targets
        self.dropout = self.body.dropout
        self.trainable = dict(self.body.trainable)
        self.trainable[HEAD + ".weight"] = (num_labels, config.hidden_size)

    @property
    def supports_gradient_checkpointing(self):
        return self.body.supports_gradient_checkpointing

    def table_merge_names(self):
        """The merge of a LoRA on the decoder's embedding (the body's; it has no output layer)."""
        return self.body.table_merge_names()

    @property
    def gradient_checkpointing(self):
        """The decoder's (its layers are the body's)."""
        return self.body.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on):
        self.body.gradient_checkpointing = on

    @property
    def last_token(self):
        """Its batches carry each row's last real token (Batch.last) where it pools there."""
        return self.pooling == "last"

    def frozen_names(self):
        """The decoder's frozen tensors but the language-model head."""
        return [n for n in self.body.frozen_names() if not n.startswith("lm_head.")]

    def forward(self, be, batch, train):
        """Logits [B, num_labels] and what the backward needs. `batch` holds backend tensors
        ids, mask and last ([B, T]: each row's last real token) and sizes B, T."""
        hidden, body = self.body.forward(be, batch, train)
        pooled = be.mean_pool(hidden, self._pooled_rows(batch), batch.B, batch.T)
        return be.linear(pooled, be.param(HEAD + ".weight"), None), {"body": body, "pooled": pooled}

    def _pooled_rows(self, batch):
        """The tokens pooled: the last real one's one-hot row, or every real one."""
        return batch.last if self.pooling == "last" else batch.mask

    def backward(self, be, dlogits, saved, batch):
        """Accumulate the gradient of every trainable parameter into be.grad(name)."""
        w = be.param(HEAD + ".weight")
        be.linear_grad_params(dlogits, saved["pooled"], be.grad(HEAD + ".weight"), None)
        dpooled = be.linear_grad_input(dlogits, w)
        dhidden = be.mean_pool_backward(dpooled, self._pooled_rows(batch), batch.B, batch.T)
        self.body.backward(be, dhidden, saved["body"], batch)
