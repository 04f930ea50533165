"""Text generation for the decoders (Llama, GPT-2 and Phi-2 families) with a KV cache: sampling (pure
Python), a NumPy decoder (host), a WebGPU decoder, and one async loop that drives either.

    from py_engine.generate import generate, NumpyDecoder, GpuDecoder
    decoder = await GpuDecoder.load(device, checkpoint_dir)     # or NumpyDecoder.load(checkpoint_dir)
    result = await generate(decoder, tokenizer, prompt_ids, max_new_tokens=64)

The decoders (generate/decoder.py) run the model's own forward with a KV cache; a runtime
makes one over the weights it trains (runtime.decoder()).
"""

from .decoder import GpuDecoder, NumpyDecoder
from .generation import GenerationResult, generate
from .seq2seq import NumpySeq2SeqDecoder
from .sampling import TextStream, greedy, sample, warp, warp_scores

__all__ = ["GenerationResult", "GpuDecoder", "NumpyDecoder", "NumpySeq2SeqDecoder", "TextStream",
           "generate", "greedy", "sample", "warp", "warp_scores"]
