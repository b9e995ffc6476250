// Try it, completion: text continued from a prompt, streamed or whole.

import { field, fill, h } from "../../dom.js";
import { ctrlEnter, running, sampling } from "./form.js";
import { complete } from "./stream.js";

export function completionView(pane, model, code, signal) {
  const prompt = h("textarea", {
    rows: "4",
    id: "completion-prompt",
    name: "prompt",
    value: "Once upon a time",
  });
  const s = sampling();
  const out = h("pre", { class: "output", id: "completion-output", "aria-live": "polite" });
  const status = h("div", {});
  const go = h("button", { type: "submit", class: "primary" }, "Generate");
  const form = h(
    "form",
    {},
    field("Prompt", prompt, "Ctrl+Enter generates"),
    s.el,
    h("div", { class: "row" }, go),
    status,
    out,
  );
  ctrlEnter(form);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { model: model.id, prompt: prompt.value, ...s.params() };
    code.update("completion", { ...body, stream: s.stream });
    fill(out, h("span", { class: "prompt-echo" }, prompt.value));
    await running(go, status, async () => {
      const append = (c) => c.text && out.append(c.text);
      await complete("/v1/completions", body, s.stream, append, signal);
    });
  });
}
