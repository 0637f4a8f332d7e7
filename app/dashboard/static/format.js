// Numbers and times as people read them. Every formatter shows "—" for a missing value.

const DASH = "—";
const missing = (v) => v === null || v === undefined || Number.isNaN(v);

export const percent = (v) => (missing(v) ? DASH : `${(v * 100).toFixed(2)}%`);
export const integer = (v) => (missing(v) ? DASH : Math.round(v).toLocaleString("en-US"));
export const ratio = (v) => (missing(v) ? DASH : `${v.toFixed(1)}×`);
export const fixed = (digits) => (v) => (missing(v) ? DASH : v.toFixed(digits));

export function number(v) {
  if (missing(v)) return DASH;
  if (Number.isInteger(v)) return integer(v);
  return Math.abs(v) >= 1000 || Math.abs(v) < 0.001 ? v.toExponential(3) : v.toPrecision(4);
}

export function milliseconds(v) {
  if (missing(v)) return DASH;
  return v < 1 ? `${v.toFixed(3)} ms` : `${v.toFixed(2)} ms`;
}

export function bytes(v) {
  if (missing(v)) return DASH;
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (v >= 1024 && unit < units.length - 1) {
    v /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${v.toLocaleString("en-US")} bytes` : `${v.toFixed(1)} ${units[unit]}`;
}

export function duration(seconds) {
  if (missing(seconds)) return DASH;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes % 60} min`;
}

export function time(iso) {
  if (!iso) return DASH;
  return new Date(iso).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "medium",
  });
}

/** "12 s ago", from the browser's clock. */
export function ago(iso) {
  if (!iso) return DASH;
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

/** "Student epoch 3/10 · step 120/400 · 30.0% · about 12 s left" */
export function progressText(progress) {
  if (!progress) return "Not started.";
  const phase = progress.phase === "baseline" ? "Baseline (labels only)" : "Student";
  const run = progress.runs ? ` · sweep run ${progress.run + 1}/${progress.runs}` : "";
  const eta = missing(progress.eta_seconds) ? "" : ` · about ${duration(progress.eta_seconds)} left`;
  return (
    `${phase} epoch ${progress.epoch}/${progress.epochs}${run} · ` +
    `step ${progress.step}/${progress.total_steps} · ${(progress.fraction * 100).toFixed(1)}%${eta}`
  );
}
