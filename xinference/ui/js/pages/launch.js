// Launch: the registrations of each model type, searchable and filterable by ability; for
// the chosen model the engine / format / size / quantization rows of GET /v1/engines/{name},
// then POST /v1/models with launch progress from /v1/models/{uid}/progress.

import { api, ApiError } from "../api.js";
import { errorBox, field, fill, h, meter, setMeter, sizeLabel } from "../dom.js";

export const MODEL_TYPES = ["LLM", "embedding", "rerank", "image", "audio", "video"];
const cache = new Map(); // model type -> registrations (detailed), for this page visit

async function registrations(type, signal) {
  if (!cache.has(type)) {
    cache.set(
      type,
      api("GET", `/v1/model_registrations/${type}?detailed=true`, undefined, { signal }).catch(
        (e) => {
          cache.delete(type);
          throw e;
        },
      ),
    );
  }
  return cache.get(type);
}

const abilities = (reg) => reg.model_ability || [];

export async function render(main, args, signal) {
  cache.clear();
  let type = MODEL_TYPES.includes(args[0]) ? args[0] : "LLM";
  const search = h("input", {
    type: "search",
    placeholder: "Search models",
    "aria-label": "Search models",
    id: "model-search",
  });
  const abilitySel = h("select", { id: "ability-filter", "aria-label": "Filter by ability" });
  const tabs = MODEL_TYPES.map((t) =>
    h(
      "button",
      {
        type: "button",
        role: "tab",
        class: "tab",
        "data-type": t,
        onclick: () => {
          type = t;
          selected = null;
          showList();
        },
      },
      t,
    ),
  );
  const list = h("div", { class: "model-list", id: "model-list", "aria-live": "polite" });
  const form = h(
    "section",
    { class: "panel launch-panel", id: "launch-panel", "aria-label": "Launch options" },
    h("p", { class: "muted" }, "Choose a model to see its launch options."),
  );
  let selected = null;

  main.append(
    h("h1", {}, "Launch a model"),
    h("div", { role: "tablist", class: "tabs", "aria-label": "Model type" }, tabs),
    h("div", { class: "row filters" }, search, abilitySel),
    h("div", { class: "launch-layout" }, list, form),
  );

  async function showList() {
    for (const t of tabs) t.setAttribute("aria-selected", String(t.dataset.type === type));
    fill(list, h("p", { class: "muted" }, "Loading…"));
    let regs;
    try {
      regs = await registrations(type, signal);
    } catch (e) {
      if (!signal.aborted) fill(list, errorBox(e));
      return;
    }
    const all = [...new Set(regs.flatMap(abilities))].sort();
    const prev = abilitySel.value;
    fill(
      abilitySel,
      h("option", { value: "" }, all.length ? "All abilities" : "No abilities"),
      all.map((a) => h("option", { value: a }, a)),
    );
    abilitySel.value = all.includes(prev) ? prev : "";
    abilitySel.hidden = !all.length; // embedding and rerank families name none
    const q = search.value.trim().toLowerCase();
    const shown = regs.filter(
      (r) =>
        (!q ||
          r.model_name.toLowerCase().includes(q) ||
          (r.model_description || "").toLowerCase().includes(q)) &&
        (!abilitySel.value || abilities(r).includes(abilitySel.value)),
    );
    if (!regs.length) {
      fill(
        list,
        h(
          "p",
          { class: "empty" },
          `No ${type} models are registered. `,
          h("a", { href: "#/register" }, "Register one"),
          ".",
        ),
      );
      return;
    }
    if (!shown.length) {
      fill(list, h("p", { class: "empty" }, "No model matches the search."));
      return;
    }
    fill(
      list,
      shown.map((r) =>
        h(
          "button",
          {
            type: "button",
            class: "model-card",
            "data-model": r.model_name,
            "aria-pressed": String(selected === r.model_name),
            onclick: () => {
              selected = r.model_name;
              showList();
              showForm(r);
            },
          },
          h("span", { class: "name" }, r.model_name),
          h(
            "span",
            { class: "badges" },
            r.is_builtin ? null : h("span", { class: "badge" }, "custom"),
            abilities(r).map((a) => h("span", { class: "badge ability" }, a)),
          ),
          r.model_description ? h("span", { class: "desc" }, r.model_description) : null,
        ),
      ),
    );
  }

  async function showForm(reg) {
    fill(form, h("h2", {}, reg.model_name), h("p", { class: "muted" }, "Loading engines…"));
    let engines;
    try {
      engines = await api("GET", `/v1/engines/${encodeURIComponent(reg.model_name)}`, undefined, {
        signal,
      });
    } catch (e) {
      if (signal.aborted) return;
      // A model type without an engine here says so (400 from the server).
      fill(
        form,
        h("h2", {}, reg.model_name),
        h("p", { class: "cannot" }, `${type} models cannot be launched on this server yet.`),
        errorBox(e),
      );
      return;
    }
    if (selected !== reg.model_name) return;
    buildForm(form, reg, type, engines, signal);
    // On a phone the form sits below the list: bring it into view.
    if (matchMedia("(max-width: 760px)").matches) form.scrollIntoView({ block: "start" });
  }

  search.addEventListener("input", showList);
  abilitySel.addEventListener("change", showList);
  await showList();
}

/** The launch form for one registration; `engines` is GET /v1/engines/{name}. */
function buildForm(form, reg, type, engines, signal) {
  const names = Object.keys(engines);
  if (!names.length) {
    fill(
      form,
      h("h2", {}, reg.model_name),
      h("p", { class: "cannot" }, "No engine on this server can run this model."),
    );
    return;
  }
  const engineSel = h("select", { name: "model_engine" });
  const formatSel = h("select", { name: "model_format" });
  const sizeSel = h("select", { name: "model_size_in_billions" });
  const quantSel = h("select", { name: "quantization" });
  const why = h("p", { class: "warn", hidden: true });
  const uidIn = h("input", {
    name: "model_uid",
    placeholder: reg.model_name,
    autocomplete: "off",
    spellcheck: "false",
  });
  const replicaIn = h("input", { name: "replica", type: "number", min: "1", value: "1" });
  const ngpuIn = h("input", {
    name: "n_gpu",
    value: "auto",
    list: "n-gpu-values",
    autocomplete: "off",
  });
  const extraIn = h("textarea", {
    name: "extra",
    rows: "3",
    spellcheck: "false",
    placeholder: '{"n_ctx": 2048}',
  });
  const status = h("div", { class: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary", id: "launch-button" }, "Launch");

  const rows = () => engines[engineSel.value] || [];
  const usable = (e) => (engines[e] || []).some((r) => r.available !== false);
  fill(
    engineSel,
    names.map((e) => h("option", { value: e }, usable(e) ? e : `${e} (unavailable)`)),
  );
  engineSel.value = names.find(usable) || names[0];

  function options(sel, values, label = (v) => v) {
    const prev = sel.value;
    fill(
      sel,
      values.map((v) => h("option", { value: v }, label(v))),
    );
    if (values.includes(prev)) sel.value = prev;
  }
  function cascade() {
    const r = rows();
    options(formatSel, [...new Set(r.map((x) => x.model_format))]);
    const byFormat = r.filter((x) => x.model_format === formatSel.value);
    const sizes = [...new Set(byFormat.map((x) => String(x.model_size_in_billions ?? "")))];
    options(sizeSel, sizes, (s) => (s ? sizeLabel(s) : "–"));
    sizeSel.disabled = sizes.length === 1 && !sizes[0];
    const row = byFormat.find((x) => String(x.model_size_in_billions ?? "") === sizeSel.value);
    options(quantSel, row ? row.quantizations : []);
    const bad = row && row.available === false;
    why.hidden = !bad;
    why.textContent = bad ? `This engine cannot run here: ${row.unavailable_reason}` : "";
    button.disabled = !!bad;
  }
  engineSel.addEventListener("change", cascade);
  formatSel.addEventListener("change", cascade);
  sizeSel.addEventListener("change", cascade);
  cascade();

  const el = h(
    "form",
    { class: "launch-form", novalidate: true },
    h("h2", {}, reg.model_name),
    reg.model_description ? h("p", { class: "muted" }, reg.model_description) : null,
    h(
      "div",
      { class: "grid4 engine-row" },
      field("Engine", engineSel),
      field("Format", formatSel),
      field("Size", sizeSel),
      field("Quantization", quantSel),
    ),
    why,
    h(
      "div",
      { class: "grid3" },
      field("Model UID", uidIn, "Default: the model name"),
      field("Replicas", replicaIn),
      field("GPUs (n_gpu)", ngpuIn, "auto, 0 for CPU only, or a count"),
    ),
    h(
      "datalist",
      { id: "n-gpu-values" },
      ["auto", "0", "1", "2", "4"].map((v) => h("option", { value: v })),
    ),
    field("Extra options (JSON object)", extraIn, "Engine options, e.g. n_ctx, max_num_seqs"),
    h("div", { class: "row" }, button),
    status,
  );
  fill(form, el);

  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let extra = {};
    if (extraIn.value.trim()) {
      try {
        extra = JSON.parse(extraIn.value);
        if (typeof extra !== "object" || Array.isArray(extra) || extra === null) {
          throw new Error("must be a JSON object");
        }
      } catch (e) {
        fill(status, errorBox(new Error(`Extra options: ${e.message}`)));
        extraIn.focus();
        return;
      }
    }
    const ngpu = ngpuIn.value.trim();
    const body = {
      model_name: reg.model_name,
      model_type: type,
      model_engine: engineSel.value,
      model_format: formatSel.value || undefined,
      model_size_in_billions: sizeSel.value || undefined,
      quantization: quantSel.value || undefined,
      model_uid: uidIn.value.trim() || undefined,
      replica: Number(replicaIn.value) || 1,
      n_gpu: ngpu === "" ? undefined : /^\d+$/.test(ngpu) ? Number(ngpu) : ngpu,
      ...extra,
    };
    await launchModel(body, status, button, signal);
  });
}

/** POST /v1/models, showing progress while it loads and the server's error if it fails. */
async function launchModel(body, status, button, signal) {
  const uid = body.model_uid || body.model_name;
  const bar = meter(0, `Launching ${uid}`);
  const text = h("span", {}, `Launching ${uid}…`);
  fill(status, h("div", { class: "progress" }, text, bar));
  button.disabled = true;
  let done = false;
  const launched = api("POST", "/v1/models", body).finally(() => {
    done = true;
  });
  // Poll while the request is pending; the first poll waits so that a request the server
  // refuses at once (400/409) never polls a uid it does not know.
  const poll = (async () => {
    await new Promise((r) => setTimeout(r, 1000));
    while (!done && !signal.aborted) {
      try {
        const p = await api("GET", `/v1/models/${encodeURIComponent(uid)}/progress`);
        if (done) break;
        setMeter(bar, p.progress);
        text.textContent = `Launching ${uid}… ${Math.round(p.progress * 100)}%`;
      } catch (e) {
        if (!(e instanceof ApiError) || e.status !== 404) text.textContent = `Launching ${uid}…`;
      }
      await new Promise((r) => setTimeout(r, 700));
    }
  })();
  try {
    const res = await launched;
    await poll;
    fill(
      status,
      h(
        "div",
        { class: "ok", role: "status" },
        `Model ${res.model_uid} is running. `,
        h("a", { href: `#/try/${encodeURIComponent(res.model_uid)}` }, "Try it"),
        " · ",
        h("a", { href: "#/running" }, "Running models"),
      ),
    );
  } catch (e) {
    await poll;
    fill(status, errorBox(e));
  } finally {
    button.disabled = false;
  }
}
