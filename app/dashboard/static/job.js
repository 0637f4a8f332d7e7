// One job: status, progress, live curves, events, final measurements, artifacts.
//
// Live: the job's event stream (GET /v1/jobs/{id}/events as text/event-stream, read with fetch
// so it can carry the key) drives the page. A progress event moves the bar and fetches the new
// curve points (GET .../metrics?after=<last step>); a status event re-reads the job.
//
// The metric points are the student's. The labels-only baseline has none: its validation
// measures come in the data of its "Baseline epoch k/N done." log events, and are drawn beside
// the student's, at the step the student was at the end of the same epoch.
import { ApiError, download, events, get, getAll, poll, post } from "./api.js";
import { ACCURACY, curve, LOSSES, REGRESSION } from "./charts.js";
import { badge, errorLine, fill, h, progressBar, table } from "./dom.js";
import { bytes, progressText, time } from "./format.js";
import { resultsTable } from "./results.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const JOB_REFRESH_MS = 2000; // for what no event announces: the queue position, a cancel request
const RECONNECT_MS = 1000;
const LOG_ROWS = 300;
// The log event each phase (or sweep run) sends at the end of each epoch, with its validation
// measures as data: folded into one row per phase, the latest shown.
const EPOCH_DONE = /^(Student|Baseline) epoch (\d+)\/(\d+) done\.$/;
const EPOCH_DONE_PHASES = new Set(["student", "baseline"]);
const EPOCH_DONE_KEYS = new Set(["phase", "epoch", "epochs"]); // the rest are measures
const VALIDATION_KEYS = ["val_accuracy", "val_agreement", "val_mse", "val_agreement_mse"];

export function jobView(el, jobId) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const controller = new AbortController();
  const signal = controller.signal;
  const state = { job: null, events: [], points: [], artifacts: null, teacherBytes: undefined };
  // For tests and the console: every status and progress fraction this page has shown, and
  // the statuses the event stream announced, in order.
  const seen = { id: jobId, statuses: [], progress: [], streamed: [], streamEnded: false };
  window.distillery.job = seen;

  const errors = errorLine();
  const ui = {
    title: h("h1", {}, jobId),
    status: h("span", { id: "job-status" }),
    actions: h("div", { class: "actions" }),
    meta: h("dl", { class: "meta" }),
    progress: h("div", { id: "job-progress" }),
    results: h("div", { id: "job-results" }, h("p", { class: "muted" }, "When the job succeeds.")),
    artifacts: h("div", { id: "job-artifacts" }, h("p", { class: "muted" }, "None yet.")),
    log: h("div", { id: "job-events" }),
    spec: h("pre", { class: "spec" }),
    lossChart: h("div", { class: "chart", id: "chart-loss" }),
    accuracyChart: h("div", { class: "chart", id: "chart-accuracy" }),
    accuracyTitle: h("h2", {}, "Validation"),
  };
  const showProgressEvents = h("input", { type: "checkbox", id: "show-progress-events" });
  showProgressEvents.addEventListener("change", () => renderLog());
  const unfolded = new Set(); // the phases whose epoch updates the user opened

  fill(
    el,
    h("div", { class: "title" }, ui.title, ui.status, ui.actions),
    errors.el,
    ui.meta,
    h("section", {}, h("h2", {}, "Progress"), ui.progress),
    h(
      "section",
      { class: "charts" },
      h("div", {}, h("h2", {}, "Loss"), ui.lossChart),
      h("div", {}, ui.accuracyTitle, ui.accuracyChart),
    ),
    h("section", {}, h("h2", {}, "Results"), ui.results),
    h("section", {}, h("h2", {}, "Artifacts"), ui.artifacts),
    h(
      "section",
      {},
      h(
        "div",
        { class: "title" },
        h("h2", {}, "Events"),
        h("label", { class: "check" }, showProgressEvents, " show progress events"),
      ),
      ui.log,
    ),
    h("section", {}, h("details", {}, h("summary", {}, "Job spec"), ui.spec)),
  );

  const charts = { loss: curve(ui.lossChart, LOSSES), accuracy: null };
  window.distillery.charts = {
    get loss() {
      return charts.loss.chart;
    },
    get accuracy() {
      return charts.accuracy && charts.accuracy.chart;
    },
  };

  // -- the job ---------------------------------------------------------------------------------

  const isFinal = () => state.job && FINAL.includes(state.job.status);

  const refreshJob = coalesced(async () => adopt(await get(path, { signal })));

  /** Show ``job``, as read just now. A read that started before the last progress event came
   * in may carry older progress; within one attempt, the bar never moves back for it. */
  async function adopt(job) {
    const wasFinal = isFinal();
    const shown = state.job && state.job.progress;
    const sameAttempt = state.job && state.job.attempts === job.attempts;
    if (sameAttempt && shown && (!job.progress || job.progress.step < shown.step)) {
      job.progress = shown;
    }
    state.job = job;
    renderJob();
    if (isFinal() && !wasFinal) await finished();
  }

  async function finished() {
    stopPolling();
    await refreshPoints();
    if (state.job.status === "succeeded") await loadResults();
  }

  async function loadResults() {
    const [artifacts, teacher] = await Promise.all([
      getAll(`${path}/artifacts`, { signal }),
      get(`/v1/files/${encodeURIComponent(state.job.spec.teacher.file_id)}`, { signal }).catch(
        (error) => {
          if (error instanceof ApiError && error.status === 404) return null; // deleted since
          throw error;
        },
      ),
    ]);
    state.artifacts = artifacts;
    state.teacherBytes = teacher ? teacher.bytes : undefined;
    renderResults();
  }

  function renderJob() {
    const job = state.job;
    fill(ui.title, job.name || job.id);
    fill(ui.status, badge(job.status));
    if (seen.statuses[seen.statuses.length - 1] !== job.status) seen.statuses.push(job.status);
    renderActions(null);
    fill(
      ui.meta,
      meta("id", h("span", { class: "mono" }, job.id)),
      meta("student", job.spec.student.arch),
      meta("submitted", time(job.created_at)),
      meta("started", time(job.started_at)),
      meta("finished", time(job.finished_at)),
      meta("attempts", job.attempts),
    );
    renderProgress();
    fill(ui.spec, JSON.stringify(job.spec, null, 2));
  }

  function renderProgress() {
    const job = state.job;
    const progress = job.progress;
    if (progress && seen.progress[seen.progress.length - 1] !== progress.fraction) {
      seen.progress.push(progress.fraction);
    }
    const running = job.status === "running";
    const text = progress
      ? progressText(running ? progress : { ...progress, eta_seconds: null })
      : job.status === "queued"
        ? "Waiting for a worker."
        : "Not started.";
    fill(
      ui.progress,
      progressBar(progress ? progress.fraction : job.status === "succeeded" ? 1 : 0, "job progress"),
      h("p", { id: "progress-text" }, text),
      job.status === "queued"
        ? h(
            "p",
            { id: "queue-position" },
            `Place in the queue: ${job.queue_position}`,
            job.queue_position === 0 ? " (starts next)" : "",
            ". ",
            h("a", { href: "#/queue" }, "See the queue"),
          )
        : null,
      job.cancel_requested && !isFinal()
        ? h("p", { class: "warning" }, "Cancel requested: the worker stops the job shortly.")
        : null,
      job.error
        ? h(
            "p",
            { class: "error", id: "job-error" },
            h("code", {}, job.error.code),
            ": ",
            job.error.message,
          )
        : null,
    );
  }

  // "none", "cancel" or "confirm": redrawn only when that changes, so a refresh of the job
  // between the two clicks leaves the question standing.
  let actions = null;

  function renderActions(wanted) {
    const open = !isFinal() && !state.job.cancel_requested;
    const mode = !open ? "none" : wanted || (actions === "confirm" ? "confirm" : "cancel");
    if (mode === actions) return;
    actions = mode;
    if (mode === "none") {
      fill(ui.actions);
    } else if (mode === "cancel") {
      const cancel = h("button", { type: "button", id: "cancel-job", class: "danger" }, "Cancel job");
      cancel.addEventListener("click", () => renderActions("confirm"));
      fill(ui.actions, cancel);
    } else {
      const yes = h("button", { type: "button", id: "confirm-cancel", class: "danger" }, "Yes");
      const no = h("button", { type: "button" }, "No");
      yes.addEventListener("click", async () => {
        yes.disabled = no.disabled = true;
        try {
          await adopt(await post(`${path}/cancel`, { signal }));
        } catch (error) {
          errors.show(error);
          yes.disabled = no.disabled = false;
          await refreshJob();
        }
      });
      no.addEventListener("click", () => renderActions("cancel"));
      fill(ui.actions, h("span", {}, "Cancel this job? "), yes, no);
    }
  }

  function renderResults() {
    if (state.job.metrics) fill(ui.results, resultsTable(state.job.metrics, state.teacherBytes));
    fill(
      ui.artifacts,
      table(
        [
          ["artifact", (a) => h("span", { class: "mono" }, a.name)],
          ["size", (a) => bytes(a.bytes), "num"],
          ["sha256", (a) => h("span", { class: "mono", title: a.sha256 }, a.sha256.slice(0, 16) + "…")],
          ["", (a) => downloadButton(a)],
        ],
        state.artifacts || [],
        { empty: "This job has no artifacts.", rowAttrs: (a) => ({ dataset: { artifact: a.name } }) },
      ),
    );
  }

  function downloadButton(artifact) {
    const button = h(
      "button",
      { type: "button", dataset: { download: artifact.name } },
      "Download",
    );
    button.addEventListener("click", async () => {
      button.disabled = true;
      fill(button, "Downloading…");
      try {
        await download(jobId, artifact.name);
        errors.show(null);
      } catch (error) {
        errors.show(error);
      } finally {
        button.disabled = false;
        fill(button, "Download");
      }
    });
    return button;
  }

  // -- curves ----------------------------------------------------------------------------------

  /** The curve points after the last one this page has. */
  const refreshPoints = coalesced(async () => {
    const last = state.points[state.points.length - 1];
    const fresh = await getAll(`${path}/metrics`, {
      params: { after: last ? last.step : undefined },
      cursor: (point) => point.step,
      signal,
    });
    state.points.push(...fresh);
    drawCurves();
  });

  function drawCurves() {
    charts.loss.update(state.points);
    const validation = withBaseline(state.points, state.events);
    if (!charts.accuracy && validation.length) {
      const regression = validation.some((p) => p.val_mse != null || p.baseline_val_mse != null);
      const kind = regression ? REGRESSION : ACCURACY;
      if (validation.some((p) => Object.keys(kind.keys).some((k) => p[k] != null))) {
        charts.accuracy = curve(ui.accuracyChart, kind);
        fill(ui.accuracyTitle, regression ? "Validation MSE" : "Validation accuracy");
      }
    }
    if (charts.accuracy) charts.accuracy.update(validation);
  }

  // -- events ----------------------------------------------------------------------------------

  function onEvent(event) {
    state.events.push(event);
    scheduleLog();
    if (epochDone(event)?.phase === "baseline") scheduleCurves();
    if (event.type === "status") {
      seen.streamed.push(event.data && event.data.status);
      return refreshJob();
    }
    if (event.type === "progress" && event.data && state.job) {
      const known = state.job.progress;
      if (!known || event.data.step > known.step) {
        const { phase, epoch, epochs, step, total_steps, fraction, eta_seconds, run, runs } =
          event.data;
        state.job.progress = { phase, epoch, epochs, step, total_steps, fraction, eta_seconds, run, runs };
        renderProgress();
      }
      return refreshPoints();
    }
    if (event.type === "metrics") return refreshJob();
    return null;
  }

  async function follow() {
    while (!signal.aborted) {
      const last = state.events[state.events.length - 1];
      try {
        for await (const event of events(jobId, { after: last && last.id, signal })) {
          // Not awaited: the stream reads on while the page catches up (see coalesced).
          onEvent(event)?.catch((error) => signal.aborted || errors.show(error));
        }
        errors.show(null);
        await refreshJob();
        if (isFinal()) break;
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) return;
        errors.show(error);
      }
      await pause(RECONNECT_MS, signal);
    }
    seen.streamEnded = true;
  }

  const scheduleLog = onNextFrame(() => renderLog());
  const scheduleCurves = onNextFrame(() => drawCurves());

  function renderLog() {
    const all = state.events;
    const shown = showProgressEvents.checked ? all : all.filter((e) => e.type !== "progress");
    const hidden = all.length - shown.length;
    const rows = folded(shown.slice().reverse(), unfolded);
    const newest = rows.slice(0, LOG_ROWS);
    fill(
      ui.log,
      h(
        "p",
        { class: "muted" },
        `${all.length} events`,
        hidden ? ` (${hidden} progress events hidden)` : "",
        rows.length > LOG_ROWS ? `; the newest ${LOG_ROWS} rows shown` : "",
        ", newest first.",
      ),
      table(
        [
          ["time", (r) => new Date(r.event.created_at).toLocaleTimeString(), "nowrap"],
          ["level", (r) => h("span", { class: `level level-${r.event.level}` }, r.event.level)],
          ["type", (r) => r.event.type],
          ["message", (r) => [r.event.message, r.fold ? foldButton(r.fold) : null]],
        ],
        newest,
        {
          empty: "No events yet.",
          rowAttrs: (r) => ({
            class: r.inFold ? "folded" : null,
            dataset: {
              eventId: r.event.id,
              type: r.event.type,
              ...(r.fold && { epochUpdates: r.fold.phase }),
              ...(r.inFold && { inEpochUpdates: r.inFold }),
            },
          }),
        },
      ),
    );
  }

  function foldButton({ phase, count }) {
    if (count < 2) return null;
    const open = unfolded.has(phase);
    const button = h(
      "button",
      { type: "button", class: "fold", "aria-expanded": String(open), dataset: { phase } },
      `${count} epoch updates`,
    );
    button.addEventListener("click", () => {
      if (open) unfolded.delete(phase);
      else unfolded.add(phase);
      renderLog();
    });
    return button;
  }

  // -- start -----------------------------------------------------------------------------------

  let stopPolling = () => {};
  (async () => {
    try {
      await refreshJob();
    } catch (error) {
      if (signal.aborted) return;
      errors.show(error);
      if (error instanceof ApiError && error.status === 404) {
        fill(ui.progress, h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
      }
      return;
    }
    if (!isFinal()) {
      stopPolling = poll(async () => !isFinal() && refreshJob(), JOB_REFRESH_MS, errors.show);
    }
    await refreshPoints().catch((error) => signal.aborted || errors.show(error));
    renderLog();
    await follow();
  })();

  return () => {
    controller.abort();
    stopPolling();
    charts.loss.destroy();
    if (charts.accuracy) charts.accuracy.destroy();
  };
}

/** The log's rows, newest first: each phase's epoch updates folded into the row of its latest
 * (``fold``: phase and count), followed, when ``unfolded`` has the phase, by the others
 * (``inFold``: the phase). */
function folded(newestFirst, unfolded) {
  const rows = [];
  const folds = new Map();
  for (const event of newestFirst) {
    const phase = epochDone(event)?.phase;
    if (!phase) {
      rows.push({ event });
    } else if (!folds.has(phase)) {
      const row = { event, fold: { phase, count: 1 }, members: [] };
      folds.set(phase, row);
      rows.push(row);
    } else {
      const row = folds.get(phase);
      row.fold.count += 1;
      row.members.push({ event, inFold: phase });
    }
  }
  return rows.flatMap((row) =>
    row.fold && unfolded.has(row.fold.phase) ? [row, ...row.members] : [row],
  );
}

/** ``{phase, epoch, epochs}`` of an epoch's end log event, else null: from its data, or, for
 * a job run before the data carried them, from its message. */
function epochDone(event) {
  if (event.type !== "log") return null;
  const data = event.data || {};
  if (EPOCH_DONE_PHASES.has(data.phase) && Number.isInteger(data.epoch)) {
    return { phase: data.phase, epoch: data.epoch, epochs: data.epochs };
  }
  const match = EPOCH_DONE.exec(event.message);
  if (!match) return null;
  return { phase: match[1].toLowerCase(), epoch: Number(match[2]), epochs: Number(match[3]) };
}

/** The student's validation points, and the baseline's from its epoch events as
 * ``baseline_<measure>`` at the step the student's first run was at the end of that epoch. */
function withBaseline(points, events) {
  const baseline = events.filter((e) => epochDone(e)?.phase === "baseline" && e.data);
  // An epoch's end point: the one with validation measures (val_loss is there in every task).
  const first = points.find((p) => !p.run && VALIDATION_KEYS.some((k) => p[k] != null));
  if (!first || !baseline.length) return points;
  const stepsPerEpoch = first.step / first.epoch;
  const rows = new Map(points.map((p) => [p.step, { ...p }]));
  for (const event of baseline) {
    const step = epochDone(event).epoch * stepsPerEpoch;
    const row = rows.get(step) || { step };
    for (const [key, value] of Object.entries(event.data)) {
      if (!EPOCH_DONE_KEYS.has(key)) row[`baseline_${key}`] = value;
    }
    rows.set(step, row);
  }
  return [...rows.values()].sort((a, b) => a.step - b.step);
}

/** ``task`` once on the next frame, however often this is called before then. */
function onNextFrame(task) {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      task();
    });
  };
}

function meta(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** ``task`` run by one caller at a time: called again while it runs, it runs once more after,
 * so bursts of events cost two requests, and answers arrive in the order they were asked. */
function coalesced(task) {
  let running = null;
  let again = false;
  return async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await task();
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
}
