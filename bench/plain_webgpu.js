// The same measurements as bench/gpu_bench.py written directly against WebGPU in JS: the
// baseline the browser backend is compared with, round by round in the same page. A classic
// script (no exports): the benchmark runner injects it and Python reaches it as
// `js.plainWebGPU`.
window.plainWebGPU = (() => {
  let shared = null;
  async function device() {
    if (!shared) shared = await (await navigator.gpu.requestAdapter()).requestDevice();
    return shared;
  }

  // wgsl: elementwise.wgsl specialized with WORKGROUP = 64, as the Python side compiles it.
  // Resolves to a round function returning [submit us/dispatch, total us/dispatch].
  async function replayRound(wgsl, dispatches = 1000, n = 64) {
    const dev = await device();
    const U = GPUBufferUsage;
    const buf = (size, usage) => dev.createBuffer({ size, usage });
    const a = buf(4 * n, U.STORAGE | U.COPY_DST), b = buf(4 * n, U.STORAGE | U.COPY_DST);
    const out = buf(4 * n, U.STORAGE | U.COPY_SRC);
    const params = buf(16, U.UNIFORM | U.COPY_DST);
    dev.queue.writeBuffer(a, 0, new Float32Array(n).fill(1));
    dev.queue.writeBuffer(b, 0, new Float32Array(n).fill(2));
    const p = new ArrayBuffer(16);
    new Uint32Array(p)[0] = n; new Float32Array(p)[1] = 1;
    dev.queue.writeBuffer(params, 0, p);
    const module = dev.createShaderModule({ code: wgsl });
    const pipeline = await dev.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "add" } });
    const group = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [a, b, out, params].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const groups = Math.ceil(n / 64);
    return async () => {
      const t0 = performance.now();
      const encoder = dev.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (let i = 0; i < dispatches; i++) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(groups, 1, 1);
      }
      pass.end();
      dev.queue.submit([encoder.finish()]);
      const t1 = performance.now();
      await dev.queue.onSubmittedWorkDone();
      const t2 = performance.now();
      return [(t1 - t0) * 1e3 / dispatches, (t2 - t0) * 1e3 / dispatches];
    };
  }

  // Resolves to [upload round, download round], each returning milliseconds.
  async function transferRounds(nbytes = 16 * 2 ** 20) {
    const dev = await device();
    const U = GPUBufferUsage;
    const data = new Uint8Array(nbytes);
    for (let i = 0; i < nbytes; i += 4096) data[i] = 1;
    const buffer = dev.createBuffer({ size: nbytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
    const upload = async () => {
      const t0 = performance.now();
      dev.queue.writeBuffer(buffer, 0, data);
      await dev.queue.onSubmittedWorkDone();
      return performance.now() - t0;
    };
    const download = async () => {
      const t0 = performance.now();
      const staging = dev.createBuffer({ size: nbytes, usage: U.MAP_READ | U.COPY_DST });
      const encoder = dev.createCommandEncoder();
      encoder.copyBufferToBuffer(buffer, 0, staging, 0, nbytes);
      dev.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const back = new Uint8Array(staging.getMappedRange().slice(0));
      staging.unmap();
      staging.destroy();
      const elapsed = performance.now() - t0;
      if (back[4096] !== 1) throw new Error("plain transfer read back different bytes");
      return elapsed;
    };
    return [upload, download];
  }

  return { replayRound, transferRounds };
})();
