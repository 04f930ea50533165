// A .zip archive of files kept as they are (the "stored" method): how the page hands a set of
// files (a PEFT adapter, a split dataset) to the user as one download. No compression: the
// files are small next to a model, and the archive opens everywhere.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// files: {name: Uint8Array} -> a Blob of the archive, its entries dated `when` (local time,
// as zip tools show it).
export function zip(files, when = new Date()) {
  const encoder = new TextEncoder();
  // MS-DOS time and date: 2-second steps, years from 1980
  const time = (when.getHours() << 11) | (when.getMinutes() << 5) | (when.getSeconds() >> 1);
  const date = ((Math.max(when.getFullYear(), 1980) - 1980) << 9) | ((when.getMonth() + 1) << 5) | when.getDate();
  const local = [];
  const central = [];
  let offset = 0;
  for (const [name, data] of Object.entries(files)) {
    const path = encoder.encode(name);
    const crc = crc32(data);
    const header = new DataView(new ArrayBuffer(30));
    header.setUint32(0, 0x04034b50, true); // local file header
    header.setUint16(4, 20, true); // version needed
    header.setUint16(6, 0x0800, true); // UTF-8 names
    header.setUint16(10, time, true);
    header.setUint16(12, date, true);
    header.setUint32(14, crc, true);
    header.setUint32(18, data.length, true);
    header.setUint32(22, data.length, true);
    header.setUint16(26, path.length, true);
    local.push(new Uint8Array(header.buffer), path, data);
    const entry = new DataView(new ArrayBuffer(46));
    entry.setUint32(0, 0x02014b50, true); // central directory header
    entry.setUint16(4, 20, true);
    entry.setUint16(6, 20, true);
    entry.setUint16(8, 0x0800, true);
    entry.setUint16(12, time, true);
    entry.setUint16(14, date, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, data.length, true);
    entry.setUint32(24, data.length, true);
    entry.setUint16(28, path.length, true);
    entry.setUint32(42, offset, true);
    central.push(new Uint8Array(entry.buffer), path);
    offset += 30 + path.length + data.length;
  }
  const size = central.reduce((n, part) => n + part.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); // end of central directory
  end.setUint16(8, central.length / 2, true);
  end.setUint16(10, central.length / 2, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...local, ...central, new Uint8Array(end.buffer)], { type: "application/zip" });
}

// A .zip archive's files {name: Uint8Array}, read as Python's zipfile reads them (the reference
// reader, tests/test_extension_js.py holds them together): the end record found as it finds it
// (last in the file, else after a comment), the central directory walked by its size (not its
// entry count), offsets moved by whatever precedes the archive, ZIP64 sizes and offsets, names
// in UTF-8 or (without the UTF-8 flag) code page 437 and cut at a NUL, each local header's name
// checked against the directory's, and each file's CRC-32 over the bytes its size gives.
// Entries stored or deflated (what zip() and the usual tools write); folders are skipped, and
// a later entry of the same name wins. A damaged, encrypted or unsupported archive throws an
// Error naming what is wrong.
export async function unzip(bytes) {
  bytes = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (at) => view.getUint16(at, true);
  const u32 = (at) => view.getUint32(at, true);
  const u64 = (at) => Number(view.getBigUint64(at, true));
  const end = endRecord(bytes, u16, u32);
  if (!end) throw new Error("not a zip archive (no end of central directory)");
  let { size, offset } = end;
  let concat = end.at - size - offset;       // bytes before the archive (a self-extractor's stub)
  const zip64 = end.at >= 20 && u32(end.at - 20) === ZIP64_LOCATOR;
  if (zip64 && (u32(end.at - 16) !== 0 || u32(end.at - 4) > 1)) throw new Error("zip: archives that span several disks are not read");
  if (zip64 && end.at >= 76 && u32(end.at - 76) === ZIP64_END) {
    size = u64(end.at - 76 + 40);
    offset = u64(end.at - 76 + 48);
    concat = end.at - size - offset - 76;
  }
  const start = offset + concat;
  if (start < 0) throw new Error("zip: the central directory's offset is damaged");
  const directory = bytes.subarray(start, start + size);
  const entries = [];
  for (let at = 0; at < size;) {
    if (at + 46 > directory.length) throw new Error("zip: the central directory is cut short");
    const entry = new DataView(directory.buffer, directory.byteOffset + at, 46);
    if (entry.getUint32(0, true) !== CENTRAL) throw new Error(`zip: central directory entry ${entries.length + 1} is damaged`);
    const nameLength = entry.getUint16(28, true);
    const extraLength = entry.getUint16(30, true);
    const info = {
      flags: entry.getUint16(8, true), method: entry.getUint16(10, true), crc: entry.getUint32(16, true),
      packed: entry.getUint32(20, true), size: entry.getUint32(24, true), local: entry.getUint32(42, true),
      rawName: decodeName(directory.subarray(at + 46, at + 46 + nameLength), entry.getUint16(8, true)),
    };
    // The version's low byte; its high byte names a system (as Python's zipfile and Info-ZIP read it).
    if (entry.getUint8(6) > MAX_EXTRACT_VERSION) throw new Error(`zip: ${info.rawName} needs zip version ${entry.getUint8(6) / 10}`);
    readExtra(directory.subarray(at + 46 + nameLength, at + 46 + nameLength + extraLength), info);
    info.local += concat;
    info.name = info.rawName.split("\0")[0];
    entries.push(info);
    at += 46 + nameLength + extraLength + entry.getUint16(32, true);
  }
  const files = {};
  for (const info of entries) {
    if (!info.name.endsWith("/")) files[info.name] = await readEntry(bytes, u16, u32, info);
  }
  return files;
}

const END = 0x06054b50, CENTRAL = 0x02014b50, LOCAL = 0x04034b50;
const ZIP64_LOCATOR = 0x07064b50, ZIP64_END = 0x06064b50;
const MAX_EXTRACT_VERSION = 63;
const UTF8_NAMES = 0x800, ENCRYPTED = 0x1, PATCHED = 0x20, STRONG_ENCRYPTION = 0x40;
const CP437_HIGH = "\u00c7\u00fc\u00e9\u00e2\u00e4\u00e0\u00e5\u00e7\u00ea\u00eb\u00e8\u00ef\u00ee\u00ec\u00c4\u00c5\u00c9\u00e6\u00c6\u00f4\u00f6\u00f2\u00fb\u00f9\u00ff\u00d6\u00dc\u00a2\u00a3\u00a5\u20a7\u0192\u00e1\u00ed\u00f3\u00fa\u00f1\u00d1\u00aa\u00ba\u00bf\u2310\u00ac\u00bd\u00bc\u00a1\u00ab\u00bb\u2591\u2592\u2593\u2502\u2524\u2561\u2562\u2556\u2555\u2563\u2551\u2557\u255d\u255c\u255b\u2510\u2514\u2534\u252c\u251c\u2500\u253c\u255e\u255f\u255a\u2554\u2569\u2566\u2560\u2550\u256c\u2567\u2568\u2564\u2565\u2559\u2558\u2552\u2553\u256b\u256a\u2518\u250c\u2588\u2584\u258c\u2590\u2580\u03b1\u00df\u0393\u03c0\u03a3\u03c3\u00b5\u03c4\u03a6\u0398\u03a9\u03b4\u221e\u03c6\u03b5\u2229\u2261\u00b1\u2265\u2264\u2320\u2321\u00f7\u2248\u00b0\u2219\u00b7\u221a\u207f\u00b2\u25a0\u00a0";

// {at, size, offset} of the end of central directory record, or null: the last 22 bytes where
// they are one with no comment, else the last signature in the final 64 KiB + 22 bytes
// (which must have a whole record after it).
function endRecord(bytes, u16, u32) {
  const n = bytes.length;
  if (n < 22) return null;
  let at = -1;
  if (u32(n - 22) === END && u16(n - 2) === 0) at = n - 22;
  else {
    for (let i = n - 4; i >= Math.max(0, n - 65536 - 22); i--) {
      if (u32(i) === END) { at = i; break; }
    }
    if (at < 0 || at + 22 > n) return null;
  }
  return { at, size: u32(at + 12), offset: u32(at + 16) };
}

function decodeName(raw, flags) {
  if (!(flags & UTF8_NAMES)) return Array.from(raw, (b) => (b < 128 ? String.fromCharCode(b) : CP437_HIGH[b - 128])).join("");
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    throw new Error("zip: a file name is not valid UTF-8");
  }
}

// The extra fields of a directory entry: each must fit, and a ZIP64 field gives the sizes and
// offset that its 32-bit fields mark as 0xffffffff.
function readExtra(extra, info) {
  const view = new DataView(extra.buffer, extra.byteOffset, extra.byteLength);
  for (let at = 0; at + 4 <= extra.length;) {
    const type = view.getUint16(at, true);
    const length = view.getUint16(at + 2, true);
    if (at + 4 + length > extra.length) throw new Error(`zip: ${info.rawName}: extra field ${type.toString(16).padStart(4, "0")} is damaged`);
    if (type === 1) {
      let field = at + 4;
      for (const key of ["size", "packed", "local"]) {
        if (info[key] !== 0xffffffff) continue;
        if (field + 8 > at + 4 + length) throw new Error(`zip: ${info.rawName}: its ZIP64 field is damaged`);
        info[key] = Number(view.getBigUint64(field, true));
        field += 8;
      }
    }
    at += 4 + length;
  }
}

async function readEntry(bytes, u16, u32, info) {
  const { name, local } = info;
  if (local < 0 || local + 30 > bytes.length) throw new Error(`zip: ${name}: its local header is cut short or misplaced`);
  if (u32(local) !== LOCAL) throw new Error(`zip: ${name}: local header is damaged`);
  const nameLength = u16(local + 26);
  const begin = local + 30 + nameLength + u16(local + 28);
  if (info.flags & (PATCHED | STRONG_ENCRYPTION)) throw new Error(`zip: ${name} uses patched data or strong encryption`);
  if (decodeName(bytes.subarray(local + 30, local + 30 + nameLength), u16(local + 6)) !== info.rawName) {
    throw new Error(`zip: ${name}: the names in its local header and the directory differ`);
  }
  if (info.flags & ENCRYPTED) throw new Error(`zip: ${name} is encrypted`);
  const raw = bytes.subarray(begin, begin + info.packed);
  let data;
  if (info.method === 0) {
    const wanted = Math.min(info.packed, info.size);
    if (raw.length < wanted) throw new Error(`zip: ${name} is cut short`);
    data = raw.slice(0, wanted);
  } else if (info.method === 8) {
    data = (await inflated(raw)).subarray(0, info.size);
  } else {
    throw new Error(`zip: ${name} uses compression method ${info.method} (only stored and deflated are read)`);
  }
  if (crc32(data) !== info.crc) throw new Error(`zip: ${name} is damaged (its CRC-32 differs)`);
  return data;
}

// What a raw deflate stream gives before it ends or fails: bytes after its end, which zlib
// leaves unread, fail the browser's stream, and a damaged stream gives what came before the
// damage; either way the CRC-32 of the entry's bytes decides.
async function inflated(raw) {
  const reader = new Blob([raw]).stream().pipeThrough(new DecompressionStream("deflate-raw")).getReader();
  const chunks = [];
  try {
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value);
  } catch {
    // what came out before is kept
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
