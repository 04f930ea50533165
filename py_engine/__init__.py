"""py_engine: LoRA fine-tuning of small transformers on WebGPU, driven from Python.

The same package runs natively under CPython (wgpu-py) and in the browser under Pyodide
(navigator.gpu). Importing it pulls in nothing beyond the standard library.
"""

__version__ = "0.1.0"
