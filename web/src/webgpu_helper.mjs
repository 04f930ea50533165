// WebGPU side of py_engine's browser backend (py_engine/gpu/browser.py).
//
// Python drives everything, but crossing the Pyodide FFI costs microseconds per call, so the
// work that happens per dispatch (encoding, binding) lives here: Python records a program once
// (`record`) and replays it with one call per run (`replay` / `run`). Uploads read straight out
// of the wasm heap through the PyProxy buffer protocol, with no intermediate copy.
//
// Registered into Pyodide as the JS module "py_engine_webgpu" by boot.mjs.

const lost = new WeakMap(); // GPUDevice -> reason string once lost
const uncaptured = new WeakMap(); // GPUDevice -> first uncaptured error message

export async function open(powerPreference) {
  if (!globalThis.navigator || !navigator.gpu) {
    return { error: "navigator.gpu is missing: this browser has no WebGPU (Chromium needs --enable-unsafe-webgpu on Linux)" };
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference });
  if (!adapter) {
    return { error: "navigator.gpu.requestAdapter() returned null: WebGPU is present but no adapter is available" };
  }
  const wanted = [
    "maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY",
    "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupsPerDimension",
    "maxStorageBuffersPerShaderStage", "maxUniformBufferBindingSize",
  ];
  const requiredLimits = {};
  for (const k of wanted) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ requiredLimits });
  device.lost.then((info) => lost.set(device, info.message || info.reason || "lost"));
  device.addEventListener("uncapturederror", (event) => {
    if (!uncaptured.has(device)) uncaptured.set(device, event.error.message);
  });
  const info = adapter.info || {};
  const limits = {};
  for (const k in device.limits) limits[k] = device.limits[k];
  return {
    device,
    info: {
      vendor: info.vendor || "",
      architecture: info.architecture || "",
      device: info.device || "",
      description: info.description || "",
      isFallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    },
    limits,
    features: [...device.features],
  };
}

// Functions read from Python return undefined, not null, for "nothing": Pyodide turns
// undefined into None but null into pyodide.ffi.jsnull.
export function lostReason(device) {
  return lost.get(device);
}

// Whether `device` is lost, or is within `ms`: a wait on it (mapAsync) fails with an AbortError
// a moment before its lost promise settles. open()'s reaction to device.lost was registered
// first, so it has run by the time the race settles.
export async function lostSoon(device, ms = 2000) {
  if (lost.has(device)) return true;
  let timer;
  await Promise.race([device.lost, new Promise((resolve) => { timer = setTimeout(resolve, ms); })]);
  clearTimeout(timer);
  return lost.has(device);
}

export function destroy(device) {
  lost.set(device, "destroyed");
  device.destroy();
}

export function createBuffer(device, size, usage, label) {
  const U = GPUBufferUsage;
  const flags = usage === "storage" ? U.STORAGE | U.COPY_SRC | U.COPY_DST : U.UNIFORM | U.COPY_DST;
  return device.createBuffer({ size, usage: flags, label: label || undefined });
}

// `data` is a PyProxy of a Python byte buffer: read it in place from the wasm heap.
export function writeBuffer(device, buffer, offset, data) {
  const view = data.getBuffer("u8");
  try {
    device.queue.writeBuffer(buffer, offset, view.data, 0, view.data.byteLength);
  } finally {
    view.release();
  }
}

// Compile; resolves to {pipeline} or {error, line, column}.
export async function createPipeline(device, code, entryPoint, label) {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code, label });
  const info = await module.getCompilationInfo();
  const scoped = await device.popErrorScope();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length) {
    const m = errors[0];
    return { error: errors.map((e) => e.message).join("\n"), line: m.lineNum || undefined, column: m.linePos || undefined };
  }
  if (scoped) return { error: scoped.message };
  try {
    const pipeline = await device.createComputePipelineAsync({
      layout: "auto", compute: { module, entryPoint }, label: `${label}:${entryPoint}`,
    });
    return { pipeline };
  } catch (e) {
    return { error: e.message };
  }
}

// Validation errors here surface through takeError() at the next run, as WebGPU reports them
// asynchronously; waiting on an error scope per bind group would cost a round trip each.
export function createBindGroup(device, pipeline, buffers) {
  return device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: Array.from(buffers, (buffer, binding) => ({ binding, resource: { buffer } })),
  });
}

// The first validation error WebGPU reported outside an error scope since the last call.
export function takeError(device) {
  const e = uncaptured.get(device);
  uncaptured.delete(device);
  return e;
}

// ops: [["dispatch", pipeline, bindGroup, [x, y, z]] | ["copy", src, srcOffset, dst, dstOffset, size]]
// reads: [[buffer, offset, size]]
export function record(device, ops, reads) {
  const program = { device, ops: [], reads: [], staging: [] };
  for (const op of ops) program.ops.push(Array.from(op));
  for (const [buffer, offset, size] of reads) {
    program.reads.push([buffer, offset, size]);
    program.staging.push(device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
  }
  return program;
}

export function replay(program) {
  const { device, ops, reads, staging } = program;
  const encoder = device.createCommandEncoder();
  let pass = null;
  for (const op of ops) {
    if (op[0] === "dispatch") {
      if (!pass) pass = encoder.beginComputePass();
      const g = op[3];
      pass.setPipeline(op[1]);
      pass.setBindGroup(0, op[2]);
      pass.dispatchWorkgroups(g[0], g[1], g[2]);
    } else {
      if (pass) { pass.end(); pass = null; }
      encoder.copyBufferToBuffer(op[1], op[2], op[3], op[4], op[5]);
    }
  }
  if (pass) pass.end();
  for (let i = 0; i < reads.length; i++) {
    const [buffer, offset, size] = reads[i];
    encoder.copyBufferToBuffer(buffer, offset, staging[i], 0, size);
  }
  device.queue.submit([encoder.finish()]);
}

// Replay, then wait until every read's staging buffer is mapped. The bytes stay in the mapped
// ranges until take() copies them straight into Python memory: one copy, no JS garbage.
export async function run(program) {
  replay(program);
  await Promise.all(program.staging.map((buffer) => buffer.mapAsync(GPUMapMode.READ)));
}

// Copy read `index` of the last run into `target` (a PyProxy of a writable Python buffer).
export function take(program, index, target) {
  const staging = program.staging[index];
  const view = target.getBuffer("u8");
  try {
    view.data.set(new Uint8Array(staging.getMappedRange()));
  } finally {
    view.release();
    staging.unmap();
  }
}

// Free the staging buffers of a program that will not run again.
export function release(program) {
  for (const buffer of program.staging) buffer.destroy();
  program.staging.length = 0;
}

export async function synchronize(device) {
  await device.queue.onSubmittedWorkDone();
}
