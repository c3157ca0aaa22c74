// Hand-written SVG charts: a line chart, stacked bars (gains up, losses down) and a legend.
// Small on purpose: no library to vendor, and every mark is a DOM node the keyboard, screen
// readers and the browser tests can reach. Colours come from CSS classes (style.css).
const NS = "http://www.w3.org/2000/svg";
const W = 800;
const H = 260;
const PAD = { top: 14, right: 12, bottom: 34, left: 78 };

export function svg(tag, attrs = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function text(x, y, content, attrs = {}) {
  const node = svg("text", { x, y, ...attrs });
  node.textContent = content;
  return node;
}

// Round steps (1, 2, 5 × 10^n) covering [lo, hi], 0 always inside.
// Integer data (minor units, counts) gets integer steps: no "$0.005" gridlines.
function ticks(lo, hi, integers, count = 5) {
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  if (lo === hi) hi = lo + (integers ? count : 1);
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  if (integers) step = Math.max(1, Math.round(step));
  const out = [Math.floor(lo / step) * step];
  while (out[out.length - 1] < hi) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
  return out;
}

function frame(labels, values, format, title) {
  const all = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const marks = ticks(Math.min(0, ...all), Math.max(0, ...all), all.every(Number.isInteger));
  const lo = marks[0];
  const hi = marks[marks.length - 1];
  const y = (v) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - (v - lo) / (hi - lo));
  const band = (W - PAD.left - PAD.right) / Math.max(1, labels.length);
  const x = (i) => PAD.left + band * i + band / 2;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": title });
  root.append(svg("title", {}, [title]));
  for (const v of marks) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v),
      class: v === 0 ? "axis zero" : "axis" }));
    root.append(text(PAD.left - 6, y(v) + 4, format(v), { class: "tick", "text-anchor": "end" }));
  }
  // At most ~12 labels on the x axis: every k-th one.
  const every = Math.ceil(labels.length / 12);
  labels.forEach((label, i) => {
    if (i % every === 0) {
      root.append(text(x(i), H - PAD.bottom + 16, label, { class: "tick", "text-anchor": "middle" }));
    }
  });
  return { root, x, y, band };
}

function drawThresholds(chart, thresholds) {
  for (const t of thresholds ?? []) {
    const at = chart.y(t.value);
    chart.root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: at, y2: at,
      class: `threshold ${t.cls ?? ""}`, "data-threshold": t.value }));
    chart.root.append(text(W - PAD.right - 4, at - 4, t.label,
      { class: `threshold-label ${t.cls ?? ""}`, "text-anchor": "end" }));
  }
}

// series: [{name, cls, values: [number|null]}], one value per label.
// step: the value holds until the next point (MRR between ledger days), drawn flat then
// vertical instead of a slope no customer ever paid.
export function lineChart({ title, labels, series, format, thresholds, step = false }) {
  const values = series.flatMap((s) => s.values).concat((thresholds ?? []).map((t) => t.value));
  const chart = frame(labels, values, format, title);
  drawThresholds(chart, thresholds);
  for (const s of series) {
    let path = "";
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const joined = path && s.values[i - 1] !== null && s.values[i - 1] !== undefined;
      if (joined && step) path += `H${chart.x(i)}V${chart.y(v)}`;
      else path += `${joined ? "L" : "M"}${chart.x(i)},${chart.y(v)}`;
    });
    chart.root.append(svg("path", { d: path, class: `line ${s.cls}` }));
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const dot = svg("circle", { cx: chart.x(i), cy: chart.y(v), r: 3.5, class: `dot ${s.cls}` });
      dot.append(svg("title", {}, [`${s.name} ${labels[i]}: ${format(v)}`]));
      chart.root.append(dot);
    });
  }
  return chart.root;
}

// bars: [{label, segments: [{name, cls, value}], onSelect?, describe?}]. Positive segments
// stack up from 0, negative ones down from it. A bar with onSelect is a button: click,
// Enter or Space.
export function barChart({ title, bars, format, thresholds, cls = "" }) {
  const totals = bars.flatMap((b) => {
    const up = b.segments.filter((s) => s.value > 0).reduce((a, s) => a + s.value, 0);
    const down = b.segments.filter((s) => s.value < 0).reduce((a, s) => a + s.value, 0);
    return [up, down];
  }).concat((thresholds ?? []).map((t) => t.value));
  const chart = frame(bars.map((b) => b.label), totals, format, title);
  chart.root.classList.add(...cls.split(" ").filter(Boolean));
  const width = Math.max(2, Math.min(48, chart.band * 0.7));
  bars.forEach((bar, i) => {
    const group = svg("g", { class: "bar", "data-label": bar.label });
    let up = 0;
    let down = 0;
    for (const seg of bar.segments) {
      if (!seg.value) continue;
      const from = seg.value > 0 ? up : down;
      const to = from + seg.value;
      if (seg.value > 0) up = to; else down = to;
      const rect = svg("rect", {
        x: chart.x(i) - width / 2, width,
        y: Math.min(chart.y(from), chart.y(to)),
        height: Math.max(1, Math.abs(chart.y(from) - chart.y(to))),
        class: `seg ${seg.cls}`, "data-series": seg.name, "data-value": seg.value,
      });
      rect.append(svg("title", {}, [`${seg.name} ${bar.label}: ${format(seg.value)}`]));
      group.append(rect);
    }
    if (bar.onSelect) {
      const label = bar.describe ?? `${bar.label}: show the customers behind it`;
      group.setAttribute("tabindex", "0");
      group.setAttribute("role", "button");
      group.setAttribute("aria-label", label);
      group.classList.add("selectable");
      // A hit area as tall as the chart: thin bars stay easy to click and to tap.
      group.prepend(svg("rect", { x: chart.x(i) - chart.band / 2, width: chart.band,
        y: PAD.top, height: H - PAD.top - PAD.bottom, class: "hit" }));
      group.addEventListener("click", bar.onSelect);
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          bar.onSelect();
        }
      });
    }
    chart.root.append(group);
  });
  drawThresholds(chart, thresholds);
  return chart.root;
}

export function legend(items) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const item of items) {
    const entry = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${item.cls}`;
    entry.append(swatch, item.name);
    list.append(entry);
  }
  return list;
}
