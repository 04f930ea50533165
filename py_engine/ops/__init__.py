"""NumPy reference ops: each op's forward and backward, the math the WGSL kernels are checked
against and the CPU backend (host only: this package imports NumPy).

One module per op family, named like its shader file (shaders/layernorm.wgsl <->
py_engine/ops/layernorm.py <-> py_engine/kernels/layernorm.py). Functions are plain:
`<op>_forward(...)` returns the output and whatever the backward needs; `<op>_backward(...)`
returns the gradients. Arrays are float32 or float64 (the tests use float64 against torch
autograd); nothing here caches state.
"""
