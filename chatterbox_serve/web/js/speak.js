// Speak: one request to /v1/audio/speech, streamed, played as it arrives.

import { request } from "./api.js";
import { createPlayback, MODE_LABELS } from "./player.js";
import { fillLanguageSelect, fillVoiceSelect, store } from "./store.js";
import { $, clearMessage, errorText, formatSeconds, showMessage } from "./ui.js";

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
  store.events.addEventListener("languages", () =>
    fillLanguageSelect($("speak-language"), { auto: true }),
  );
  fillVoiceSelect($("speak-voice"));
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
    model: "chatterbox",
    input: $("speak-text").value,
    response_format: $("speak-format").value,
    stream_format: "audio",
  };
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
    if (warning) showMessage(message, `Server note: ${warning}.`, "info");
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
