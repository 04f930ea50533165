// The loss curve: a line chart drawn on a <canvas>, no chart library (the page loads nothing
// from the network). Steps on x, loss on y; the raw losses faint, a smoothed line over them,
// snapshots as dots and rollbacks as dashed lines from the step they happened at. Drawing a few
// hundred points takes well under a millisecond: it never makes a long task.

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function ticks(lo, hi, count) {
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function smooth(values, weight = 0.6) {
  let last = values[0];
  return values.map((v) => (last = weight * last + (1 - weight) * v));
}

function colors(canvas) {
  const style = getComputedStyle(canvas);
  const get = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    line: get("--chart-line", "#2563eb"), raw: get("--chart-raw", "#93b4f5"), grid: get("--chart-grid", "#e3e6ec"),
    text: get("--chart-text", "#5b6475"), rollback: get("--chart-rollback", "#c2410c"), snapshot: get("--chart-snapshot", "#15803d"),
  };
}

// history: [{step, loss}]; snapshots: [{step}]; rollbacks: [{step, to_step}].
export function drawLossChart(canvas, { history = [], snapshots = [], rollbacks = [] } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const c = colors(canvas);
  ctx.font = "12px system-ui, sans-serif";
  const points = history.filter((h) => Number.isFinite(h.loss));
  if (!points.length) {
    ctx.fillStyle = c.text;
    ctx.textAlign = "center";
    ctx.fillText("No training steps yet", width / 2, height / 2);
    return;
  }
  const pad = { left: 44, right: 12, top: 10, bottom: 24 };
  const steps = points.map((p) => p.step);
  const losses = points.map((p) => p.loss);
  let x0 = Math.min(...steps, ...rollbacks.map((r) => r.to_step ?? r.step));
  let x1 = Math.max(...steps);
  if (x1 - x0 < 4) x1 = x0 + 4;
  let y0 = Math.min(...losses);
  let y1 = Math.max(...losses);
  const margin = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 0.1;
  y0 = Math.max(0, y0 - margin);
  y1 += margin;
  const X = (s) => pad.left + ((s - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (v) => pad.top + (1 - (v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);

  ctx.strokeStyle = c.grid;
  ctx.fillStyle = c.text;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of ticks(y0, y1, 4)) {
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(Y(v)) + 0.5);
    ctx.lineTo(width - pad.right, Math.round(Y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(v.toPrecision(3).replace(/\.?0+$/, ""), pad.left - 6, Y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const s of ticks(x0, x1, Math.max(2, Math.floor(width / 80)))) {
    if (Number.isInteger(s)) ctx.fillText(String(s), X(s), height - pad.bottom + 6);
  }

  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = c.rollback;
  for (const r of rollbacks) {
    ctx.beginPath();
    ctx.moveTo(X(r.step), pad.top);
    ctx.lineTo(X(r.step), height - pad.bottom);
    ctx.stroke();
  }
  ctx.setLineDash([]);

  const line = (values, color, widthPx) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = widthPx;
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(X(steps[i]), Y(v)) : ctx.moveTo(X(steps[i]), Y(v))));
    ctx.stroke();
  };
  line(losses, c.raw, 1);
  line(smooth(losses), c.line, 2);
  if (points.length === 1) {
    ctx.fillStyle = c.line;
    ctx.beginPath();
    ctx.arc(X(steps[0]), Y(losses[0]), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.fillStyle = c.snapshot;
  for (const s of snapshots) {
    const at = points.find((p) => p.step === s.step);
    if (!at) continue;
    ctx.beginPath();
    ctx.arc(X(s.step), Y(at.loss), 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}
