// The dashboard: a login screen, then four views routed by the URL's hash:
//   #/queue  the shared queue      #/jobs  the team's jobs      #/jobs/<id>  one job
//   #/new    a new job: upload the files and submit
import { ApiError, auth, get } from "./api.js";
import { fill, h } from "./dom.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { queueView } from "./queue.js";
import { submitView } from "./submit.js";

const view = document.getElementById("view");
const header = document.querySelector("header.top");

// What the tests (and a curious user, in the console) can read: the charts' data, the
// statuses and progress the job page has shown.
window.distillery = { view: null, charts: {}, job: null };

let leave = () => {};

function route() {
  const [path, query] = (location.hash.replace(/^#/, "") || "/queue").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts[1]) return { name: "job", render: (el) => jobView(el, parts[1]) };
  if (parts[0] === "jobs") return { name: "jobs", render: (el) => jobsView(el, params) };
  if (parts[0] === "new") return { name: "new", render: (el) => submitView(el) };
  return { name: "queue", render: (el) => queueView(el) };
}

function show() {
  leave();
  leave = () => {};
  window.distillery.charts = {};
  window.distillery.job = null;
  if (!auth.get()) {
    window.distillery.view = "login";
    header.hidden = true;
    loginView(view, null);
    return;
  }
  const { name, render } = route();
  window.distillery.view = name;
  header.hidden = false;
  for (const link of header.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", name.startsWith(link.dataset.nav.replace(/s$/, "")));
  }
  fill(view);
  leave = render(view) || (() => {});
}

function loginView(el, reason) {
  const input = h("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "dk_…",
    required: true,
  });
  const remember = h("input", { type: "checkbox", id: "remember" });
  const message = h("p", { class: "error", id: "login-error", role: "alert" }, reason || "");
  message.hidden = !reason;
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "login", novalidate: true },
    h("h1", {}, "Distillery"),
    h("p", {}, "Paste an API key: your team's key, or the admin key."),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("label", { class: "check" }, remember, " Remember this key in this browser"),
    message,
    button,
    h(
      "p",
      { class: "hint" },
      "The key stays in this browser and goes only to this server, as ",
      h("code", {}, "Authorization: Bearer"),
      ".",
    ),
    whereKeysAre(),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      fill(message, "Paste an API key first.");
      message.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      await get("/v1/queue", { params: { limit: 1 }, key }); // any key may read the queue
      auth.set(key, remember.checked);
      show();
    } catch (error) {
      const why = error instanceof ApiError ? error.message : `Could not reach the server: ${error}`;
      fill(message, why);
      message.dataset.code = error.code || "";
      message.hidden = false;
      button.disabled = false;
      input.select();
    }
  });
  fill(el, form);
  input.focus();
}

/** Where a new user finds a key (app/cli.py: ``distill up`` makes the admin key when
 * DISTILL_ADMIN_KEY is unset; ``distill serve`` needs it set). */
function whereKeysAre() {
  const code = (text) => h("code", {}, text);
  return h(
    "dl",
    { class: "where-keys", id: "where-keys" },
    h("dt", {}, "The admin key"),
    h(
      "dd",
      {},
      code("DISTILL_ADMIN_KEY"),
      " where the server runs. Without it, ",
      code("distill up"),
      " made one when it first started, printed it, and keeps it in ",
      code("var/admin_key"),
      " in the folder it runs in: ",
      code("cat var/admin_key"),
      ".",
    ),
    h("dt", {}, "A team's key"),
    h(
      "dd",
      {},
      "The admin creates the team (",
      code("POST /v1/teams"),
      ") and a key for it (",
      code("POST /v1/teams/{team_id}/keys"),
      "), which is shown once.",
    ),
  );
}

document.getElementById("sign-out").addEventListener("click", () => {
  auth.clear();
  show();
});

// A key that stops working mid-session (revoked, say): back to the login screen, saying why.
window.addEventListener("distillery:unauthorized", (event) => {
  auth.clear();
  leave();
  leave = () => {};
  header.hidden = true;
  window.distillery.view = "login";
  loginView(view, event.detail.message);
});

window.addEventListener("hashchange", show);
show();
