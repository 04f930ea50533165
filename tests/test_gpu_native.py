"""The compute API on wgpu-native (lavapipe on CI): kernels against NumPy, programs, errors.

Every kernel test draws fresh random inputs, fills the output with NaN before the dispatch and
compares with a float64 NumPy reference by relative error ||out - ref|| / ||ref|| under the
bound stated in py_engine.gpu.selfcheck.BOUNDS. NaN never passes.
"""

import warnings
from array import array

import numpy as np
import pytest
from conftest import floats, read, rel_error, run

from py_engine.gpu import (
    BufferTooLargeError,
    DeviceLostError,
    GPUError,
    NoWebGPUError,
    ShaderCompileError,
    SoftwareAdapterWarning,
    open_device,
)
from py_engine.gpu import selfcheck
from py_engine.gpu.selfcheck import BOUNDS


# --- device ------------------------------------------------------------------------

def test_device_reports_adapter_and_limits(device):
    info = device.info
    assert info.backend.startswith("native-")
    assert info.vendor or info.device
    for key in ("max_buffer_size", "max_storage_buffer_binding_size",
                "max_compute_workgroups_per_dimension", "max_compute_invocations_per_workgroup"):
        assert isinstance(device.limits[key], int) and device.limits[key] > 0, key
    assert device.backend == "native"


def test_software_adapter_is_reported_not_fatal():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dev = run(open_device("native"))
    if dev.info.is_software:  # lavapipe on CI: a warning, and the device still works
        assert any(issubclass(w.category, SoftwareAdapterWarning) for w in caught)
    else:
        assert not any(issubclass(w.category, SoftwareAdapterWarning) for w in caught)
    buffer = dev.buffer_from(b"\1\2\3\4")
    assert run(dev.read(buffer)).tobytes() == b"\1\2\3\4"
    dev.destroy()
    # every later call says the device is gone (an upload too: it never reaches a program)
    for later in (lambda: dev.write(buffer, b"\5\6\7\8"), lambda: run(dev.read(buffer)),
                  lambda: dev.create_buffer(16)):
        with pytest.raises(DeviceLostError, match="the GPU device was lost: destroyed"):
            later()


LOOPS = """
struct Counts { first: u32, second: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<uniform> counts: Counts;

@compute @workgroup_size(1)
fn main() {
  var a = 0u;
  for (var i = 0u; i < counts.first; i++) { a += 1u; }
  var b = 0u;
  for (var j = 0u; j < counts.second; j++) { b += 1u; }
  out[0] = a;
  out[1] = b;
}
"""


def test_loop_limit_is_what_the_adapter_does(device):
    """AdapterInfo.loop_limit: llvmpipe (here) stops an invocation's loops once 65,535
    iterations have run in all of them, silently; an adapter without a limit runs them all."""
    kernel = run(device.kernel_from_source(LOOPS, "main", "loops"))

    def counted(first, second):
        out = device.create_buffer(8)
        program = device.program()
        program.dispatch(kernel, [out, device.uniform("II", first, second)], (1, 1, 1))
        program.read(out)
        (data,) = run(program.run())
        return list(np.frombuffer(bytes(data), dtype=np.uint32))

    limit = device.info.loop_limit
    assert limit is None or "llvmpipe" in repr(device.info.as_dict()).lower()
    if limit is None:
        assert counted(70_000, 10) == [70_000, 10]
    else:
        assert counted(limit + 5000, 10)[0] < limit + 5000
        first, second = counted(40_000, 40_000)
        assert first == 40_000 and first + second <= limit + 2 and second < 40_000
        assert counted(1000, 2000) == [1000, 2000]


@pytest.mark.parametrize("names, limit", [
    (("llvmpipe", "", "llvmpipe (LLVM 15.0.6, 256 bits)", "Mesa 22.3.6"), 65535),
    (("google", "swiftshader", "", ""), None),
    (("NVIDIA", "", "NVIDIA H200", "580.159.04"), None),
])
def test_loop_limits_by_adapter(names, limit):
    from py_engine.gpu.device import AdapterInfo

    assert AdapterInfo(*names, backend="native-vulkan", is_fallback=False).loop_limit == limit


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        run(open_device("cuda"))


def test_browser_backend_outside_pyodide_raises_no_webgpu():
    with pytest.raises(NoWebGPUError, match="Pyodide"):
        run(open_device("browser"))


# --- kernels against NumPy -----------------------------------------------------------

@pytest.mark.parametrize("n, max_groups", [(1, None), (1000, None), (100_003, None), (100_003, 3)])
def test_add_matches_numpy(device, rng, n, max_groups):
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    out = floats(run(selfcheck.elementwise(device, "add", a, b, max_groups=max_groups)))
    assert rel_error(out, a.astype(np.float64) + b) <= BOUNDS["add"]


def test_scaled_add_matches_numpy(device, rng):
    n = 50_000
    alpha = np.float32(rng.uniform(-4, 4))
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    out = floats(run(selfcheck.elementwise(device, "scaled_add", a, b, alpha=float(alpha))))
    ref = np.float64(alpha) * a + b
    assert rel_error(out, ref) <= BOUNDS["scaled_add"]


@pytest.mark.parametrize("n", [1, 70_001])
def test_scale_matches_numpy(device, rng, n):
    """ElementwiseKernels.scale: alpha * a, one f32 rounding (Gemma's embedding normalizer)."""
    from py_engine.kernels.elementwise import ElementwiseKernels

    kernels = run(ElementwiseKernels.load(device))
    alpha = np.float32(rng.uniform(-50, 50))
    a = rng.standard_normal(n, dtype=np.float32)
    out = selfcheck.poisoned(device, n)
    program = device.program()
    kernels.scale(program, device.buffer_from(a), out, n, float(alpha))
    got = read(program, out)[0]
    np.testing.assert_array_equal(got, alpha * a)


@pytest.mark.parametrize("rows, cols, workgroup", [
    (1, 1, 256), (1, 100_000, 256), (37, 1000, 64), (513, 77, 128), (70_000, 3, 32),
])
def test_sum_rows_matches_numpy(device, rng, rows, cols, workgroup):
    # rows > 65535 exercises the spill of rows into the second dispatch dimension.
    x = rng.random((rows, cols), dtype=np.float32)
    out = floats(run(selfcheck.sum_rows(device, x, rows, cols, workgroup=workgroup)))
    assert rel_error(out, x.astype(np.float64).sum(axis=1)) <= BOUNDS["sum_rows"]


@pytest.mark.parametrize("m, n, k, tile, workgroup", [
    (1, 1, 1, (4, 4), (8, 8)),
    (67, 45, 33, (4, 4), (8, 8)),
    (128, 128, 128, (8, 4), (8, 8)),
    (200, 3, 300, (1, 1), (16, 16)),
    (5, 257, 64, (2, 8), (16, 4)),
])
def test_matmul_matches_numpy(device, rng, m, n, k, tile, workgroup):
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = floats(run(selfcheck.matmul(device, a, b, m, n, k, tile=tile, workgroup=workgroup)))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert rel_error(out, ref.ravel()) <= BOUNDS["matmul"]


def test_poisoned_output_catches_unwritten_elements(device, rng):
    """A launch that covers too little of C leaves NaN behind, and the check fails on it."""
    m = n = k = 64
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    kernel = run(device.kernel("matmul.wgsl", "matmul"))
    out = selfcheck.poisoned(device, m * n)
    program = device.program().dispatch(
        kernel, [device.buffer_from(a), device.buffer_from(b), out, device.uniform("III", m, n, k)],
        (1, 1),  # one 32x32 block of a 64x64 result
    )
    program.read(out)
    (result,) = run(program.run())
    values = floats(result)
    assert np.isnan(values).sum() == m * n - 32 * 32
    assert rel_error(values, (a @ b).ravel()) == np.inf


def test_selfcheck_passes_natively(device):
    report = run(selfcheck.run_selfcheck(device))
    assert report["ok"], report
    assert {c["kernel"] for c in report["checks"]} == set(BOUNDS)
    for c in report["checks"]:
        assert c["rel_error"] <= c["bound"], c


# --- recorded programs, uploads, reads ------------------------------------------------

def test_api_observations_natively(device):
    obs = run(selfcheck.api_observations(device))
    check_api_observations(obs)


def check_api_observations(obs):
    """Shared with the browser test: the API behaves the same on both backends."""
    assert obs["replay_values"] == [2000.0]  # 1000 dispatches x 2 replays, state persisted
    assert obs["round_trip_exact"] and obs["round_trip_padding"] == "00"
    assert obs["copy_tail"] == [float(i) for i in range(32)]
    assert obs["copy_head"] == [0.0] * 4
    assert obs["bad_wgsl"]["type"] == "ShaderCompileError"
    assert obs["bad_wgsl"]["line"] == selfcheck.BAD_WGSL_LINE
    assert "not_declared" in obs["bad_wgsl"]["message"]
    assert obs["missing_entry"]["type"] == "ShaderCompileError"
    assert "no_such_entry" in obs["missing_entry"]["message"]
    assert obs["unknown_constant"]["type"] == "ValueError" and "NOPE" in obs["unknown_constant"]["message"]
    assert obs["oversize_buffer"]["type"] == "BufferTooLargeError"
    assert "exceeds this device's limit" in obs["oversize_buffer"]["message"]
    assert obs["write_out_of_range"]["type"] == "ValueError"
    assert obs["too_many_workgroups"]["type"] == "ValueError"


def test_program_replays_with_new_inputs(device, rng):
    n = 1024
    kernel = run(device.kernel("elementwise.wgsl", "scaled_add"))
    a, b, out = device.create_buffer(4 * n), device.create_buffer(4 * n), device.create_buffer(4 * n)
    program = device.program().dispatch(kernel, [a, b, out, device.uniform("If", n, 0.5)], 4)
    program.read(out)
    for _ in range(3):
        x = rng.standard_normal(n, dtype=np.float32)
        y = rng.standard_normal(n, dtype=np.float32)
        a.write(x)
        b.write(y)
        (result,) = run(program.run())
        assert rel_error(floats(result), 0.5 * x.astype(np.float64) + y) <= BOUNDS["scaled_add"]


def test_variables_rewrite_recorded_uniforms_between_replays(device, rng):
    """A Variable packed into uniforms: one recorded program replays with each value set; a
    requirement refuses a value before anything is written; kinds must match the field."""
    from py_engine.gpu import Variable

    n = 777
    kernel = run(device.kernel("elementwise.wgsl", "scaled_add"))
    alpha = Variable(0.0, kind="f", name="alpha")
    a, b, out = (device.buffer_from(rng.standard_normal(n).astype(np.float32)) for _ in range(3))
    x, y = (floats(run(device.read(t))) for t in (a, b))
    program = device.program().dispatch(kernel, [a, b, out, device.uniform("If", n, alpha)], 4)
    program.read(out)
    alpha.require(lambda v: abs(v) <= 8, "a test bound")
    for value in (1.5, -3.25, 0.0):
        alpha.set(value)
        (result,) = run(program.run())
        assert rel_error(floats(result), value * x.astype(np.float64) + y) <= BOUNDS["scaled_add"]
    with pytest.raises(ValueError, match="alpha = 9.0 is out of range for a test bound"):
        alpha.set(9.0)
    assert alpha.value == 0.0
    with pytest.raises(TypeError, match="field is 'I'"):
        device.uniform("If", alpha, 1.0)
    with pytest.raises(ValueError, match="requirement already fails|out of range"):
        Variable(5, name="row").require(lambda v: v < 5, "five rows")


def test_uploads_accept_buffer_objects(device):
    values = [1.5, -2.0, 3.25, 0.0]
    for data in (array("f", values), np.array(values, np.float32), np.array(values, np.float32).tobytes(),
                 memoryview(np.array(values, np.float32))):
        assert list(floats(run(device.read(device.buffer_from(data))))) == values
    with pytest.raises(ValueError, match="contiguous"):
        device.buffer_from(np.zeros((4, 4), np.float32)[:, 1])
    with pytest.raises(TypeError, match="buffer object"):
        device.buffer_from([1.0, 2.0])


def test_16mb_round_trip_is_exact(device, rng):
    data = rng.integers(0, 256, 16 * 2**20, dtype=np.uint8)
    assert run(device.read(device.buffer_from(data))).tobytes() == data.tobytes()


# --- errors ------------------------------------------------------------------------

def test_shader_compile_error_names_file_line_and_source(device):
    with pytest.raises(ShaderCompileError) as caught:
        run(device.kernel_from_source(selfcheck.BAD_WGSL, "main", "bad.wgsl"))
    err = caught.value
    assert (err.source, err.line) == ("bad.wgsl", selfcheck.BAD_WGSL_LINE)
    assert "not_declared" in err.source_line
    assert str(err).startswith(f"WGSL error in bad.wgsl:{selfcheck.BAD_WGSL_LINE}:")


def test_missing_shader_file_lists_known_files(device):
    with pytest.raises(FileNotFoundError, match="matmul.wgsl"):
        run(device.kernel("no_such_kernel.wgsl", "main"))


def test_oversize_buffer_raises_before_allocating(device):
    limit = device.limits["max_storage_buffer_binding_size"]
    with pytest.raises(BufferTooLargeError, match=f"{limit:,}"):
        device.create_buffer(limit + 16)
    with pytest.raises(BufferTooLargeError):
        device.uniform("I" * (device.limits["max_uniform_buffer_binding_size"] // 4 + 4), *[0] * (
            device.limits["max_uniform_buffer_binding_size"] // 4 + 4))


def test_bad_arguments_raise(device):
    with pytest.raises(ValueError, match="positive"):
        device.create_buffer(0)
    with pytest.raises(ValueError, match="usage"):
        device.create_buffer(16, usage="vertex")
    buffer = device.create_buffer(16)
    buffer.destroy()
    with pytest.raises(GPUError, match="destroyed"):
        buffer.write(b"\0" * 4)
    kernel = run(device.kernel("elementwise.wgsl", "add"))
    one = device.create_buffer(16)
    with pytest.raises(GPUError, match="bindings"):
        device.program().dispatch(kernel, [one], 1)  # the kernel needs four bindings


def test_lost_device_raises_device_lost():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftwareAdapterWarning)
        dev = run(open_device("native"))
    obs = run(selfcheck.lost_observations(dev))
    check_lost_observations(obs)
    with pytest.raises(DeviceLostError):
        run(dev.read(dev.create_buffer(4)))


def check_lost_observations(obs):
    assert obs["lost"] == "destroyed"
    assert obs["create_buffer"]["type"] == "DeviceLostError"
    assert obs["kernel"]["type"] == "DeviceLostError"
