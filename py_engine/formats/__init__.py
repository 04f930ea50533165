"""File formats the engine reads and writes, in pure Python (they run inside Pyodide too).

safetensors: Hugging Face's tensor file format, read zero-copy and written atomically.
"""
