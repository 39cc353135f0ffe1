// Small DOM helpers shared by the views.

export const $ = (id) => document.getElementById(id);

/** An element with attributes (on* become listeners) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show `text` in a message box; errors are announced at once (role=alert). */
export function showMessage(box, text, kind = "error") {
  box.hidden = !text;
  box.textContent = text || "";
  box.className = `message ${kind}`;
  if (kind === "error") box.setAttribute("role", "alert");
  else box.setAttribute("role", "status");
}

export function clearMessage(box) {
  showMessage(box, "", "info");
}

export function errorText(err) {
  if (!err) return "";
  if (err.name === "ApiError") {
    return err.status ? `${err.message} (HTTP ${err.status})` : err.message;
  }
  return err.message || String(err);
}

export function formatSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function formatDate(value) {
  if (!value) return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** Run `work` with `button` disabled, so a double click sends one request. */
export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}
