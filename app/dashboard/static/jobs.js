// The team's jobs (GET /v1/jobs), newest first, a page at a time, optionally of one status.
// #/jobs?status=running&limit=20
import { get, poll } from "./api.js";
import { badge, errorLine, fill, h, jobLink, progressBar, table } from "./dom.js";
import { duration, percent, time } from "./format.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 3000;

export function jobsView(el, params) {
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const limit = Math.min(100, Math.max(1, Number(params.get("limit")) || 20));
  // The cursors of the pages walked through so far: "after" for each, null for the first.
  const cursors = [null];
  let page = null;

  const errors = errorLine();
  const select = h(
    "select",
    { id: "status-filter", "aria-label": "status" },
    h("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
  );
  select.addEventListener("change", () => {
    const query = new URLSearchParams({ ...(select.value && { status: select.value }) });
    if (params.get("limit")) query.set("limit", limit);
    location.hash = `#/jobs${query.size ? `?${query}` : ""}`;
  });
  const newer = h("button", { type: "button", id: "page-newer" }, "← Newer");
  const older = h("button", { type: "button", id: "page-older" }, "Older →");
  const where = h("span", { class: "muted", id: "page-number" });
  newer.disabled = older.disabled = true; // until the first page is in
  const list = h("div", { id: "jobs" }, h("p", { class: "muted" }, "Loading…"));

  const load = async (signal) => {
    page = await get("/v1/jobs", {
      params: { limit, status, after: cursors[cursors.length - 1] },
      signal,
    });
    render(list, page.data);
    fill(where, `page ${cursors.length}`);
    newer.disabled = cursors.length === 1;
    older.disabled = !page.has_more;
  };
  let stop = poll(load, REFRESH_MS, errors.show);
  const turn = (change) => {
    stop();
    change();
    stop = poll(load, REFRESH_MS, errors.show);
  };
  newer.addEventListener("click", () => turn(() => cursors.pop()));
  older.addEventListener("click", () =>
    turn(() => cursors.push(page.data[page.data.length - 1].id)),
  );

  fill(
    el,
    h("div", { class: "title" }, h("h1", {}, "Jobs"), h("label", {}, "Show ", select)),
    errors.el,
    list,
    h("div", { class: "pager" }, newer, where, older),
  );
  return () => stop();
}

function render(el, jobs) {
  fill(
    el,
    table(
      [
        ["job", (job) => jobLink(job.id)],
        ["name", (job) => job.name || h("span", { class: "muted" }, "—")],
        ["status", (job) => badge(job.status)],
        ["progress", (job) => progressCell(job)],
        ["student", (job) => job.spec.student.arch],
        ["student accuracy", (job) => percent(job.metrics && job.metrics.student_accuracy), "num"],
        ["submitted", (job) => time(job.created_at)],
        ["took", (job) => took(job), "num"],
      ],
      jobs,
      {
        empty: [
          "No jobs here yet: submit one from ",
          h("a", { href: "#/new" }, "New job"),
          ", or with POST /v1/jobs.",
        ],
        rowAttrs: (job) => ({ dataset: { jobId: job.id, status: job.status } }),
      },
    ),
  );
}

function progressCell(job) {
  if (job.status === "queued") return h("span", { class: "muted" }, `#${job.queue_position}`);
  if (!job.progress) return "—";
  return h(
    "div",
    { class: "progress-cell" },
    progressBar(job.progress.fraction),
    h("small", {}, `${(job.progress.fraction * 100).toFixed(0)}%`),
  );
}

function took(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return duration((end - new Date(job.started_at)) / 1000);
}
