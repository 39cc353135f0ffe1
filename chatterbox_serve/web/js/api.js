// Every call to the server goes through here: the API key travels in a header, never a URL.

const KEY_STORAGE = "chatterbox-serve.api-key";

// The page lives at <root>/ui/ (its <base>), so the API is one level up; this keeps the
// app working when Serve mounts it under a route prefix.
export const apiRoot = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, message, { code = null, param = null, type = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
    this.type = type;
  }
}

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key lasts for this page only
  }
}

let memoryKey = "";

export function currentKey() {
  return getKey() || memoryKey;
}

export function setKey(key) {
  memoryKey = key;
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* keep the in-memory copy */
  }
}

export function url(path) {
  return new URL(path.replace(/^\//, ""), apiRoot);
}

/** fetch() with the key, a JSON or form body, and errors turned into ApiError. */
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const headers = {};
  const key = currentKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(url(path), { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `Cannot reach the server (${err.message}).`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

/** The server's own message from an OpenAI error envelope, else the HTTP status. */
export async function errorOf(response) {
  let message = `${response.status} ${response.statusText || "error"}`;
  let extra = {};
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      message = body.error.message;
      extra = { code: body.error.code, param: body.error.param, type: body.error.type };
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    /* not JSON: keep the status line */
  }
  const error = new ApiError(response.status, message, extra);
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("chatterbox:unauthorized", { detail: message }));
  }
  return error;
}

/**
 * Server-sent events over fetch, so the key goes in a header (EventSource cannot set one).
 * Calls onEvent({event, data}) per event, data parsed as JSON when it is JSON.
 */
export async function readEvents(path, onEvent, { signal } = {}) {
  const response = await request(path, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const parsed = parseEvent(block);
      if (parsed) onEvent(parsed);
    }
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  try {
    return { event, data: JSON.parse(text) };
  } catch {
    return { event, data: text };
  }
}
