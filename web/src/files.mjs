// Files the user hands the page: picked (<input type=file>, with webkitdirectory for a folder)
// or dropped (files and folders), as [{path, file}] with paths relative to what was given;
// read into {path: Uint8Array} for the engine; and files handed back as downloads.

// [{path, file}] of an <input type=file>: a folder's files keep their path inside the folder.
export function pickedFiles(input) {
  return [...input.files].map((file) => ({ path: file.webkitRelativePath || file.name, file }));
}

// [{path, file}] of a drop: folders are walked (every file under them, in name order).
export async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items]
    .filter((item) => item.kind === "file")
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (entries.some((e) => e === null)) {
    return [...dataTransfer.files].map((file) => ({ path: file.name, file }));
  }
  const out = [];
  for (const entry of entries) await walk(entry, "", out);
  return out;
}

async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ path: prefix + entry.name, file });
    return;
  }
  const reader = entry.createReader();
  const children = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    children.push(...batch);
  }
  children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const child of children) await walk(child, `${prefix}${entry.name}/`, out);
}

// Paths without the one folder every file is in (a picked or dropped checkpoint folder).
export function withoutCommonFolder(items) {
  const folder = commonFolder(items);
  return folder === null ? items : items.map((i) => ({ ...i, path: i.path.slice(folder.length + 1) }));
}

// The one folder every file is in (the name of a picked checkpoint folder), or null.
export function commonFolder(items) {
  const tops = new Set(items.map((i) => (i.path.includes("/") ? i.path.split("/")[0] : "")));
  return tops.size === 1 && !tops.has("") ? [...tops][0] : null;
}

export async function readFiles(items) {
  const out = {};
  for (const { path, file } of items) out[path] = new Uint8Array(await file.arrayBuffer());
  return out;
}

export function download(data, name, type = "application/octet-stream") {
  const blob = data instanceof Blob ? data : new Blob([data], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MB`;
  return `${(n / (1 << 30)).toFixed(2)} GB`;
}
