// Try it, rerank: documents ordered by relevance to a query.

import { api } from "../../api.js";
import { field, fill, h } from "../../dom.js";
import { ctrlEnter, num, running } from "./form.js";

export function rerankView(pane, model, code, signal) {
  const query = h("input", { id: "rerank-query", value: "What is the capital of France?" });
  const docs = h("textarea", {
    rows: "5",
    id: "rerank-docs",
    value:
      "Paris is the capital of France.\nBerlin is the capital of Germany.\n" +
      "The Eiffel Tower is in Paris.\nBananas are yellow.",
  });
  const topN = num("", { min: "1", step: "1", name: "top_n" });
  const out = h("div", { id: "rerank-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Rerank");
  const form = h(
    "form",
    {},
    field("Query", query),
    field("Documents", docs, "One per line"),
    h("div", { class: "grid4" }, field("Top n", topN)),
    h("div", { class: "row" }, go),
    out,
  );
  ctrlEnter(form);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const documents = docs.value
      .split("\n")
      .map((d) => d.trim())
      .filter(Boolean);
    const body = { model: model.id, query: query.value, documents, return_documents: true };
    if (topN.value) body.top_n = Number(topN.value);
    code.update("rerank", body);
    await running(go, out, async () => {
      const res = await api("POST", "/v1/rerank", body, { signal });
      const max = Math.max(...res.results.map((r) => Math.abs(r.relevance_score)), 1e-9);
      fill(
        out,
        h(
          "ol",
          { class: "ranked" },
          res.results.map((r) =>
            h(
              "li",
              {},
              h("span", { class: "score" }, r.relevance_score.toFixed(4)),
              h(
                "span",
                { class: "doc" },
                r.document ? (r.document.text ?? r.document) : documents[r.index],
              ),
              h("span", {
                class: "bar",
                style: `width:${((Math.abs(r.relevance_score) / max) * 100).toFixed(0)}%`,
              }),
            ),
          ),
        ),
      );
    });
  });
}
