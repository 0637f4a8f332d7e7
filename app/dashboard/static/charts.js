// Training curves with uPlot (vendor/uPlot.iife.min.js, the global ``uPlot``): x is the job's
// step, one line per measure the metric points carry. A measure named baseline_<key> is the
// labels-only baseline's <key>: drawn dashed, in <key>'s colour.
import { fill, h } from "./dom.js";

const COLOURS = ["#2f5d8a", "#d0743c", "#5b9a5b", "#8c5ba6", "#b0413e"];
const HEIGHT = 240;

export const LOSSES = {
  title: "loss",
  keys: { train_loss: "train loss", kd_loss: "distillation loss", ce_loss: "label loss" },
  value: (v) => v.toPrecision(4),
  // The first points' loss is often ten times the rest's: on a linear axis it flattens them.
  log: true,
};
export const ACCURACY = {
  title: "accuracy",
  keys: {
    val_accuracy: "validation accuracy",
    val_agreement: "agreement with the teacher",
    baseline_val_accuracy: "baseline accuracy (labels only)",
    baseline_val_agreement: "baseline agreement with the teacher",
  },
  value: (v) => `${(v * 100).toFixed(2)}%`,
  axis: (v) => `${(v * 100).toFixed(0)}%`,
  points: true, // one point per epoch: few enough to mark each
};
export const REGRESSION = {
  title: "MSE",
  keys: {
    val_mse: "validation MSE",
    val_agreement_mse: "MSE to the teacher",
    baseline_val_mse: "baseline MSE (labels only)",
    baseline_val_agreement_mse: "baseline MSE to the teacher",
  },
  value: (v) => v.toPrecision(4),
  points: true,
};

/** A chart of ``kind`` in ``el``, redrawn by ``update(points)`` with every point so far. */
export function curve(el, kind) {
  let chart = null;
  let shown = "";
  const empty = h("p", { class: "muted chart-empty" }, "No points yet.");
  fill(el, empty);
  const observer = new ResizeObserver(() => chart && chart.setSize(size(el)));
  observer.observe(el);

  function update(points) {
    const keys = Object.keys(kind.keys).filter((k) => points.some((p) => p[k] != null));
    const rows = points.filter((p) => keys.some((k) => p[k] != null));
    if (!rows.length) return;
    const data = [rows.map((p) => p.step), ...keys.map((k) => rows.map((p) => p[k] ?? null))];
    // A log axis cannot show 0 or less: then (and only then) a linear one.
    const log = Boolean(kind.log) && data.slice(1).every((s) => s.every((v) => v == null || v > 0));
    const layout = `${keys.join()}|${log}`;
    if (chart && layout === shown) {
      chart.setData(data);
      return;
    }
    if (chart) chart.destroy(); // a measure appeared, or the axis changed: a new chart
    shown = layout;
    fill(el);
    chart = new uPlot(options(el, kind, keys, log), data, el);
    api.chart = chart;
  }

  const api = {
    chart: null,
    update,
    length: () => (chart ? chart.data[0].length : 0),
    destroy() {
      observer.disconnect();
      if (chart) chart.destroy();
    },
  };
  return api;
}

function size(el) {
  return { width: Math.max(200, el.clientWidth), height: HEIGHT };
}

function options(el, kind, keys, log) {
  const format = (u, v) => (v == null ? "—" : kind.value(v));
  const names = Object.keys(kind.keys);
  const colour = (key) => COLOURS[names.indexOf(key.replace(/^baseline_/, "")) % COLOURS.length];
  return {
    ...size(el),
    scales: { x: { time: false }, y: log ? { distr: 3, log: 10 } : {} },
    cursor: { drag: { x: true, y: false } },
    axes: [
      { label: "step" },
      {
        label: log ? `${kind.title} (log scale)` : kind.title,
        size: 60,
        values: kind.axis && ((u, vals) => vals.map(kind.axis)),
      },
    ],
    series: [
      { label: "step" },
      ...keys.map((key) => ({
        label: kind.keys[key],
        stroke: colour(key),
        dash: key.startsWith("baseline_") ? [6, 4] : undefined,
        width: 2,
        value: format,
        spanGaps: true,
        points: { show: kind.points || undefined, size: 6 },
      })),
    ],
  };
}
