// Building the page from data. Text always goes in as text nodes, never as HTML, so nothing a
// job's name or log says can become markup.

/** h("a", {href: "#/jobs", class: "x", onclick: fn, dataset: {id: 1}}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside ``el`` with ``children``. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table: ``columns`` are [heading, row => cell content, optional class]. */
export function table(columns, rows, { empty = "Nothing here.", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([title, , cls]) => h("th", { class: cls }, title)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          rowAttrs ? rowAttrs(row) : {},
          columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row))),
        ),
      ),
    ),
  );
}

export function badge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, status);
}

export function progressBar(fraction, label) {
  const percent = Math.max(0, Math.min(100, (fraction || 0) * 100));
  const bar = h("div", { class: "progress-fill" });
  // Through the CSSOM: the CSP forbids style attributes in markup, not this.
  bar.style.width = `${percent}%`;
  return h(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": percent.toFixed(1),
      "aria-label": label || "progress",
    },
    bar,
  );
}

export function jobLink(id, text) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono" }, text || id);
}

/** A line for a view's errors; ``show(null)`` hides it again. */
export function errorLine() {
  const el = h("p", { class: "error banner", role: "alert" });
  el.hidden = true;
  return {
    el,
    show(error) {
      el.hidden = !error;
      fill(el, error ? error.message || String(error) : "");
    },
  };
}
