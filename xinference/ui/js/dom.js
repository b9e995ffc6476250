// Small DOM helpers shared by the pages: element creation, error boxes, dialogs, formatting.

/**
 * Create an element: h("button", {class: "primary", onclick: fn}, "Launch").
 * Attributes whose name starts with "on" become listeners; `false`/`null` ones are skipped;
 * children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let uniq = 0;
/** A page-unique element id with the given prefix. */
export const uid = (prefix) => `${prefix}-${++uniq}`;

/** A labelled form field: label text, the control, optional hint. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id }, label),
    control,
    hint ? h("small", { class: "hint" }, hint) : null,
  );
}

/** An error box with the server's message (role=alert, read out by screen readers). */
export function errorBox(err) {
  const status = err && err.status ? `${err.status}` : null;
  return h(
    "div",
    { class: "error", role: "alert" },
    status ? h("strong", {}, `Error ${status}: `) : h("strong", {}, "Error: "),
    (err && err.message) || String(err),
  );
}

/** Replace the contents of `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A modal yes/no confirmation (native <dialog>: focus stays inside, Esc cancels). */
export function confirmDialog(message, okLabel = "OK") {
  return new Promise((resolve) => {
    const dlg = h(
      "dialog",
      { class: "confirm", "aria-label": "Confirm" },
      h(
        "form",
        { method: "dialog" },
        h("p", {}, message),
        h(
          "div",
          { class: "row end" },
          h("button", { value: "cancel", type: "submit" }, "Cancel"),
          h("button", { value: "ok", type: "submit", class: "danger" }, okLabel),
        ),
      ),
    );
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(dlg.returnValue === "ok");
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Bytes as "1.5 GiB". */
export function bytes(n) {
  if (n === null || n === undefined || isNaN(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Xinference's size "0_135" as "0.135B"; null as "–". */
export function sizeLabel(s) {
  return s === null || s === undefined || s === "" ? "–" : `${String(s).replace("_", ".")}B`;
}

/** A progress bar with a text label, value 0..1. */
export function meter(value, label) {
  const pct = Math.max(0, Math.min(1, value || 0)) * 100;
  return h(
    "div",
    {
      class: "meter",
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": pct.toFixed(0),
      "aria-label": label,
    },
    h("span", { style: `width:${pct.toFixed(1)}%` }),
  );
}

/** Move a bar made by meter() to `value` (0..1). */
export function setMeter(el, value) {
  const pct = Math.max(0, Math.min(1, value || 0)) * 100;
  el.setAttribute("aria-valuenow", pct.toFixed(0));
  el.firstChild.style.width = `${pct.toFixed(1)}%`;
}
