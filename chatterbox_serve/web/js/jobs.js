// Long text: background jobs at /audio/speech/long, progress over SSE, and their history.

import { ApiError, readEvents, request } from "./api.js";
import { MEDIA_TYPES } from "./player.js";
import { fillVoiceSelect, store } from "./store.js";
import { $, busy, clearMessage, el, errorText, formatDate, showMessage } from "./ui.js";

const BASE = "audio/speech/long";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const FALLBACK_MIN_LENGTH = 3001;

let current = null; // {id, status, format}
let watcher = null; // AbortController of the SSE reader
let pollTimer = null;

export function initJobs() {
  $("long-text").addEventListener("input", updateCount);
  $("long-sample").addEventListener("click", insertSample);
  $("long-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("long-submit"), submit);
  });
  $("long-pause").addEventListener("click", () => control("pause"));
  $("long-resume").addEventListener("click", () => control("resume"));
  $("long-cancel").addEventListener("click", () => control("cancel"));
  $("long-download").addEventListener("click", () => current && download(current.id, current.format));
  $("long-refresh").addEventListener("click", () => loadHistory());
  store.events.addEventListener("voices", () => fillVoiceSelect($("long-voice")));
  store.events.addEventListener("config", updateCount);
  fillVoiceSelect($("long-voice"));
  updateCount();
}

export function showJobs() {
  loadHistory();
}

function message(text, kind = "error") {
  showMessage($("long-message"), text, kind);
}

/** Jobs take what one request cannot: more than MAX_TOTAL_LENGTH characters. */
function minLength() {
  const single = Number(store.settings.MAX_TOTAL_LENGTH);
  return single > 0 ? single + 1 : FALLBACK_MIN_LENGTH;
}

function maxLength() {
  return Number(store.settings.LONG_TEXT_MAX_LENGTH) || null;
}

function updateCount() {
  const count = $("long-text").value.trim().length;
  const min = minLength();
  const max = maxLength();
  $("long-min").textContent = String(min);
  const out = $("long-count");
  const limit = max ? ` / ${max}` : "";
  out.textContent =
    count < min ? `${count}${limit} characters (${min - count} more needed)` : `${count}${limit} characters`;
  out.classList.toggle("over", (count > 0 && count < min) || Boolean(max && count > max));
}

const SAMPLE = [
  "The lighthouse keeper kept a log of every ship that passed the point, and in the winter",
  "months, when the fog rolled in from the sea, the entries grew short and careful. A bell",
  "rang every thirty seconds. The keeper counted the rings between entries, and when the",
  "count ran long he climbed the stairs to check the lamp, though it had never once failed.",
  "In spring the fishing boats came back, painted in bright colours, and the log filled with",
  "their names. Children from the village walked out along the breakwater to watch them, and",
  "some of them asked the keeper how he could tell one boat from another at such a distance.",
  "He told them that every boat has its own way of moving through the water, the way every",
  "person has their own way of walking, and that after enough years you simply know.",
];

function insertSample() {
  const paragraph = SAMPLE.join(" ");
  const parts = [];
  while (parts.join("\n\n").length < minLength() + 200) parts.push(paragraph);
  $("long-text").value = parts.join("\n\n");
  updateCount();
  $("long-text").focus();
}

async function submit() {
  clearMessage($("long-message"));
  const text = $("long-text").value.trim();
  if (maxLength() && text.length > maxLength()) {
    message(`Long-text jobs take at most ${maxLength()} characters; this text has ${text.length}.`);
    return;
  }
  if (text.length < minLength()) {
    message(
      `Long-text jobs take at least ${minLength()} characters; this text has ${text.length}. ` +
        "Use the Speak view for shorter texts.",
    );
    return;
  }
  const format = $("long-format").value;
  const json = { input: text, response_format: format };
  if ($("long-voice").value) json.voice = $("long-voice").value;
  try {
    const response = await request(BASE, { method: "POST", json });
    const job = await response.json();
    message(`Job ${job.job_id} started${job.total_chunks ? ` (${job.total_chunks} chunks)` : ""}.`, "ok");
    attach(job.job_id, job.status || "pending", format);
    loadHistory();
  } catch (err) {
    message(unavailable(err) || errorText(err));
  }
}

function unavailable(err) {
  return err instanceof ApiError && err.status === 404 && !current
    ? "This server does not run long-text jobs (no /audio/speech/long endpoint)."
    : null;
}

/** Show job `id` in the job panel and follow its progress. */
function attach(id, status, format) {
  current = { id, status, format };
  $("long-job").hidden = false;
  $("long-job-id").textContent = id;
  $("long-audio").hidden = true;
  $("long-download-link").hidden = true;
  render({ status, progress: 0 });
  follow(id);
}

function render({ status, progress, current_chunk: chunk, total_chunks: total }) {
  if (!current) return;
  if (status) current.status = status;
  const state = current.status;
  $("long-job-status").textContent = state;
  if (typeof progress === "number") {
    const pct = Math.max(0, Math.min(100, progress));
    $("long-progress").value = pct;
    $("long-progress").textContent = `${pct.toFixed(0)} %`;
    $("long-progress-text").textContent = `${pct.toFixed(0)} %`;
  }
  if (typeof total === "number") {
    const done = typeof chunk === "number" ? `chunk ${chunk + 1} of ${total}` : `${total} chunks`;
    $("long-job-chunks").textContent = `(${done})`;
  }
  const terminal = TERMINAL.has(state);
  $("long-pause").disabled = terminal || state === "paused";
  $("long-resume").disabled = state !== "paused";
  $("long-cancel").disabled = terminal;
  $("long-download").disabled = state !== "completed";
}

function stopFollowing() {
  if (watcher) watcher.abort();
  watcher = null;
  clearTimeout(pollTimer);
}

async function follow(id) {
  stopFollowing();
  const controller = new AbortController();
  watcher = controller;
  try {
    await readEvents(`${BASE}/${encodeURIComponent(id)}/sse`, (event) => {
      if (!current || current.id !== id) return;
      const data = typeof event.data === "object" && event.data ? event.data : {};
      if (event.event === "completed") {
        render({ status: data.status || "completed", progress: 100 });
      } else if (event.event === "error") {
        render({ status: data.status || "failed" });
        if (data.message) message(`Job ${id}: ${data.message}`);
      } else {
        render(data);
      }
    }, { signal: controller.signal });
  } catch (err) {
    if (err.name === "AbortError") return;
    message(errorText(err));
  }
  if (watcher === controller) poll(id); // the stream ended: confirm the final state
}

/** Read the job's state, and keep reading it while it runs and SSE is not following it. */
async function poll(id) {
  if (!current || current.id !== id) return;
  try {
    const job = await (await request(`${BASE}/${encodeURIComponent(id)}`)).json();
    const progress = job.progress && typeof job.progress === "object"
      ? job.progress.overall_progress
      : job.progress;
    const meta = job.metadata || {};
    render({
      status: job.status,
      progress: job.status === "completed" ? 100 : progress,
      total_chunks: meta.total_chunks,
    });
    if (job.status === "failed" && meta.error) message(`Job ${id} failed: ${meta.error}`);
    if (TERMINAL.has(job.status)) {
      loadHistory();
      return;
    }
  } catch (err) {
    message(errorText(err));
    return;
  }
  pollTimer = setTimeout(() => poll(id), 2000);
}

async function control(action) {
  if (!current) return;
  const id = current.id;
  const path = `${BASE}/${encodeURIComponent(id)}`;
  clearMessage($("long-message"));
  try {
    let response;
    if (action === "cancel") {
      response = await request(`${path}?action=cancel`, { method: "DELETE" });
    } else {
      response = await requestEither(`${path}/${action}`);
    }
    const body = await response.json().catch(() => ({}));
    message(body.message || `Job ${id}: ${action} requested.`, "ok");
  } catch (err) {
    message(errorText(err));
  }
  if (action === "resume") follow(id);
  else poll(id);
}

/** Pause and resume are PUT in the reference API; a server that wants POST says 405. */
async function requestEither(path) {
  try {
    return await request(path, { method: "PUT" });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 405) throw err;
    return request(path, { method: "POST" });
  }
}

async function download(id, format) {
  try {
    const response = await request(`${BASE}/${encodeURIComponent(id)}/download`);
    const blob = await response.blob();
    const type = response.headers.get("Content-Type") || MEDIA_TYPES[format] || "";
    const ext = Object.keys(MEDIA_TYPES).find((k) => type.startsWith(MEDIA_TYPES[k])) || format || "audio";
    const href = URL.createObjectURL(blob);
    const audio = $("long-audio");
    audio.src = href;
    audio.hidden = false;
    const link = $("long-download-link");
    link.href = href;
    link.download = `long-text-${id}.${ext}`;
    link.textContent = `Save ${link.download} (${(blob.size / 1024).toFixed(1)} KiB)`;
    link.hidden = false;
    link.click();
  } catch (err) {
    message(errorText(err));
  }
}

export async function loadHistory() {
  const list = $("long-history");
  let body;
  try {
    body = await (await request("audio/speech/long-history")).json();
  } catch (err) {
    list.replaceChildren(el("li", {}, unavailable(err) || errorText(err)));
    return;
  }
  const jobs = body.jobs || [];
  if (!jobs.length) {
    list.replaceChildren(el("li", {}, "No jobs yet."));
    return;
  }
  list.replaceChildren(...jobs.map(historyItem));
}

function historyItem(job) {
  const format = (job.parameters && job.parameters.response_format) || job.output_format || "mp3";
  const pct = typeof job.progress_percentage === "number" ? `${job.progress_percentage.toFixed(0)} %` : "";
  return el(
    "li",
    { "data-job": job.job_id },
    el(
      "div",
      { class: "item-head" },
      el("strong", {}, job.display_name || job.job_id),
      el("span", { class: "badge" }, job.status),
      el("span", { class: "hint" }, [formatDate(job.created_at), pct, job.text_length && `${job.text_length} characters`]
        .filter(Boolean).join(" · ")),
    ),
    job.text_preview ? el("p", { class: "hint" }, job.text_preview) : null,
    el(
      "div",
      { class: "actions" },
      el("button", {
        type: "button",
        class: "secondary",
        "aria-label": `Show job ${job.job_id}`,
        onclick: () => attach(job.job_id, job.status, format),
      }, "Show"),
      job.status === "completed"
        ? el("button", {
            type: "button",
            "aria-label": `Download job ${job.job_id}`,
            onclick: () => download(job.job_id, format),
          }, "Download")
        : null,
      el("button", {
        type: "button",
        class: "danger",
        "aria-label": `Delete job ${job.job_id}`,
        onclick: async () => {
          if (!window.confirm(`Delete job ${job.job_id} and its audio?`)) return;
          try {
            await request(`${BASE}/${encodeURIComponent(job.job_id)}?action=delete`, { method: "DELETE" });
            if (current && current.id === job.job_id) {
              stopFollowing();
              current = null;
              $("long-job").hidden = true;
            }
          } catch (err) {
            message(errorText(err));
          }
          loadHistory();
        },
      }, "Delete"),
    ),
  );
}
