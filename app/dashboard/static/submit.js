// A new job from this page (#/new): upload the teacher and the data (POST /v1/files, multipart),
// submit the spec (POST /v1/jobs), then open the job's page. The API checks everything; the form
// shows its error body (message and param) beside the field the param names.
import { ApiError, post, upload } from "./api.js";
import { fill, h } from "./dom.js";
import { bytes } from "./format.js";

const ARCHS = {
  mlp: "mlp: a multilayer perceptron",
  cnn: "cnn: a convolutional net, for images or signals",
  transformer: "transformer: a small encoder",
};
const WITH_HIDDEN_SIZES = ["mlp", "cnn"];
// [field, label, step of the number input]
const HYPERPARAMETERS = [
  ["epochs", "Epochs", "1"],
  ["batch_size", "Batch size", "1"],
  ["learning_rate", "Learning rate", "any"],
  ["temperature", "Temperature", "any"],
  ["alpha", "Alpha (weight of the teacher)", "any"],
];

export function submitView(el) {
  const controller = new AbortController();
  const signal = controller.signal;
  // Files uploaded by this form, so a spec fixed after an error does not upload them again.
  const uploaded = new Map();

  const files = {
    teacher: fileInput("teacher", "teacher"),
    train: fileInput("train", "dataset"),
    validation: fileInput("validation", "dataset"),
  };
  const name = h("input", { type: "text", id: "job-name", maxlength: 200, autocomplete: "off" });
  const task = h(
    "select",
    { id: "task" },
    h("option", { value: "classification" }, "classification: the teacher gives class logits"),
    h("option", { value: "regression" }, "regression: the teacher gives real outputs"),
  );
  const arch = h(
    "select",
    { id: "student-arch" },
    Object.entries(ARCHS).map(([value, label]) => h("option", { value }, label)),
  );
  const hiddenSizes = h("input", {
    type: "text",
    id: "hidden-sizes",
    placeholder: "e.g. 256, 128",
    autocomplete: "off",
  });
  const numbers = Object.fromEntries(
    HYPERPARAMETERS.map(([key, , step]) => [
      key,
      h("input", { type: "number", id: `hp-${key}`, step, min: 0, placeholder: "default" }),
    ]),
  );
  const baseline = h("input", { type: "checkbox", id: "baseline" });
  const more = h("textarea", {
    id: "more-spec",
    rows: 4,
    spellcheck: "false",
    placeholder: '{"hyperparameters": {"lr_schedule": "cosine"}, "teacher": {"arch": …}}',
  });
  const status = h("p", { class: "muted", id: "submit-status", role: "status" });
  const error = h("p", { class: "error banner", id: "submit-error", role: "alert" });
  error.hidden = true;
  const button = h("button", { type: "submit" }, "Upload and submit");

  const fields = [
    field("name", "Name (optional)", name),
    field(
      "teacher.file_id",
      "Teacher",
      files.teacher.input,
      "TorchScript, torch.export (.pt2), a zipped Hugging Face model, or a state_dict or " +
        "safetensors file (then give teacher.arch under More of the spec).",
    ),
    field(
      "data.train_file_id",
      "Training data",
      files.train.input,
      "npz or safetensors (x, and y for labels), csv (a label column) or jsonl (text).",
    ),
    field(
      "data.validation_file_id",
      "Validation data (optional)",
      files.validation.input,
      "Without it, a share of the training data (validation_split) is held out.",
    ),
    field("task", "Task", task),
    field("student.arch", "Student", arch),
    field(
      "student.hidden_sizes",
      "Hidden layer sizes",
      hiddenSizes,
      "The widths of the student's hidden layers, comma-separated; empty for the default.",
    ),
    ...HYPERPARAMETERS.map(([key, label]) => field(`hyperparameters.${key}`, label, numbers[key])),
    field(
      "baseline",
      "Baseline",
      h("label", { class: "check" }, baseline, " Also train the student on the labels alone"),
    ),
    field(
      "more",
      "More of the spec (JSON, optional)",
      more,
      "Merged over the fields above: any field of POST /v1/jobs (docs/api.md).",
    ),
  ];
  const form = h(
    "form",
    { class: "submit", id: "submit-form", novalidate: true },
    fields.map((f) => f.el),
    error,
    h("div", { class: "actions-left" }, button, status),
  );
  const showArchFields = () => {
    fields.find((f) => f.param === "student.hidden_sizes").el.hidden =
      !WITH_HIDDEN_SIZES.includes(arch.value);
  };
  arch.addEventListener("change", showArchFields);
  showArchFields();

  fill(
    el,
    h("div", { class: "title" }, h("h1", {}, "New job")),
    h(
      "p",
      { class: "muted" },
      "Uploads the files to this server, then submits the job. Empty fields take the API's ",
      "defaults.",
    ),
    h("section", {}, form),
  );
  showDefaults(numbers, signal);

  function showError(problem) {
    for (const f of fields) f.mark(false);
    if (!problem) {
      error.hidden = true;
      return;
    }
    const param = problem.param || null;
    const target = param ? fieldFor(fields, param) : null;
    if (target) target.mark(true);
    // The API's messages about a field mostly begin with its param already.
    const named = !param || problem.message.includes(param);
    const where = named ? "" : [" (", h("code", {}, param), ")"];
    fill(error, problem.prefix || "", problem.message, where);
    error.dataset.code = problem.code || "";
    error.dataset.param = param || "";
    error.hidden = false;
  }

  async function uploadOnce({ input, purpose, label }) {
    const file = input.files[0];
    const key = [purpose, file.name, file.size, file.lastModified].join("\u0000");
    if (!uploaded.has(key)) {
      fill(status, `Uploading the ${label}, ${file.name} (${bytes(file.size)})…`);
      try {
        uploaded.set(key, (await upload(file, purpose, { signal })).id);
      } catch (problem) {
        problem.field = input;
        throw problem;
      }
    }
    return uploaded.get(key);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const local = checkLocally();
    if (local) {
      showError(local);
      return;
    }
    button.disabled = true;
    try {
      const teacher = await uploadOnce(files.teacher);
      const train = await uploadOnce(files.train);
      const withValidation = files.validation.input.files.length > 0;
      const validation = withValidation ? await uploadOnce(files.validation) : null;
      fill(status, "Submitting the job…");
      const spec = buildSpec({ teacher, train, validation });
      const job = await post("/v1/jobs", { json: spec, signal });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (problem) {
      if (signal.aborted) return;
      fill(status);
      if (!(problem instanceof ApiError)) {
        showError({ message: `Could not reach the server: ${problem}` });
      } else if (problem.field) {
        // An upload's own params ("file", "purpose") mean the file being uploaded.
        const f = fields.find((candidate) => candidate.control === problem.field);
        showError({ ...problem, message: problem.message, param: f.param, prefix: `${f.label}: ` });
      } else {
        showError(problem);
      }
    } finally {
      button.disabled = false;
    }
  });

  /** What the page can tell without the API: the files it needs, JSON that parses. */
  function checkLocally() {
    if (!files.teacher.input.files[0]) {
      return { message: "Choose the teacher's file.", param: "teacher.file_id" };
    }
    if (!files.train.input.files[0]) {
      return { message: "Choose the training data.", param: "data.train_file_id" };
    }
    for (const [key, input] of Object.entries(numbers)) {
      if (input.validity.badInput) {
        return { message: "This is not a number.", param: `hyperparameters.${key}` };
      }
    }
    try {
      parseMore();
    } catch (problem) {
      return { message: `Not valid JSON: ${problem.message}`, param: "more" };
    }
    return null;
  }

  function parseMore() {
    const text = more.value.trim();
    if (!text) return {};
    const value = JSON.parse(text);
    if (!isObject(value)) throw new Error("give an object, {…}");
    return value;
  }

  function buildSpec({ teacher, train, validation }) {
    const hyperparameters = {};
    for (const [key, input] of Object.entries(numbers)) {
      if (input.value !== "") hyperparameters[key] = Number(input.value);
    }
    const student = { arch: arch.value };
    const sizes = hiddenSizes.value.split(/[\s,]+/).filter(Boolean);
    // Anything but a number goes as null, for the API to name.
    if (WITH_HIDDEN_SIZES.includes(arch.value) && sizes.length) {
      student.hidden_sizes = sizes.map(Number);
    }
    const spec = {
      ...(name.value.trim() && { name: name.value.trim() }),
      task: task.value,
      teacher: { file_id: teacher },
      student,
      data: { train_file_id: train, ...(validation && { validation_file_id: validation }) },
      hyperparameters,
      baseline: baseline.checked,
    };
    return merged(spec, parseMore());
  }

  return () => controller.abort();
}

function fileInput(id, purpose) {
  const label = { teacher: "teacher", train: "training data", validation: "validation data" }[id];
  return { input: h("input", { type: "file", id: `file-${id}` }), purpose, label };
}

/** A labelled form field for ``param``, the spec's dotted path to what it sets. */
function field(param, label, control, hint) {
  const el = h(
    "div",
    { class: "field", dataset: { param } },
    h("label", { for: control.id || null }, label),
    control,
    hint ? h("small", { class: "muted" }, hint) : null,
  );
  return {
    el,
    param,
    label,
    control,
    mark(invalid) {
      el.classList.toggle("invalid", invalid);
      const input = control.matches("input, select, textarea")
        ? control
        : control.querySelector("input");
      if (invalid) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    },
  };
}

/** The field the API's ``param`` is about: the one that sets it or the closest part of it
 * ("student.hidden_sizes.0" -> the hidden sizes), else the first inside it ("data" -> the
 * training data), else "More of the spec", where anything else came from. */
function fieldFor(fields, param) {
  const setting = fields.filter((f) => param === f.param || param.startsWith(`${f.param}.`));
  if (setting.length) return setting.sort((a, b) => b.param.length - a.param.length)[0];
  return (
    fields.find((f) => f.param.startsWith(`${param}.`)) || fields.find((f) => f.param === "more")
  );
}

/** ``base`` with ``extra`` laid over it, object by object. */
function merged(base, extra) {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    out[key] = isObject(value) && isObject(out[key]) ? merged(out[key], value) : value;
  }
  return out;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** The API's defaults as the number fields' placeholders, from its OpenAPI schema. Without
 * it the placeholders say "default". */
async function showDefaults(numbers, signal) {
  try {
    const response = await fetch("/openapi.json", { signal });
    const schema = await response.json();
    const properties = schema.components.schemas.Hyperparameters.properties;
    for (const [key, input] of Object.entries(numbers)) {
      const value = properties[key] && properties[key].default;
      if (value !== undefined) input.placeholder = String(value);
    }
  } catch {
    // the placeholders stay "default"
  }
}
