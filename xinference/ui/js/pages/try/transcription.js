// Try it, speech to text: an uploaded audio file transcribed.

import { api } from "../../api.js";
import { field, fill, h } from "../../dom.js";
import { chosenFile, running } from "./form.js";

export function transcriptionView(pane, model, code, signal) {
  const file = h("input", { type: "file", accept: "audio/*", id: "audio-file", required: true });
  const language = h("input", { name: "language", placeholder: "e.g. en", autocomplete: "off" });
  const prompt = h("input", { name: "prompt", autocomplete: "off" });
  const format = h(
    "select",
    { name: "response_format" },
    ["json", "text", "verbose_json", "srt", "vtt"].map((f) => h("option", { value: f }, f)),
  );
  const out = h("div", { id: "transcription-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Transcribe");
  const form = h(
    "form",
    {},
    field("Audio file", file),
    h(
      "div",
      { class: "grid3" },
      field("Language", language),
      field("Prompt", prompt),
      field("Format", format),
    ),
    h("div", { class: "row" }, go),
    out,
  );
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = chosenFile(file, out, "Choose an audio file first");
    if (!f) return;
    const fields = { model: model.id, response_format: format.value };
    if (language.value.trim()) fields.language = language.value.trim();
    if (prompt.value.trim()) fields.prompt = prompt.value.trim();
    code.update("transcription", { file: f.name, ...fields });
    const fd = new FormData();
    fd.append("file", f, f.name);
    for (const [k, v] of Object.entries(fields)) fd.append(k, v);
    await running(go, out, async () => {
      const res = await api("POST", "/v1/audio/transcriptions", fd, { signal });
      if (typeof res === "string") fill(out, h("pre", { class: "output" }, res));
      else {
        fill(
          out,
          h("blockquote", { class: "result" }, res.text),
          res.segments || res.words
            ? h("pre", { class: "output" }, JSON.stringify(res, null, 2))
            : null,
        );
      }
    });
  });
}
