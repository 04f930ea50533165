"""Exports of a fine-tuned model for other engines: a merged Hugging Face checkpoint
(transformers), GGUF for llama.cpp and Ollama (with a Modelfile, and LoRA adapters for
llama.cpp's --lora), ONNX for classifiers (ONNX Runtime).

merged: the model with its adapter folded in, as every export reads it. gguf: the GGUF
container and its quantizations; gguf_llama, gguf_vocab: a Llama-family model and its
tokenizer as llama.cpp reads them; modelfile: Ollama's Modelfile from the chat template. These
are pure Python and run in Pyodide. onnx_export builds the ONNX graph with the `onnx` package
(host only); cli: `py-engine export`.
"""
