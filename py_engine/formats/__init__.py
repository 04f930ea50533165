"""File formats the engine reads and writes, in pure Python (they run inside Pyodide too).

safetensors: Hugging Face's tensor file format, read zero-copy and written atomically (and the
shards an index names read as one file). torch_pickle: PyTorch's .bin state dicts, read by an
unpickler that resolves nothing but tensors.
peft_adapter, model_dir: PEFT adapter directories and whole checkpoint directories.
output_dir: where a directory may be written (new, empty or py_engine's own; never over an
input) and the atomic stage-and-swap every save uses.
finite: the check that keeps NaN and infinity out of every saved tensor.
head_config: a classifier adapter's pooling. json_file: JSON files read with errors naming them.
"""
