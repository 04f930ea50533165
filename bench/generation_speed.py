"""Generation speed: py_engine's GPU decoder against transformers' `generate` on CUDA, each in
its own process, rounds alternating (bench/processes.py). bench/gpu_device.py runs it on each
decoder shape's random checkpoint, greedy and sampled (SAMPLED).

A round generates TOKENS tokens after a PROMPT-token prompt, the KV cache on both sides. Greedy:
the engine through GpuDecoder (prefill, then one step per token, the token chosen on the GPU:
generation.generate's loop without the text bookkeeping), transformers through
`model.generate(do_sample=False, min_new_tokens=TOKENS)`. Sampled: the engine through
generation.generate (drawing among the candidates the GPU picks), transformers with
do_sample=True and the same settings. A CUDA synchronize ends each torch round. The round's
time divided by TOKENS is its "step": time per generated token, prefill included on both sides.
float32 weights on both sides.
"""

import time

from contenders import open_native

PROMPT = 32
TOKENS = 32
SAMPLED = {"temperature": 0.7, "top_k": 0, "top_p": 0.9}


def prompt_ids(vocab):
    return [(7 * i + 3) % vocab for i in range(PROMPT)]


class EngineGenerate:
    """py_engine's GpuDecoder over the checkpoint (base weights f32, no adapter)."""

    def __init__(self, model_dir, tokens=TOKENS, sampling=None):
        from py_engine.generate import GpuDecoder
        from py_engine.gpu import run_sync

        self.run_sync, self.tokens, self.sampling = run_sync, tokens, sampling
        timings = {}
        device = open_native(timings)
        started = time.perf_counter()
        self.decoder = run_sync(GpuDecoder.load(device, model_dir, max_length=PROMPT + tokens))
        timings["load_s"] = time.perf_counter() - started
        self.prompt = prompt_ids(self.decoder.config.vocab_size)
        self.info = {"backend": "gpu", "adapter": device.info.as_dict(), "timings": timings,
                     "prompt": PROMPT, "tokens": tokens, "sampling": sampling}
        self.seed = 0

    async def _generate(self):
        if self.sampling:
            from generation import Silent
            from py_engine.generate import generate

            self.seed += 1
            result = await generate(self.decoder, Silent(), self.prompt, max_new_tokens=self.tokens,
                                    greedy=False, seed=self.seed, **self.sampling)
            return result.ids
        token, _ = await self.decoder.prefill(self.prompt, greedy=True)
        ids = [token]
        while len(ids) < self.tokens:
            token, _ = await self.decoder.step(token, greedy=True)
            ids.append(token)
        return ids

    def round(self):
        started = time.perf_counter()
        self.ids = self.run_sync(self._generate())
        return {"seconds": [(time.perf_counter() - started) / self.tokens], "loss": 0.0}

    def finish(self):
        return {"ids": self.ids}


class TorchGenerate:
    """transformers' model of the checkpoint's family, `generate` on `device` (CUDA; the CPU
    where torch sees no GPU), float32."""

    def __init__(self, model_dir, device="cuda", tokens=TOKENS, sampling=None):
        import torch
        from transformers import AutoModelForCausalLM

        if device == "cuda" and not torch.cuda.is_available():
            device = "cpu"
        self.torch, self.device, self.tokens, self.sampling = torch, device, tokens, sampling
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.input_ids = torch.tensor([prompt_ids(self.model.config.vocab_size)], device=device)
        self.info = {"device": device, "cuda": torch.cuda.get_device_name() if device == "cuda" else None,
                     "prompt": PROMPT, "tokens": tokens, "sampling": sampling}

    def round(self):
        torch = self.torch
        started = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(self.input_ids, attention_mask=torch.ones_like(self.input_ids),
                                      max_new_tokens=self.tokens, min_new_tokens=self.tokens,
                                      pad_token_id=0, eos_token_id=None,
                                      **({"do_sample": True, **self.sampling} if self.sampling
                                         else {"do_sample": False}))
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.ids = out[0, self.input_ids.shape[1]:].tolist()
        return {"seconds": [(time.perf_counter() - started) / self.tokens], "loss": 0.0}

    def finish(self):
        return {"ids": self.ids}
