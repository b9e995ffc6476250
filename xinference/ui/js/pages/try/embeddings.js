// Try it, embeddings: two texts embedded and their cosine similarity.

import { api } from "../../api.js";
import { field, fill, h } from "../../dom.js";
import { ctrlEnter, num, running } from "./form.js";

/** Cosine similarity of two equal-length vectors. */
export function cosine(a, b) {
  let dot = 0,
    na = 0,
    nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na) * Math.sqrt(nb) || 1);
}

export function embeddingsView(pane, model, code, signal) {
  const a = h("textarea", { rows: "2", id: "embed-a", value: "A cat sits on the mat." });
  const b = h("textarea", { rows: "2", id: "embed-b", value: "A kitten rests on a rug." });
  const dims = num("", { min: "1", step: "1", name: "dimensions" });
  dims.placeholder = model.dimensions ? `${model.dimensions} (full)` : "full";
  const out = h("div", { id: "embed-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Embed");
  const form = h(
    "form",
    {},
    h("div", { class: "grid2" }, field("Text A", a), field("Text B", b)),
    h("div", { class: "grid4" }, field("Dimensions", dims, "Matryoshka models only")),
    h("div", { class: "row" }, go),
    out,
  );
  ctrlEnter(form);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { model: model.id, input: [a.value, b.value] };
    if (dims.value) body.dimensions = Number(dims.value);
    code.update("embeddings", body);
    await running(go, out, async () => {
      const res = await api("POST", "/v1/embeddings", body, { signal });
      const [va, vb] = res.data.map((d) => d.embedding);
      const sim = cosine(va, vb);
      const preview = (v) =>
        `[${v
          .slice(0, 6)
          .map((x) => x.toFixed(4))
          .join(", ")}, …]`;
      fill(
        out,
        h(
          "dl",
          { class: "facts result" },
          h("dt", {}, "Dimensions"),
          h("dd", { id: "embed-dims" }, String(va.length)),
          h("dt", {}, "Cosine similarity"),
          h("dd", { id: "embed-cosine" }, sim.toFixed(4)),
          h("dt", {}, "Vector A"),
          h("dd", {}, h("code", {}, preview(va))),
          h("dt", {}, "Vector B"),
          h("dd", {}, h("code", {}, preview(vb))),
          res.usage ? [h("dt", {}, "Tokens"), h("dd", {}, String(res.usage.total_tokens))] : null,
        ),
      );
    });
  });
}
