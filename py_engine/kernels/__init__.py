"""GPU ops: each module records the dispatches of one op family into a py_engine.gpu.Program.

One module per shader file (shaders/<family>.wgsl), the NumPy reference of the same math in
py_engine/ops/<family>.py. The pattern every family follows:

    ln = await LayerNormKernels.load(device)       # compiles the family's entry points once
    ln.forward(program, x, gamma, beta, out, mean, rstd, rows=R, cols=C, eps=1e-12)

- Buffers are py_engine.gpu.Buffer objects holding contiguous row-major f32 data.
- Shapes and scalar hyperparameters are plain ints/floats fixed at record time: a recorded
  program replays with the same shapes, so each record call creates its small uniform buffer
  once. Values that change per step (a learning rate, a dropout seed, a step count) live in a
  buffer the caller writes before each replay.
- Nothing here imports NumPy: this code runs in the browser.
"""
