// A succeeded job's final measurements: teacher, student and (when asked for) the labels-only
// baseline side by side. Each value cell carries the API's raw number in data-value.
import { h } from "./dom.js";
import { bytes, duration, fixed, integer, milliseconds, number, percent, ratio } from "./format.js";

// [measure, teacher's key, student's key, baseline's key, format]
const ROWS = [
  ["accuracy (validation)", "teacher_accuracy", "student_accuracy", "baseline_accuracy", percent],
  ["R² (validation)", "teacher_r2", "student_r2", "baseline_r2", fixed(4)],
  ["MSE (validation)", "teacher_mse", "student_mse", "baseline_mse", number],
  ["parameters", "teacher_params", "student_params", null, integer],
  ["size", "teacher_file_bytes", "student_size_bytes", null, bytes],
  ["latency (batch of 1)", "teacher_latency_ms", "student_latency_ms", null, milliseconds],
  ["speedup", null, "speedup", null, ratio],
  ["compression (parameters)", null, "compression_ratio", null, ratio],
  ["top-1 agreement with the teacher", null, "agreement", null, percent],
  ["KL(teacher ‖ student), T=1", null, "kl_divergence", null, fixed(4)],
  ["MSE to the teacher", null, "agreement_mse", null, number],
  ["training time", null, "train_seconds", "baseline_train_seconds", duration],
  ["best epoch (early stopping)", null, "best_epoch", "baseline_best_epoch", integer],
];

/** ``metrics`` is the job's; ``teacherBytes`` the teacher upload's size, if known. */
export function resultsTable(metrics, teacherBytes) {
  const values = { ...metrics, teacher_file_bytes: teacherBytes };
  const hasBaseline = Object.keys(metrics).some((k) => k.startsWith("baseline_"));
  const present = (key) => key && values[key] !== null && values[key] !== undefined;
  const rows = ROWS.filter(([, ...keys]) => keys.slice(0, 3).some(present));
  const cell = (key, format) =>
    present(key)
      ? h("td", { class: "num", dataset: { metric: key, value: values[key] } }, format(values[key]))
      : h("td", { class: "num muted" }, "—");
  return h(
    "table",
    { class: "results", id: "results" },
    h(
      "caption",
      {},
      "Measured on the validation data. Latency is for a batch of one on the worker's device",
      metrics.device ? ` (${metrics.device})` : "",
      "; the teacher's size is its uploaded file, the student's its student.safetensors.",
    ),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "measure"),
        h("th", { class: "num" }, "teacher"),
        h("th", { class: "num" }, "student"),
        hasBaseline ? h("th", { class: "num" }, "baseline (same student, labels only)") : null,
      ),
    ),
    h(
      "tbody",
      {},
      rows.map(([label, teacher, student, baseline, format]) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, label),
          cell(teacher, format),
          cell(student, format),
          hasBaseline ? cell(baseline, format) : null,
        ),
      ),
    ),
  );
}
