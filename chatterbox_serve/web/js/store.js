// What several views share: the server's settings, its languages and the voice library.

import { getJson } from "./api.js";
import { el } from "./ui.js";

// OpenAI's voice names; the server maps each to its default voice (README, "voice").
export const OPENAI_VOICES = [
  "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
  "verse", "marin", "cedar",
];

export const store = {
  engine: null,
  settings: {},
  languages: [],
  models: [], // /v1/models cards: {id, family, tags}

  voices: [],
  defaultVoice: null,
  voicesAvailable: true,
  events: new EventTarget(),
};

export async function loadConfig() {
  const config = await getJson("config");
  store.engine = config.engine;
  store.settings = config.settings || {};
  store.events.dispatchEvent(new Event("config"));
}

export async function loadLanguages() {
  const body = await getJson("languages");
  store.languages = body.languages || [];
  store.events.dispatchEvent(new Event("languages"));
}

export async function loadModels() {
  const body = await getJson("v1/models");
  store.models = body.data || [];
  store.events.dispatchEvent(new Event("models"));
}

export async function loadVoices() {
  try {
    const [list, def] = await Promise.all([getJson("voices"), getJson("voices/default")]);
    store.voices = list.voices || [];
    store.defaultVoice = def.default_voice || null;
    store.voicesAvailable = true;
  } catch (err) {
    if (err.status !== 404) throw err;
    store.voices = []; // this server runs without a voice library
    store.defaultVoice = null;
    store.voicesAvailable = false;
  }
  store.events.dispatchEvent(new Event("voices"));
}

/** Refill a voice <select>, keeping the current choice when it still exists. */
export function fillVoiceSelect(select) {
  const previous = select.value;
  const defaultLabel = store.defaultVoice
    ? `Default voice (${store.defaultVoice})`
    : "Default voice (built-in)";
  const options = [el("option", { value: "" }, defaultLabel)];
  if (store.voices.length) {
    const group = el("optgroup", { label: "Library voices" });
    for (const voice of store.voices) {
      group.append(el("option", { value: voice.name }, voice.name));
      for (const alias of voice.aliases || []) {
        group.append(el("option", { value: alias }, `${alias} (alias of ${voice.name})`));
      }
    }
    options.push(group);
  }
  const openai = el("optgroup", { label: "OpenAI names (use the default voice)" });
  for (const name of OPENAI_VOICES) openai.append(el("option", { value: name }, name));
  options.push(openai);
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

export function fillLanguageSelect(select, { auto }) {
  const previous = select.value;
  const options = auto ? [el("option", { value: "" }, "The voice's language")] : [];
  for (const lang of store.languages) {
    const option = el("option", { value: lang.code }, `${lang.name} (${lang.code})`);
    // What a form reset returns to: the voice's language, else English.
    option.defaultSelected = !auto && lang.code === "en";
    options.push(option);
  }
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  else if (!auto && [...select.options].some((o) => o.value === "en")) select.value = "en";
}
