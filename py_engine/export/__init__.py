"""Exports of a fine-tuned model for other engines: a merged Hugging Face checkpoint
(transformers), GGUF for llama.cpp and Ollama (with a Modelfile, and LoRA adapters for
llama.cpp's --lora), ONNX for classifiers (ONNX Runtime).

merged: the model with its adapter folded in, as every export reads it. gguf: the GGUF
container and its quantizations; gguf_llama, gguf_vocab: a Llama-family model (Gemma too) and
its tokenizer as llama.cpp reads them, gguf_gpt2, gguf_phi2, gguf_t5: what the GPT-2, Phi-2
and T5 families write differently; modelfile: Ollama's Modelfile from the chat template. These
are pure Python and run in Pyodide. onnx_export builds the ONNX graph with the `onnx` package
(host only); cli: `py-engine export`. job: `py-engine export-job`, a folder that trains the
same LoRA with transformers' Trainer, PEFT and accelerate (job_train.py is its train.py,
job_presets.py the bases it can name).
"""
