// Values crossing chrome.runtime messaging, which carries JSON only: byte buffers become
// {"$b64": base64 text} on the way out and Uint8Arrays again on the way in. Used by the
// offscreen document (the engine's answers: adapters to export) and by whoever sends it
// files (an adapter to import).

const B64 = "$b64";

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function unbase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

export function toWire(value) {
  if (value instanceof ArrayBuffer) return { [B64]: base64(new Uint8Array(value)) };
  if (ArrayBuffer.isView(value)) return { [B64]: base64(new Uint8Array(value.buffer, value.byteOffset, value.byteLength)) };
  if (Array.isArray(value)) return value.map(toWire);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toWire(v);
    return out;
  }
  return value;
}

export function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === B64) return unbase64(value[B64]);
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = fromWire(v);
    return out;
  }
  return value;
}
