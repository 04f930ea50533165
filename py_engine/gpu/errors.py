"""Exceptions and warnings raised by the compute API, the same on every backend."""


class GPUError(RuntimeError):
    """Base class of every error raised by py_engine.gpu."""


class NoWebGPUError(GPUError):
    """No WebGPU implementation or no adapter could be found."""


class DeviceLostError(GPUError):
    """The GPU device was lost (destroyed, driver reset, tab backgrounded too long); `reason`
    is what the backend said."""

    def __init__(self, reason):
        super().__init__(f"the GPU device was lost: {reason}")
        self.reason = reason


class BufferTooLargeError(GPUError, ValueError):
    """A buffer request exceeds what the device allows."""


class ShaderCompileError(GPUError):
    """A WGSL kernel failed to compile or to build into a compute pipeline.

    `line` and `column` point into the WGSL file named by `source` (1-based; None when the
    implementation gave no position), `message` is the compiler's own text. When that file is
    one the kernel includes, `included_by` names the kernel (else None).
    """

    def __init__(self, source, message, line=None, column=None, source_line=None, included_by=None):
        self.source = source
        self.message = message
        self.line = line
        self.column = column
        self.source_line = source_line
        self.included_by = included_by
        where = source if line is None else f"{source}:{line}:{column or 1}"
        if included_by is not None:
            where += f" (included by {included_by})"
        text = f"WGSL error in {where}: {message}"
        if source_line is not None:
            text += f"\n    {source_line.strip()}"
        super().__init__(text)


class ShaderIncludeError(ShaderCompileError):
    """An //#include directive names a file that does not exist, closes a cycle of includes,
    or is misspelt; `source` and `line` point at the directive."""


class SoftwareAdapterWarning(UserWarning):
    """The adapter is a CPU implementation (SwiftShader, lavapipe): correct but slow."""
