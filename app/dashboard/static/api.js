// The /v1 API, with the key the user pasted sent as a bearer token on every request.

const STORE_KEY = "distillery.apiKey";

/** The key: in sessionStorage (this tab, gone when it closes) or, if the user asked to be
 * remembered, localStorage (this browser, until they sign out). */
export const auth = {
  get() {
    return sessionStorage.getItem(STORE_KEY) || localStorage.getItem(STORE_KEY);
  },
  set(key, remember) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(STORE_KEY, key);
  },
  clear() {
    sessionStorage.removeItem(STORE_KEY);
    localStorage.removeItem(STORE_KEY);
  },
};

/** The contract's error body as an exception: ``code``, ``message``, ``param``, ``status``. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.param = error.param ?? null;
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return new ApiError(response.status, body.error);
  } catch {
    // not the contract's body: a proxy's page, say
  }
  const message = `The server answered ${response.status} ${response.statusText}.`;
  return new ApiError(response.status, { code: "http_error", message });
}

function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** fetch() on /v1 with the key; a 401 also tells the app to ask for a key again. ``json`` is
 * sent as a JSON body; ``body`` (a FormData, say) as it is. */
export async function request(
  path,
  { method = "GET", params, headers, signal, key, json, body } = {},
) {
  if (json !== undefined) {
    body = JSON.stringify(json);
    headers = { "Content-Type": "application/json", ...headers };
  }
  const response = await fetch(withQuery(path, params), {
    method,
    signal,
    body,
    cache: "no-store",
    headers: { Authorization: `Bearer ${key || auth.get() || ""}`, ...headers },
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !key) {
      window.dispatchEvent(new CustomEvent("distillery:unauthorized", { detail: error }));
    }
    throw error;
  }
  return response;
}

export async function get(path, options = {}) {
  return (await request(path, options)).json();
}

export async function post(path, options = {}) {
  return (await request(path, { ...options, method: "POST" })).json();
}

/** Upload ``file`` (a File from an <input type=file>) as POST /v1/files does it: multipart,
 * with its ``purpose``, "teacher" or "dataset". Returns the file object. */
export async function upload(file, purpose, { signal } = {}) {
  const form = new FormData();
  form.append("purpose", purpose);
  form.append("file", file, file.name);
  return post("/v1/files", { body: form, signal });
}

/** Every item of a list, following ``after`` cursors; ``cursor`` names an item's cursor. */
export async function getAll(path, { params = {}, cursor = (item) => item.id, signal } = {}) {
  const items = [];
  let after = params.after;
  for (;;) {
    const page = await get(path, { params: { ...params, limit: 100, after }, signal });
    items.push(...page.data);
    if (!page.has_more || !page.data.length) return items;
    after = cursor(page.data[page.data.length - 1]);
  }
}

/** A job's events as they happen, from its Server-Sent Events stream: EventSource cannot send
 * a header, so this reads the stream with fetch(). Yields each event; returns when the server
 * closes the stream (after the final status). */
export async function* events(jobId, { after, signal } = {}) {
  const response = await request(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
    params: { after },
    headers: { Accept: "text/event-stream" },
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield JSON.parse(data); // comment-only blocks are keep-alives
    }
  }
}

/** Download an artifact: a link cannot send the key, so fetch it, then save the Blob through
 * a temporary <a download>. */
export async function download(jobId, name) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}/artifacts/${encodeURIComponent(name)}`;
  const blob = await (await request(path)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has its own reference to the Blob by now; this one can go soon.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Run ``task`` now and again ``ms`` after each run ends, until the returned stop() is called.
 * A failed run is reported to ``onError`` and the polling goes on. */
export function poll(task, ms, onError) {
  let timer = null;
  let stopped = false;
  const controller = new AbortController();
  const run = async () => {
    try {
      await task(controller.signal);
      if (!stopped) onError(null);
    } catch (error) {
      if (!stopped && error.name !== "AbortError") onError(error);
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}
