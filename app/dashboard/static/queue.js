// The shared queue (GET /v1/queue): workers, running and queued jobs, every team's usage.
// Other teams' jobs come without details: only their team and place; other teams' usage rows
// come without a name unless the server shows names (DISTILL_QUEUE_SHOWS_TEAM_NAMES).
import { get, poll } from "./api.js";
import { badge, errorLine, fill, h, jobLink, progressBar, table } from "./dom.js";
import { ago, duration, integer, progressText } from "./format.js";

const REFRESH_MS = 2000;

export function queueView(el) {
  const errors = errorLine();
  const updated = h("span", { class: "muted", id: "queue-updated" });
  const body = h("div", { id: "queue" }, h("p", { class: "muted" }, "Loading…"));
  fill(el, h("div", { class: "title" }, h("h1", {}, "Shared queue"), updated), errors.el, body);
  return poll(
    async (signal) => {
      const queue = await get("/v1/queue", { signal });
      render(body, queue);
      fill(updated, `updated ${new Date().toLocaleTimeString()}`);
    },
    REFRESH_MS,
    errors.show,
  );
}

function render(el, queue) {
  const teams = new Map(queue.teams.map((team) => [team.team_id, team.name]));
  const teamName = (id) => teams.get(id) || id;
  fill(
    el,
    h("section", {}, h("h2", {}, `Workers (${queue.workers.length})`), workers(queue.workers)),
    h(
      "section",
      {},
      h("h2", {}, `Running (${queue.running.length})`),
      table(
        [
          ["job", (entry) => jobCell(entry)],
          ["team", (entry) => teamName(entry.team_id), "nowrap"],
          ["progress", (entry) => progressCell(entry.job)],
        ],
        queue.running,
        { empty: "No job is running.", rowAttrs: (entry) => ({ dataset: rowData(entry) }) },
      ),
    ),
    h(
      "section",
      {},
      h("h2", {}, `Queued (${queue.queued.length})`),
      table(
        [
          ["#", (entry) => entry.queue_position, "num"],
          ["job", (entry) => jobCell(entry)],
          ["team", (entry) => teamName(entry.team_id), "nowrap"],
          ["priority", (entry) => (entry.job ? entry.job.spec.priority : "—"), "num"],
          ["submitted", (entry) => (entry.job ? ago(entry.job.created_at) : "—")],
        ],
        queue.queued,
        { empty: "Nothing is waiting.", rowAttrs: (entry) => ({ dataset: rowData(entry) }) },
      ),
    ),
    h("section", {}, h("h2", {}, "Teams"), teamsTable(queue.teams)),
  );
}

function rowData(entry) {
  return { jobId: entry.id || "", position: entry.queue_position ?? "" };
}

function workers(list) {
  return table(
    [
      ["status", (w) => badge(w.status)],
      ["worker", (w) => h("span", { class: "mono", title: w.id }, w.id)],
      ["host", (w) => w.hostname],
      ["device", (w) => [h("span", { class: "mono" }, w.device), " ", w.device_name]],
      ["job", (w) => (w.job_id ? jobLink(w.job_id) : "—")],
      ["heartbeat", (w) => h("span", { title: w.last_heartbeat }, ago(w.last_heartbeat))],
    ],
    list,
    {
      empty: "No worker has registered. Start one with `distill worker`.",
      rowAttrs: (w) => ({ dataset: { workerId: w.id, status: w.status } }),
    },
  );
}

function jobCell(entry) {
  if (!entry.id) return h("span", { class: "muted" }, "another team's job");
  const name = entry.job && entry.job.name;
  return [jobLink(entry.id), name ? h("span", { class: "muted" }, ` ${name}`) : null];
}

function progressCell(job) {
  if (!job) return "—";
  if (!job.progress) return h("span", { class: "muted" }, "starting…");
  return h(
    "div",
    { class: "progress-cell" },
    progressBar(job.progress.fraction),
    h("small", {}, progressText(job.progress)),
  );
}

function teamsTable(teams) {
  return table(
    [
      ["team", (t) => t.name ?? h("span", { class: "mono", title: "another team" }, t.team_id)],
      ["running", (t) => `${t.running} / ${t.max_running_jobs}` +
        (t.max_running_devices == null ? "" : `, ${t.running_devices} / ${t.max_running_devices} devices`), "num"],
      ["queued", (t) => integer(t.queued), "num"],
      ["GPU time, 24 h", (t) => duration(t.gpu_seconds_24h), "num"],
    ],
    teams,
    { rowAttrs: (t) => ({ dataset: { teamId: t.team_id } }) },
  );
}
