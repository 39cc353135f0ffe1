// Voices: the library at /voices: list, sample, upload or record, rename, alias, default, delete.

import { request } from "./api.js";
import { fillLanguageSelect, loadVoices, store } from "./store.js";
import {
  $, busy, clearMessage, el, errorText, formatDate, formatSeconds, showMessage,
} from "./ui.js";

let recorder = null;
let recording = null; // the last recording, a Blob
let recordStarted = 0;
let recordTimer = null;

export function initVoices() {
  $("voice-upload").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("voice-submit"), upload);
  });
  $("voice-record").addEventListener("click", toggleRecording);
  $("voices-refresh").addEventListener("click", () => refresh());
  $("voice-file").addEventListener("change", () => {
    if ($("voice-file").files.length) dropRecording();
  });
  store.events.addEventListener("voices", render);
  store.events.addEventListener("languages", () =>
    fillLanguageSelect($("voice-language"), { auto: false }),
  );
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    $("voice-record").disabled = true;
    $("voice-record-state").textContent = "recording needs a secure (https or localhost) page";
  }
}

export function showVoices() {
  refresh();
}

function message(text, kind = "error") {
  showMessage($("voices-message"), text, kind);
}

async function refresh() {
  try {
    await loadVoices();
  } catch (err) {
    message(errorText(err));
  }
}

/** Run a library call, show the server's message (or its error), then reload the list. */
async function act(work) {
  clearMessage($("voices-message"));
  try {
    const response = await work();
    const body = await response.json().catch(() => ({}));
    if (body.message) message(body.message, "ok");
  } catch (err) {
    message(errorText(err));
  }
  await refresh();
}

function form(fields) {
  const data = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    if (Array.isArray(value)) data.append(key, value[0], value[1]);
    else data.append(key, value);
  }
  return data;
}

function upload() {
  const name = $("voice-name").value.trim();
  const file = $("voice-file").files[0];
  if (!name) {
    message("Give the voice a name.");
    $("voice-name").focus();
    return Promise.resolve();
  }
  if (!file && !recording) {
    message("Choose an audio file or record one.");
    return Promise.resolve();
  }
  const audio = file ? [file, file.name] : [recording, recordingName(recording)];
  const data = form({ voice_name: name, language: $("voice-language").value, voice_file: audio });
  return act(async () => {
    const response = await request("voices", { method: "POST", form: data });
    $("voice-upload").reset();
    dropRecording();
    return response;
  });
}

function recordingName(blob) {
  const type = blob.type || "";
  const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
  return `recording.${ext}`;
}

async function toggleRecording() {
  const button = $("voice-record");
  const state = $("voice-record-state");
  if (recorder && recorder.state === "recording") {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    message(`The microphone is not available: ${err.message}`);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (e) => e.data.size && chunks.push(e.data));
  recorder.addEventListener("stop", () => {
    clearInterval(recordTimer);
    stream.getTracks().forEach((t) => t.stop());
    recording = new Blob(chunks, { type: recorder.mimeType });
    const preview = $("voice-record-preview");
    preview.src = URL.createObjectURL(recording);
    preview.hidden = false;
    $("voice-file").value = "";
    button.textContent = "Record again";
    button.setAttribute("aria-pressed", "false");
    const seconds = (performance.now() - recordStarted) / 1000;
    state.textContent = `recorded ${seconds.toFixed(1)} s; it is uploaded with the form`;
  });
  recorder.start();
  recordStarted = performance.now();
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
  recordTimer = setInterval(() => {
    state.textContent = `recording… ${((performance.now() - recordStarted) / 1000).toFixed(0)} s`;
  }, 500);
}

function dropRecording() {
  recording = null;
  const preview = $("voice-record-preview");
  preview.hidden = true;
  preview.removeAttribute("src");
  $("voice-record").textContent = "Record";
  $("voice-record-state").textContent = "not recording";
}

async function playSample(voice) {
  const player = $("voices-player");
  try {
    const response = await request(`voices/${encodeURIComponent(voice.name)}/download`);
    player.src = URL.createObjectURL(await response.blob());
    player.hidden = false;
    player.setAttribute("aria-label", `Sample of ${voice.name}`);
    await player.play().catch(() => {});
  } catch (err) {
    message(errorText(err));
  }
}

function inlineForm(label, fieldName, buttonText, onSubmit) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const input = el("input", { id, type: "text", required: true, autocomplete: "off", name: fieldName });
  return el(
    "form",
    {
      onsubmit: (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (value) onSubmit(value);
      },
    },
    el("div", { class: "field" }, el("label", { for: id }, label), input),
    el("button", { type: "submit", class: "secondary" }, buttonText),
  );
}

function render() {
  const list = $("voices-list");
  const def = store.defaultVoice;
  $("voices-default").textContent = def
    ? `Default voice: ${def}`
    : "Default voice: the built-in voice";
  if (!store.voicesAvailable) {
    list.replaceChildren(el("li", {}, "This server has no voice library."));
    return;
  }
  if (!store.voices.length) {
    list.replaceChildren(el("li", {}, "No voices yet: add one above."));
    return;
  }
  list.replaceChildren(...store.voices.map((voice) => card(voice, voice.name === def)));
}

function card(voice, isDefault) {
  const path = `voices/${encodeURIComponent(voice.name)}`;
  const aliases = el(
    "ul",
    { class: "chips", "aria-label": `Aliases of ${voice.name}` },
    (voice.aliases || []).map((alias) =>
      el(
        "li",
        { class: "chip" },
        alias,
        el(
          "button",
          {
            type: "button",
            "aria-label": `Remove alias ${alias}`,
            onclick: () =>
              act(() =>
                request(`${path}/aliases/${encodeURIComponent(alias)}`, { method: "DELETE" }),
              ),
          },
          "×",
        ),
      ),
    ),
  );
  return el(
    "li",
    { "data-voice": voice.name },
    el(
      "div",
      { class: "item-head" },
      el("strong", {}, voice.name),
      isDefault ? el("span", { class: "badge real" }, "default") : null,
      el(
        "span",
        { class: "hint" },
        `${voice.language || "?"} · ${formatSeconds(voice.duration_s)} · ${formatDate(voice.upload_date)}`,
      ),
    ),
    voice.aliases && voice.aliases.length ? aliases : null,
    el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "secondary", onclick: () => playSample(voice) },
        `Play ${voice.name}`),
      isDefault
        ? el("button", {
            type: "button",
            class: "secondary",
            onclick: () => act(() => request("voices/default", { method: "DELETE" })),
          }, "Use the built-in default")
        : el("button", {
            type: "button",
            class: "secondary",
            onclick: () =>
              act(() =>
                request("voices/default", { method: "POST", form: form({ voice_name: voice.name }) }),
              ),
          }, `Make ${voice.name} the default`),
      el("button", {
        type: "button",
        class: "danger",
        onclick: () => {
          if (window.confirm(`Delete the voice ${voice.name}?`)) {
            act(() => request(path, { method: "DELETE" }));
          }
        },
      }, `Delete ${voice.name}`),
    ),
    el(
      "details",
      {},
      el("summary", {}, `Rename or add an alias to ${voice.name}`),
      inlineForm(`New name for ${voice.name}`, "new_name", "Rename", (value) =>
        act(() => request(path, { method: "PUT", form: form({ new_name: value }) })),
      ),
      inlineForm(`New alias for ${voice.name}`, "alias", "Add alias", (value) =>
        act(() => request(`${path}/aliases`, { method: "POST", form: form({ alias: value }) })),
      ),
    ),
  );
}
