// Try it, text to speech: spoken text played and offered for download.

import { send } from "../../api.js";
import { field, fill, h } from "../../dom.js";
import { num, running } from "./form.js";

export function speechView(pane, model, code, signal) {
  const text = h("textarea", {
    rows: "3",
    id: "speech-input",
    value: "Hello! This voice comes from Xinference.",
  });
  // The voices the model answers to (its description lists them); none: the default voice.
  const voices = model.voices || [];
  const voice = voices.length
    ? h(
        "select",
        { name: "voice" },
        voices.map((v) => h("option", { value: v }, v)),
      )
    : h("input", { name: "voice", placeholder: "the model's default", autocomplete: "off" });
  const format = h(
    "select",
    { name: "response_format" },
    ["mp3", "wav", "opus", "flac", "aac", "pcm"].map((f) => h("option", { value: f }, f)),
  );
  format.value = "wav";
  const speed = num("1", { min: "0.25", max: "4", step: "0.05", name: "speed" });
  const out = h("div", { id: "speech-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Speak");
  const form = h(
    "form",
    {},
    field("Text", text),
    h(
      "div",
      { class: "grid4" },
      field("Voice", voice),
      field("Format", format),
      field("Speed", speed),
    ),
    h("div", { class: "row" }, go),
    out,
  );
  pane.append(form);
  let url = null;
  signal.addEventListener("abort", () => url && URL.revokeObjectURL(url));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      model: model.id,
      input: text.value,
      voice: voice.value.trim() || undefined,
      response_format: format.value,
      speed: Number(speed.value),
    };
    if (body.voice === undefined) delete body.voice;
    code.update("speech", body);
    await running(go, out, async () => {
      const resp = await send("POST", "/v1/audio/speech", body, { signal });
      const blob = await resp.blob();
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(blob);
      fill(
        out,
        h("audio", { controls: true, src: url }),
        h("a", { href: url, download: `speech.${format.value}` }, "Download"),
        h("span", { class: "muted" }, ` ${blob.type || format.value}, ${blob.size} bytes`),
      );
    });
  });
}
