// The JSON API, as the dashboard calls it: every request carries the API key the user typed.
//
// Paths are resolved against the folder above /ui/, not the site root, so the dashboard works
// unchanged behind a proxy that serves clipft under a path prefix (/clipft/ui/ → /clipft/jobs).

const KEY_STORAGE = "clipft.apiKey";
const API_ROOT = new URL("..", document.baseURI);

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => localStorage.setItem(KEY_STORAGE, key.trim()),
  clear: () => localStorage.removeItem(KEY_STORAGE),
};

export function apiUrl(path, query) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  return url;
}

/** An answer other than 2xx; `message` is the API's own words. */
export class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
  }
}

/** The API's `detail` in words: a string as it is, a validation list one field at a time. */
export function describeError(status, body) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${fieldPath(item.loc)}: ${item.msg}`).join("; ");
  }
  if (typeof detail === "string" && detail) return detail;
  return `the server answered ${status}`;
}

/** Where a validation error points, without the "body" prefix: `hyperparameters.epochs`. */
export function fieldPath(loc) {
  return (loc || []).filter((part) => part !== "body").join(".");
}

function headers(extra) {
  const all = { Accept: "application/json", ...extra };
  const key = apiKey.get();
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

function parse(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function refused(status, body) {
  if (status === 401) window.dispatchEvent(new CustomEvent("clipft:unauthorized"));
  return new ApiError(status, body);
}

export async function request(method, path, { json, form, query, signal } = {}) {
  const init = { method, signal, headers: headers(json === undefined ? {} : { "Content-Type": "application/json" }) };
  if (json !== undefined) init.body = JSON.stringify(json);
  else if (form !== undefined) init.body = form;
  const response = await fetch(apiUrl(path, query), init);
  const body = parse(await response.text());
  if (!response.ok) throw refused(response.status, body);
  return body;
}

/** A binary answer (a model's zip) as a Blob, with the same key and errors as `request`. */
export async function fetchBlob(path) {
  const response = await fetch(apiUrl(path), { headers: headers({ Accept: "*/*" }) });
  if (!response.ok) throw refused(response.status, parse(await response.text()));
  return response.blob();
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, options) => request("POST", path, options);
export const del = (path, options) => request("DELETE", path, options);

// A resumable upload's chunks: a dropped connection costs at most one, and the bar moves.
const UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024;
const UPLOAD_RETRIES = 8;

/**
 * Send `file` as a resumable upload (/uploads) and complete it into a dataset, which it returns.
 *
 * Chunk by chunk: after a dropped connection, a 503 or a chunk the server already had (a lost
 * answer), it asks the server how far the upload got and goes on from there, up to
 * UPLOAD_RETRIES failures in a row. onProgress(sent, total) after each stored chunk.
 */
export async function uploadResumable(file, { name, filename }, onProgress) {
  let state = await post("/uploads", { json: { size: file.size, name: name || null, filename } });
  const path = `/uploads/${state.id}`;
  for (let failures = 0; ; ) {
    let sending = true;
    try {
      const chunkBytes = Math.min(state.chunk_max_bytes, UPLOAD_CHUNK_BYTES);
      while (state.received < state.size) {
        state = await sendChunk(path, file.slice(state.received, state.received + chunkBytes), state.received);
        failures = 0;
        onProgress(state.received, state.size);
      }
      sending = false;
      return await post(`${path}/complete`);
    } catch (error) {
      const lost = !(error instanceof ApiError) || error.status === 503 || (sending && error.status === 409);
      failures += 1;
      if (!lost || failures > UPLOAD_RETRIES) throw error;
    }
    await sleep(Math.min(30_000, 500 * 2 ** (failures - 1)));
    try {
      state = await get(path);
    } catch (error) {
      if (error instanceof ApiError && error.status !== 503) throw error;
      continue; // the server is still away: the next round asks again
    }
    if (state.status === "completed") return get(`/datasets/${state.id}`);
  }
}

async function sendChunk(path, chunk, offset) {
  const response = await fetch(apiUrl(path), {
    method: "PATCH",
    headers: headers({ "Content-Type": "application/octet-stream", "Upload-Offset": String(offset) }),
    body: chunk,
  });
  const body = parse(await response.text());
  if (!response.ok) throw refused(response.status, body);
  return body;
}

/**
 * Follow a server-sent event stream until it ends or `signal` aborts.
 *
 * EventSource cannot send an Authorization header, so the stream is read with fetch. A dropped
 * connection is opened again with Last-Event-ID, and the server sends only what was missed.
 */
export async function follow(path, onMessage, signal) {
  let lastEventId = null;
  for (let failures = 0; !signal.aborted; ) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastEventId !== null) extra["Last-Event-ID"] = lastEventId;
      const response = await fetch(apiUrl(path), { headers: headers(extra), signal });
      if (!response.ok) throw refused(response.status, parse(await response.text()));
      failures = 0;
      let ended = false;
      for await (const message of messages(response.body)) {
        if (message.id !== null) lastEventId = message.id;
        onMessage(message);
        if (message.event === "end") ended = true;
      }
      if (ended) return;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
      failures += 1;
    }
    await sleep(Math.min(10_000, 500 * 2 ** failures), signal);
  }
}

async function* messages(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = parseBlock(block);
      if (message) yield message;
    }
  }
}

function parseBlock(block) {
  const message = { id: null, event: "message", data: "" };
  let hasData = false;
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") message.id = value;
    else if (field === "event") message.event = value;
    else if (field === "data") {
      message.data += (hasData ? "\n" : "") + value;
      hasData = true;
    }
  }
  if (!hasData) return null;
  message.data = parse(message.data);
  return message;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
