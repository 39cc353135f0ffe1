// Speak: one request to /v1/audio/speech, streamed, played as it arrives.

import { request } from "./api.js";
import { createPlayback, MODE_LABELS } from "./player.js";
import { fillLanguageSelect, fillVoiceSelect, store } from "./store.js";
import { $, clearMessage, el, errorText, formatSeconds, showMessage } from "./ui.js";

// Slider -> the /config setting that is the server's default for it.
// CFG is the engine's CHATTERBOX_CFG_SCALE; CFG_WEIGHT is the older per-request default.
const DEFAULT_SETTING = {
  speed: [],
  exaggeration: ["EXAGGERATION"],
  temperature: ["TEMPERATURE"],
  cfg_weight: ["CHATTERBOX_CFG_SCALE", "CFG_WEIGHT"],
};
const BUILT_IN_DEFAULT = { speed: 1 };
const SLIDER_IDS = ["speak-speed", "speak-exaggeration", "speak-temperature", "speak-cfg"];

let active = null;

export function initSpeak() {
  const text = $("speak-text");
  text.addEventListener("input", updateCount);
  for (const id of SLIDER_IDS) {
    $(id).addEventListener("input", () => showSlider($(id), true));
  }
  $("speak-reset").addEventListener("click", resetSliders);
  $("speak-form").addEventListener("submit", (event) => {
    event.preventDefault();
    speak();
  });
  $("speak-stop").addEventListener("click", () => active && active.abort());
  store.events.addEventListener("config", () => {
    resetSliders();
    updateCount();
  });
  store.events.addEventListener("voices", () => fillVoiceSelect($("speak-voice")));
  store.events.addEventListener("models", fillModelSelect);
  $("speak-model").addEventListener("change", showTags);
  store.events.addEventListener("languages", () =>
    fillLanguageSelect($("speak-language"), { auto: true }),
  );
  fillVoiceSelect($("speak-voice"));
  updateCount();
}

/** The loaded families (from /v1/models), the default family selected. */
function fillModelSelect() {
  const select = $("speak-model");
  const previous = select.value;
  const families = store.models.filter((card) => card.id === card.family);
  // OpenAI's names speak with the default family.
  const fallback = store.models.find((card) => card.id === "tts-1");
  select.replaceChildren(...families.map((card) => el("option", { value: card.id }, card.id)));
  if (families.some((card) => card.id === previous)) select.value = previous;
  else if (fallback) select.value = fallback.family;
  showTags();
}

/** The selected model's paralinguistic tags as buttons that insert the tag at the cursor. */
function showTags() {
  const card = store.models.find((m) => m.id === $("speak-model").value);
  const tags = (card && card.tags) || [];
  const list = $("speak-tag-list");
  list.replaceChildren(
    ...tags.map((tag) => {
      const button = el("button", { type: "button", class: "secondary tag" }, tag);
      button.addEventListener("click", () => insertTag(tag));
      return el("li", {}, button);
    }),
  );
  $("speak-tags").hidden = tags.length === 0;
}

function insertTag(tag) {
  const text = $("speak-text");
  const { selectionStart: start, selectionEnd: end, value } = text;
  const before = value.slice(0, start);
  const spaced = (before && !/\s$/.test(before) ? " " : "") + tag + " ";
  text.value = before + spaced + value.slice(end);
  const cursor = before.length + spaced.length;
  text.setSelectionRange(cursor, cursor);
  text.focus();
  updateCount();
}

function maxLength() {
  return Number(store.settings.MAX_TOTAL_LENGTH) || null;
}

function updateCount() {
  const count = $("speak-text").value.trim().length;
  const limit = maxLength();
  const out = $("speak-count");
  out.textContent = limit ? `${count} / ${limit} characters` : `${count} characters`;
  out.classList.toggle("over", Boolean(limit && count > limit));
}

function showSlider(input, changed) {
  $(`${input.id}-out`).textContent = Number(input.value).toFixed(2);
  input.dataset.changed = changed ? "true" : "";
  input.closest(".slider").classList.toggle("changed", changed);
}

function resetSliders() {
  for (const id of SLIDER_IDS) {
    const input = $(id);
    const param = input.dataset.param;
    const found = DEFAULT_SETTING[param].map((name) => store.settings[name]);
    const value = [...found, BUILT_IN_DEFAULT[param]].find((v) => typeof v === "number");
    if (value !== undefined) input.value = String(value);
    showSlider(input, false);
  }
}

/** The request body; sliders the user left alone are omitted so the server's defaults apply. */
function body() {
  const json = {
    input: $("speak-text").value,
    response_format: $("speak-format").value,
    stream_format: "audio",
  };
  const model = $("speak-model").value;
  if (model) json.model = model;
  const voice = $("speak-voice").value;
  if (voice) json.voice = voice;
  const language = $("speak-language").value;
  if (language) json.language = language;
  const seed = $("speak-seed").value.trim();
  if (seed !== "") json.seed = Number(seed);
  for (const id of SLIDER_IDS) {
    const input = $(id);
    if (input.dataset.changed) json[input.dataset.param] = Number(input.value);
  }
  return json;
}

async function speak() {
  const message = $("speak-message");
  clearMessage(message);
  const text = $("speak-text").value.trim();
  if (!text) {
    showMessage(message, "Type some text to speak.");
    $("speak-text").focus();
    return;
  }
  const limit = maxLength();
  if (limit && text.length > limit) {
    showMessage(
      message,
      `The text is ${text.length} characters; this server speaks at most ${limit} in one ` +
        "request. Use the Long text view for longer texts.",
    );
    return;
  }
  if (active) active.abort();
  const controller = new AbortController();
  active = controller;
  const audio = $("speak-audio");
  const format = $("speak-format").value;
  const playback = createPlayback(audio, format); // inside the click: audio may start
  const submit = $("speak-submit");
  submit.disabled = true;
  $("speak-stop").disabled = false;
  resetResult(playback.mode);
  const started = performance.now();
  try {
    const response = await request("v1/audio/speech", {
      method: "POST",
      json: body(),
      signal: controller.signal,
    });
    const warning = response.headers.get("X-Chatterbox-Warning");
    const ignored = response.headers.get("X-Chatterbox-Ignored-Fields");
    const notes = [warning, ignored && `this model ignores ${ignored}`].filter(Boolean);
    if (notes.length) showMessage(message, `Server note: ${notes.join("; ")}.`, "info");
    let firstAudio = null;
    const { blob, audioSeconds, lastByteAt } = await playback.play(response, () => {
      firstAudio = (performance.now() - started) / 1000;
      $("speak-ttfa").textContent = formatSeconds(firstAudio);
    });
    const total = (lastByteAt - started) / 1000;
    showResult({ blob, audioSeconds, total, format });
  } catch (err) {
    playback.stop();
    if (err.name === "AbortError") showMessage(message, "Stopped.", "info");
    else showMessage(message, errorText(err));
  } finally {
    if (active === controller) active = null;
    submit.disabled = false;
    $("speak-stop").disabled = true;
  }
}

let downloadUrl = null;

function resetResult(mode) {
  $("speak-result").hidden = false;
  for (const id of ["speak-ttfa", "speak-total", "speak-duration", "speak-rtf"]) {
    $(id).textContent = "…";
  }
  $("speak-mode").textContent = MODE_LABELS[mode];
  $("speak-download").hidden = true;
}

function showResult({ blob, audioSeconds, total, format }) {
  $("speak-total").textContent = formatSeconds(total);
  $("speak-duration").textContent = formatSeconds(audioSeconds);
  $("speak-rtf").textContent = Number.isFinite(audioSeconds) && audioSeconds > 0 ? (total / audioSeconds).toFixed(3) : "–";
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = URL.createObjectURL(blob);
  const link = $("speak-download");
  link.href = downloadUrl;
  link.download = `speech.${format}`;
  link.textContent = `Download ${format} (${(blob.size / 1024).toFixed(1)} KiB)`;
  link.hidden = false;
}
