"""Bases a training job can name instead of a local checkpoint (`py-engine export-job --model
llama-3-8b`, or `train.py --base llama-3-8b` in a job folder): where transformers finds them on
the Hugging Face Hub, and how they train best on a GPU.

task: what the base trains, in job.json's names: "causal_lm" (chat models) or "seq2seq"
(FLAN-T5, an encoder-decoder); a job trains only on a base of its own task. target_modules:
what PEFT's default for the family (q_proj, v_proj; T5's q, v) is called in that model (Phi-3
fuses q, k and v into qkv_proj). dtype and gradient_checkpointing: the base's weights in
bfloat16, activations recomputed in the backward pass, so that 7-8B models fit one 24-80 GB GPU
with LoRA; FLAN-T5 small and base fit as they are, their weights kept in float32 (T5 overflows
in float16, and bf16 autocast is precision enough). py_engine: whether py_engine runs the
family, so that the job's adapter loads back into it and into the page (Llama, Mistral, Phi-3,
Qwen3, SmolLM3, Gemma 2 and 3, T5: yes).
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BasePreset:
    model_id: str
    target_modules: tuple = ("q_proj", "v_proj")
    dtype: str = "bfloat16"
    gradient_checkpointing: bool = True
    py_engine: bool = True
    task: str = "causal_lm"

    def as_dict(self):
        return dict(asdict(self), target_modules=list(self.target_modules))


PRESETS = {
    "llama-3-8b": BasePreset("meta-llama/Meta-Llama-3-8B-Instruct"),
    "llama-3.1-8b": BasePreset("meta-llama/Llama-3.1-8B-Instruct"),
    "mistral-7b": BasePreset("mistralai/Mistral-7B-Instruct-v0.3"),
    "phi-3-mini": BasePreset("microsoft/Phi-3-mini-4k-instruct", target_modules=("qkv_proj",)),
    "smollm3-3b": BasePreset("HuggingFaceTB/SmolLM3-3B"),
    "tinyllama": BasePreset("TinyLlama/TinyLlama-1.1B-Chat-v1.0", gradient_checkpointing=False),
    "smollm2-135m": BasePreset("HuggingFaceTB/SmolLM2-135M-Instruct",
                               gradient_checkpointing=False),
    "smollm2-360m": BasePreset("HuggingFaceTB/SmolLM2-360M-Instruct",
                               gradient_checkpointing=False),
    "smollm2-1.7b": BasePreset("HuggingFaceTB/SmolLM2-1.7B-Instruct",
                               gradient_checkpointing=False),
    "gemma-2-2b": BasePreset("google/gemma-2-2b-it"),
    "gemma-3-270m": BasePreset("google/gemma-3-270m-it", gradient_checkpointing=False),
    "gemma-3-1b": BasePreset("google/gemma-3-1b-it", gradient_checkpointing=False),
    "qwen3-0.6b": BasePreset("Qwen/Qwen3-0.6B", gradient_checkpointing=False),
    "qwen3-1.7b": BasePreset("Qwen/Qwen3-1.7B", gradient_checkpointing=False),
    "flan-t5-small": BasePreset("google/flan-t5-small", target_modules=("q", "v"),
                                dtype="float32", gradient_checkpointing=False, task="seq2seq"),
    "flan-t5-base": BasePreset("google/flan-t5-base", target_modules=("q", "v"),
                               dtype="float32", gradient_checkpointing=False, task="seq2seq"),
}


def presets_json():
    """presets.json of a job folder: {name: the preset's fields}."""
    return {name: preset.as_dict() for name, preset in PRESETS.items()}
