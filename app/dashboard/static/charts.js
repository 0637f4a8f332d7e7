// Training curves with uPlot (vendor/uPlot.iife.min.js, the global ``uPlot``): x is the job's
// step, one line per measure the metric points carry.
import { fill, h } from "./dom.js";

const COLOURS = ["#2f5d8a", "#d0743c", "#5b9a5b", "#8c5ba6", "#b0413e"];
const HEIGHT = 240;

export const LOSSES = {
  title: "loss",
  keys: { train_loss: "train loss", kd_loss: "distillation loss", ce_loss: "label loss" },
  value: (v) => v.toPrecision(4),
};
export const ACCURACY = {
  title: "accuracy",
  keys: { val_accuracy: "validation accuracy", val_agreement: "agreement with the teacher" },
  value: (v) => `${(v * 100).toFixed(2)}%`,
  axis: (v) => `${(v * 100).toFixed(0)}%`,
  points: true, // one point per epoch: few enough to mark each
};
export const REGRESSION = {
  title: "MSE",
  keys: { val_mse: "validation MSE", val_agreement_mse: "MSE to the teacher" },
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
    if (chart && keys.join() === shown) {
      chart.setData(data);
      return;
    }
    if (chart) chart.destroy(); // a measure appeared: a new set of lines
    shown = keys.join();
    fill(el);
    chart = new uPlot(options(el, kind, keys), data, el);
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

function options(el, kind, keys) {
  const format = (u, v) => (v == null ? "—" : kind.value(v));
  return {
    ...size(el),
    scales: { x: { time: false } },
    cursor: { drag: { x: true, y: false } },
    axes: [
      { label: "step" },
      { label: kind.title, size: 60, values: kind.axis && ((u, vals) => vals.map(kind.axis)) },
    ],
    series: [
      { label: "step" },
      ...keys.map((key, i) => ({
        label: kind.keys[key],
        stroke: COLOURS[i % COLOURS.length],
        width: 2,
        value: format,
        spanGaps: true,
        points: { show: kind.points || undefined, size: 6 },
      })),
    ],
  };
}
