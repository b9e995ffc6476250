// Form helpers shared by the Try-it views: number inputs, the generation settings of chat
// and completion, a busy submit button, running a request with its error shown, Ctrl+Enter
// submission and a required file input.

import { errorBox, field, fill, h } from "../../dom.js";

export function num(value, { min, max, step = "any", name }) {
  return h("input", { type: "number", value, min, max, step, name });
}

/** Generation settings shared by chat and completion: max_tokens, temperature, stop. */
export function sampling() {
  const maxTokens = num("256", { min: "1", step: "1", name: "max_tokens" });
  const temperature = num("0.7", { min: "0", max: "2", step: "0.1", name: "temperature" });
  const stop = h("input", { name: "stop", placeholder: "e.g. ###", autocomplete: "off" });
  const streamBox = h("input", { type: "checkbox", name: "stream", checked: true });
  return {
    el: h(
      "div",
      { class: "grid4" },
      field("Max tokens", maxTokens),
      field("Temperature", temperature),
      field("Stop", stop, "Comma-separated"),
      h("div", { class: "field check" }, h("label", {}, streamBox, " Stream")),
    ),
    params() {
      const p = {};
      if (maxTokens.value) p.max_tokens = Number(maxTokens.value);
      if (temperature.value !== "") p.temperature = Number(temperature.value);
      const s = stop.value
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean);
      if (s.length) p.stop = s;
      return p;
    },
    get stream() {
      return streamBox.checked;
    },
  };
}

export function busy(button, on, label) {
  button.disabled = on;
  button.setAttribute("aria-busy", String(on));
  if (label) button.textContent = label;
}

/** Run a request's `work` with `go` busy and `out` emptied first; an error other than an abort
 * is shown in `out`. */
export async function running(go, out, work) {
  busy(go, true);
  fill(out);
  try {
    await work();
  } catch (e) {
    if (e.name !== "AbortError") fill(out, errorBox(e));
  } finally {
    busy(go, false);
  }
}

/** Submit a form with Ctrl/Cmd+Enter from any of its text areas. */
export function ctrlEnter(form) {
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
}


/** The file chosen in the file input `file`, or null after showing `message` in `out` and
 * focusing the input. */
export function chosenFile(file, out, message) {
  const f = file.files[0];
  if (!f) {
    fill(out, errorBox(new Error(message)));
    file.focus();
  }
  return f || null;
}
