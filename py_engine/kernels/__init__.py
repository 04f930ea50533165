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


class KernelFamily:
    """The entry points of one shader file compiled with one workgroup size, and the grid
    dispatch most of them use. Subclasses set SOURCE, ENTRIES and WORKGROUP (the default
    size; load(device, workgroup) compiles another, which the family then uses)."""

    SOURCE = None
    ENTRIES = ()
    WORKGROUP = 256

    def __init__(self, device, kernels):
        self.device = device
        self._kernels = kernels

    @classmethod
    async def load(cls, device, workgroup=None):
        """Compile the entry points with `workgroup` threads a workgroup (default WORKGROUP)."""
        workgroup = workgroup or cls.WORKGROUP
        constants = {"WORKGROUP": workgroup}
        family = cls(device, {e: await device.kernel(cls.SOURCE, e, constants) for e in cls.ENTRIES})
        family.WORKGROUP = workgroup
        return family

    def _dispatch(self, program, entry, buffers, count):
        """Enough workgroups for `count` items within the device limit; the kernels' grid-stride
        loops cover the rest."""
        from ..gpu import grid_groups

        program.dispatch(self._kernels[entry], buffers, grid_groups(self.device, count, self.WORKGROUP))
        return program
