// The "check a file" box: does an audio file carry the Perth watermark this server applies.

import { request } from "./api.js";
import { store } from "./store.js";
import { $, busy, clearMessage, errorText, showMessage } from "./ui.js";

async function check() {
  const box = $("watermark-result");
  const file = $("watermark-file").files[0];
  if (!file) {
    showMessage(box, "Choose an audio file to check.");
    return;
  }
  clearMessage(box);
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await request("v1/audio/watermark/detect", { method: "POST", form });
    const found = await response.json();
    const sure = `confidence ${Math.round(found.confidence * 100)} %`;
    showMessage(
      box,
      found.watermarked ? `Watermarked (${sure}).` : `No watermark found (${sure}).`,
      found.watermarked ? "ok" : "info",
    );
  } catch (err) {
    showMessage(box, errorText(err));
  }
}

export function initWatermark() {
  $("watermark-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("watermark-submit"), check);
  });
  store.events.addEventListener("config", () => {
    if (store.settings.WATERMARK === "off") {
      $("watermark-hint").textContent =
        "This server's watermark is off (WATERMARK=off): its speech is not marked. " +
        "Files from elsewhere can still be checked.";
    }
  });
}
