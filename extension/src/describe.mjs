// A value as an error message shows it: a number as itself (JSON writes Infinity and NaN as
// null), anything else as JSON where it has one (a BigInt, a function or undefined has none),
// cut short. The one way the extension's checks name what they were given.
export function describe(value) {
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  let text;
  try { text = JSON.stringify(value); } catch { text = undefined; }
  return (text ?? String(value)).slice(0, 80);
}
