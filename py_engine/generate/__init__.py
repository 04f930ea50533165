"""Text generation for the Llama-family decoder with a KV cache: sampling (pure Python), a NumPy
decoder (host), a WebGPU decoder, and one async loop that drives either.

    from py_engine.generate import generate, NumpyDecoder, GpuDecoder
    decoder = await GpuDecoder.create(device, config, params)   # or NumpyDecoder(config, params)
    result = await generate(decoder, tokenizer, prompt_ids, max_new_tokens=64)

The decoders are imported lazily: NumpyDecoder needs NumPy, which the browser does not have.
"""

from .generation import GenerationResult, generate
from .sampling import TextStream, greedy, sample, warp, warp_scores

__all__ = ["GenerationResult", "GpuDecoder", "NumpyDecoder", "TextStream", "generate", "greedy",
           "sample", "warp", "warp_scores"]


def __getattr__(name):
    if name == "NumpyDecoder":
        from .numpy_decoder import NumpyDecoder
        return NumpyDecoder
    if name == "GpuDecoder":
        from .gpu_decoder import GpuDecoder
        return GpuDecoder
    raise AttributeError(name)
