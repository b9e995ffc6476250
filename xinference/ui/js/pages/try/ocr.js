// Try it, OCR: the text read from an uploaded image.

import { api } from "../../api.js";
import { field, fill, h } from "../../dom.js";
import { chosenFile, running } from "./form.js";

export function ocrView(pane, model, code, signal) {
  const file = h("input", { type: "file", accept: "image/*", id: "ocr-file" });
  const out = h("div", { id: "ocr-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Read text");
  const form = h("form", {}, field("Image", file), h("div", { class: "row" }, go), out);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = chosenFile(file, out, "Choose an image first");
    if (!f) return;
    code.update("ocr", { file: f.name, model: model.id });
    const fd = new FormData();
    fd.append("model", model.id);
    fd.append("image", f, f.name);
    await running(go, out, async () => {
      const res = await api("POST", "/v1/images/ocr", fd, { signal });
      const text = typeof res === "string" ? res : (res.text ?? JSON.stringify(res, null, 2));
      const lines = (res && res.data) || [];
      fill(
        out,
        h("pre", { class: "output", id: "ocr-text" }, text),
        lines.length
          ? h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                {},
                h(
                  "thead",
                  {},
                  h(
                    "tr",
                    {},
                    ["Text", "Score"].map((c) => h("th", { scope: "col" }, c)),
                  ),
                ),
                h(
                  "tbody",
                  {},
                  lines.map((d) =>
                    h(
                      "tr",
                      {},
                      h("td", {}, d.text),
                      h("td", {}, typeof d.score === "number" ? d.score.toFixed(3) : "–"),
                    ),
                  ),
                ),
              ),
            )
          : null,
      );
    });
  });
}
