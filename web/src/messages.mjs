// Values crossing into and out of Python in the worker (py_engine/worker_bridge.py is the other
// side): JSON text plus a list of byte buffers, each bytes value inside the value replaced by
// {"$bytes": i}, its index in the list. Between the page and the worker values travel as they
// are (structured clone), their byte buffers transferred rather than copied.

const BYTES = "$bytes";

function isBytes(v) {
  return v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

function asUint8(v) {
  return v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

// [JSON text, [Uint8Array]] of a value whose leaves may be byte buffers.
export function pack(value) {
  const buffers = [];
  const text = JSON.stringify(value ?? null, (key, v) => {
    if (isBytes(v)) {
      buffers.push(asUint8(v));
      return { [BYTES]: buffers.length - 1 };
    }
    return v;
  });
  return [text, buffers];
}

// The value pack() packed, its byte buffers as Uint8Arrays.
export function unpack(text, buffers) {
  return JSON.parse(text, (key, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === BYTES) return asUint8(buffers[v[BYTES]]);
    }
    return v;
  });
}

// The distinct ArrayBuffers inside a value: postMessage's transfer list.
export function transferables(value, out = new Set()) {
  if (isBytes(value)) {
    const buffer = value instanceof ArrayBuffer ? value : value.buffer;
    if (typeof SharedArrayBuffer === "undefined" || !(buffer instanceof SharedArrayBuffer)) out.add(buffer);
  } else if (value && typeof value === "object") {
    for (const v of Object.values(value)) transferables(v, out);
  }
  return [...out];
}
