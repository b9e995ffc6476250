// Register: a custom model from JSON (pasted or from a file) with
// POST /v1/model_registrations/{type}; the server's validation message is shown next to the
// field it names. Custom registrations are listed with an Unregister button.

import { api } from "../api.js";
import { confirmDialog, errorBox, field, fill, h } from "../dom.js";
import { MODEL_TYPES } from "./launch.js";

/** Starting points in the JSON shapes of Xinference's "Custom Models" documentation. */
const EXAMPLES = {
  LLM: {
    version: 2,
    context_length: 2048,
    model_name: "my-llm",
    model_lang: ["en"],
    model_ability: ["generate", "chat"],
    model_specs: [
      {
        model_format: "pytorch",
        model_size_in_billions: 1,
        quantizations: ["none"],
        model_id: "org/my-llm",
        model_uri: "file:///path/to/my-llm",
      },
    ],
  },
  embedding: {
    version: 2,
    model_name: "my-embedding",
    dimensions: 384,
    max_tokens: 512,
    language: ["en"],
    model_specs: [
      {
        model_format: "pytorch",
        model_id: "org/my-embedding",
        model_uri: "file:///path/to/my-embedding",
      },
    ],
  },
  rerank: {
    version: 2,
    model_name: "my-reranker",
    language: ["en"],
    model_specs: [
      {
        model_format: "pytorch",
        model_id: "org/my-reranker",
        model_uri: "file:///path/to/my-reranker",
      },
    ],
  },
  image: {
    model_name: "my-sd",
    model_family: "stable_diffusion",
    model_uri: "file:///path/to/sd",
    model_ability: ["text2image"],
  },
  audio: {
    model_name: "my-whisper",
    model_family: "whisper",
    model_uri: "file:///path/to/whisper",
    model_ability: ["audio2text"],
  },
  video: {
    model_name: "my-video",
    model_uri: "file:///path/to/model",
    model_ability: ["text2video"],
  },
};

/**
 * The server's message split into `{field, message}` items: pydantic's
 * "Invalid X model definition: a.b: msg; c: msg", or a JSON syntax error with its line and
 * column (`{line, column, message}`).
 */
export function parseRegisterError(message, param) {
  const pos = /line (\d+) column (\d+)/.exec(message);
  if (pos) return [{ line: Number(pos[1]), column: Number(pos[2]), message }];
  const m = /^Invalid \S+ model definition: (.*)$/s.exec(message);
  if (!m) return [{ field: param || null, message }];
  return m[1].split("; ").map((part) => {
    const i = part.indexOf(": ");
    return i > 0
      ? { field: part.slice(0, i), message: part.slice(i + 2) }
      : { field: null, message: part };
  });
}

/** 1-based line and column of the key a dotted pydantic path ends in ("model_specs.0.x"). */
function locate(text, path) {
  const keys = path.split(".").filter((k) => !/^\d+$/.test(k));
  let from = -1;
  for (const key of keys) {
    const at = text.indexOf(JSON.stringify(key), from + 1);
    if (at < 0) break;
    from = at;
  }
  if (from < 0) return null;
  const before = text.slice(0, from);
  return { line: before.split("\n").length, offset: from };
}

function offsetOf(text, line, column) {
  const lines = text.split("\n");
  let off = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) off += lines[i].length + 1;
  return off + Math.max(0, column - 1);
}

export async function render(main, args, signal) {
  const typeSel = h(
    "select",
    { id: "register-type", name: "model_type" },
    MODEL_TYPES.map((t) => h("option", { value: t }, t)),
  );
  if (MODEL_TYPES.includes(args[0])) typeSel.value = args[0];
  const persist = h("input", { type: "checkbox", id: "register-persist", name: "persist" });
  const text = h("textarea", {
    id: "register-json",
    rows: "16",
    spellcheck: "false",
    "aria-describedby": "register-problems",
    class: "mono",
  });
  const fileIn = h("input", {
    type: "file",
    accept: ".json,application/json",
    id: "register-file",
  });
  const problems = h("div", { id: "register-problems", "aria-live": "polite" });
  const hint = () =>
    h(
      "p",
      { class: "muted" },
      "The server's verdict appears here, ",
      "each message next to the field it names.",
    );
  const button = h(
    "button",
    { type: "submit", class: "primary", id: "register-button" },
    "Register",
  );
  const example = h(
    "button",
    {
      type: "button",
      onclick: () => {
        text.value = JSON.stringify(EXAMPLES[typeSel.value], null, 2);
        fill(problems, hint());
        text.focus();
      },
    },
    "Insert example",
  );
  const listEl = h("div", { id: "custom-models", "aria-live": "polite" });

  const form = h(
    "form",
    { class: "panel register-form" },
    h(
      "div",
      { class: "grid4" },
      field("Model type", typeSel),
      field("JSON file", fileIn),
      h(
        "div",
        { class: "field check" },
        h("label", {}, persist, " Persist (survives a server restart)"),
      ),
    ),
    h(
      "div",
      { class: "json-editor" },
      field("Model definition (JSON)", text),
      h("div", { class: "problems-panel" }, problems),
    ),
    h("div", { class: "row" }, button, example),
  );
  main.append(
    h("h1", {}, "Register a custom model"),
    h(
      "p",
      { class: "muted" },
      "Paste the model's JSON or load it from a file. ",
      "The server checks it and says what is wrong.",
    ),
    form,
    h("h2", {}, "Custom models"),
    listEl,
  );

  fileIn.addEventListener("change", async () => {
    const f = fileIn.files[0];
    if (!f) return;
    text.value = await f.text();
    fill(problems, hint());
    try {
      // the type in the file, when it names one
      const t = JSON.parse(text.value).model_type;
      if (MODEL_TYPES.includes(t)) typeSel.value = t;
    } catch {
      /* the server reports bad JSON */
    }
  });

  function jump(offset) {
    text.focus();
    text.setSelectionRange(offset, offset);
    const line = text.value.slice(0, offset).split("\n").length;
    const lh = parseFloat(getComputedStyle(text).lineHeight) || 18;
    text.scrollTop = Math.max(0, (line - 3) * lh);
  }

  function showProblems(err) {
    const items = parseRegisterError(err.message, err.param);
    const rows = items
      .filter((it) => it.field || it.line)
      .map((it) => {
        let where = null;
        if (it.line) {
          const off = offsetOf(text.value, it.line, it.column);
          where = h(
            "button",
            { type: "button", class: "link", onclick: () => jump(off) },
            `line ${it.line}, column ${it.column}`,
          );
        } else if (it.field) {
          const loc = locate(text.value, it.field);
          where = loc
            ? h(
                "button",
                { type: "button", class: "link", onclick: () => jump(loc.offset) },
                `${it.field} (line ${loc.line})`,
              )
            : h("code", {}, it.field);
        }
        return h("li", { "data-field": it.field || "" }, where, where ? ": " : null, it.message);
      });
    const head =
      items.length > 1 || items[0].field ? err.message.replace(/:.*$/s, ":") : err.message;
    fill(
      problems,
      h(
        "div",
        { class: "error", role: "alert" },
        h("strong", {}, err.status ? `Error ${err.status}: ` : "Error: "),
        head,
        rows.length ? h("ul", { class: "problems" }, rows) : null,
      ),
    );
    text.setAttribute("aria-invalid", "true");
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    fill(problems, hint());
    text.removeAttribute("aria-invalid");
    if (!text.value.trim()) {
      showProblems(new Error("Paste a model definition or choose a JSON file"));
      return;
    }
    button.disabled = true;
    try {
      // The text goes as written: the server parses it and reports its own errors.
      const res = await api("POST", `/v1/model_registrations/${typeSel.value}`, {
        model: text.value,
        persist: persist.checked,
      });
      fill(
        problems,
        h(
          "p",
          { class: "ok", role: "status" },
          `Registered ${res.model_type} model ${res.model_name}. `,
          h("a", { href: `#/launch/${res.model_type}` }, "Launch it"),
        ),
      );
      await loadList();
    } catch (e) {
      showProblems(e);
    } finally {
      button.disabled = false;
    }
  });

  async function loadList() {
    const rows = [];
    try {
      const all = await Promise.all(
        MODEL_TYPES.map((t) =>
          api("GET", `/v1/model_registrations/${t}`, undefined, { signal }).then((regs) =>
            regs.filter((r) => !r.is_builtin).map((r) => ({ ...r, type: t })),
          ),
        ),
      );
      rows.push(...all.flat());
    } catch (e) {
      if (!signal.aborted) fill(listEl, errorBox(e));
      return;
    }
    if (!rows.length) {
      fill(listEl, h("p", { class: "empty" }, "No custom model is registered."));
      return;
    }
    const status = h("div", { "aria-live": "polite" });
    fill(
      listEl,
      status,
      h(
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
              ["Name", "Type", ""].map((c) => h("th", { scope: "col" }, c)),
            ),
          ),
          h(
            "tbody",
            {},
            rows.map((r) => {
              const un = h(
                "button",
                {
                  type: "button",
                  class: "danger small",
                  "aria-label": `Unregister ${r.model_name}`,
                  "data-unregister": r.model_name,
                  onclick: async () => {
                    if (
                      !(await confirmDialog(
                        `Unregister ${r.type} model ${r.model_name}?`,
                        "Unregister",
                      ))
                    ) {
                      un.focus();
                      return;
                    }
                    try {
                      await api(
                        "DELETE",
                        `/v1/model_registrations/${r.type}/${encodeURIComponent(r.model_name)}`,
                      );
                      await loadList();
                      fill(
                        problems,
                        h("p", { class: "ok", role: "status" }, `Unregistered ${r.model_name}.`),
                      );
                    } catch (e) {
                      fill(status, errorBox(e));
                    }
                  },
                },
                "Unregister",
              );
              return h(
                "tr",
                { "data-model": r.model_name },
                h("td", {}, r.model_name),
                h("td", {}, r.type),
                h("td", { class: "actions" }, un),
              );
            }),
          ),
        ),
      ),
    );
  }
  fill(problems, hint());
  await loadList();
}
