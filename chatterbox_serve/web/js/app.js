// Entry point: tabs, the API key dialog, and loading what every view needs.

import { currentKey, setKey } from "./api.js";
import { initJobs, showJobs } from "./jobs.js";
import { initSpeak } from "./speak.js";
import { initStatus, showStatus } from "./status.js";
import { loadConfig, loadLanguages, loadModels, loadVoices, store } from "./store.js";
import { $, clearMessage, errorText, showMessage } from "./ui.js";
import { initVoices, showVoices } from "./voices.js";
import { initWatermark } from "./watermark.js";

const VIEWS = {
  speak: { tab: "tab-speak", panel: "view-speak" },
  voices: { tab: "tab-voices", panel: "view-voices", show: showVoices },
  long: { tab: "tab-long", panel: "view-long", show: showJobs },
  status: { tab: "tab-status", panel: "view-status", show: showStatus },
};

function select(name, { focus = false } = {}) {
  const view = VIEWS[name] ? name : "speak";
  for (const [key, { tab, panel }] of Object.entries(VIEWS)) {
    const on = key === view;
    $(tab).setAttribute("aria-selected", String(on));
    $(tab).tabIndex = on ? 0 : -1;
    $(panel).hidden = !on;
  }
  if (focus) $(VIEWS[view].tab).focus();
  if (location.hash.slice(1) !== view) history.replaceState(null, "", `#${view}`);
  if (ready && VIEWS[view].show) VIEWS[view].show();
}

function initTabs() {
  const names = Object.keys(VIEWS);
  for (const name of names) {
    const tab = $(VIEWS[name].tab);
    tab.addEventListener("click", () => select(name));
    tab.addEventListener("keydown", (event) => {
      const i = names.indexOf(name);
      const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: names.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      select(names[(moves[event.key] + names.length) % names.length], { focus: true });
    });
  }
  window.addEventListener("hashchange", () => select(location.hash.slice(1)));
}

function openKeyDialog(reason) {
  const dialog = $("key-dialog");
  $("key-reason").textContent = reason
    ? `${reason} Enter an API key; it is kept in this browser only.`
    : "This server may need an API key. It is kept in this browser only and sent as an Authorization header.";
  $("key-input").value = currentKey();
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

function initKeyDialog() {
  $("key-button").addEventListener("click", () => openKeyDialog(""));
  $("key-dialog").addEventListener("close", () => {
    const choice = $("key-dialog").returnValue;
    if (choice === "save") setKey($("key-input").value.trim());
    else if (choice === "forget") setKey("");
    else return;
    start();
  });
  window.addEventListener("chatterbox:unauthorized", (event) => {
    showMessage($("global-message"), `${event.detail} Set the API key with the “API key” button.`);
    if (!$("key-dialog").open) openKeyDialog(event.detail);
  });
}

function showEngine() {
  const badge = $("engine-badge");
  const simulated = store.engine === "simulated";
  badge.textContent = `engine: ${store.engine}`;
  badge.className = `badge ${simulated ? "simulated" : "real"}`;
  $("simulated-banner").hidden = !simulated;
}

let ready = false;

async function start() {
  try {
    await loadConfig();
    clearMessage($("global-message"));
    showEngine();
    await Promise.all([loadLanguages(), loadModels(), loadVoices()]);
    ready = true;
    select(location.hash.slice(1));
  } catch (err) {
    if (err.status !== 401) showMessage($("global-message"), `Cannot load the server's settings: ${errorText(err)}`);
  }
}

initTabs();
initKeyDialog();
initSpeak();
initVoices();
initJobs();
initStatus();
initWatermark();
select(location.hash.slice(1));
start();
