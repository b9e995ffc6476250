// Try it: one view per ability of a running model (chat, completion, embeddings, rerank,
// speech-to-text, text-to-speech, text-to-image, OCR), each with the equivalent cURL and
// Python (OpenAI SDK) code of the request it sent.

import { api, send, stream } from "../api.js";
import { errorBox, field, fill, h } from "../dom.js";
import { codePanel } from "../snippets.js";

/** The Try-it views a running model offers, from its type and abilities. */
export function viewsFor(m) {
  const ab = m.model_ability || [];
  switch (m.model_type) {
    case "LLM": {
      const v = [];
      if (ab.includes("chat")) v.push("chat");
      if (ab.includes("generate")) v.push("completion");
      return v.length ? v : ["chat", "completion"];
    }
    case "embedding":
      return ["embeddings"];
    case "rerank":
      return ["rerank"];
    case "audio": {
      const v = [];
      if (ab.includes("audio2text") || !ab.length) v.push("transcription");
      if (ab.includes("text2audio")) v.push("speech");
      return v;
    }
    case "image": {
      const v = [];
      if (ab.includes("text2image") || !ab.length) v.push("image");
      if (ab.includes("ocr")) v.push("ocr");
      return v;
    }
    default:
      return [];
  }
}

const LABELS = {
  chat: "Chat",
  completion: "Completion",
  embeddings: "Embeddings",
  rerank: "Rerank",
  transcription: "Speech to text",
  speech: "Text to speech",
  image: "Text to image",
  ocr: "OCR",
};
const VIEWS = {
  chat: chatView,
  completion: completionView,
  embeddings: embeddingsView,
  rerank: rerankView,
  transcription: transcriptionView,
  speech: speechView,
  image: imageView,
  ocr: ocrView,
};

export async function render(main, args, signal) {
  const { data: models } = await api("GET", "/v1/models", undefined, { signal });
  main.append(h("h1", {}, "Try it"));
  if (!models.length) {
    main.append(
      h(
        "p",
        { class: "empty" },
        "No model is running. ",
        h("a", { href: "#/launch" }, "Launch one"),
        " first.",
      ),
    );
    return;
  }
  const model = models.find((m) => m.id === args[0]) || (args[0] ? null : models[0]);
  const picker = h(
    "select",
    {
      id: "try-model",
      onchange: () => {
        location.hash = `#/try/${encodeURIComponent(picker.value)}`;
      },
    },
    models.map((m) => h("option", { value: m.id }, `${m.id} (${m.model_type})`)),
  );
  main.append(h("div", { class: "row filters" }, field("Model", picker)));
  if (!model) {
    main.append(errorBox(new Error(`No running model has the uid ${args[0]}`)));
    picker.value = "";
    return;
  }
  picker.value = model.id;
  const views = viewsFor(model);
  if (!views.length) {
    main.append(
      h("p", { class: "empty" }, `There is no Try-it view for ${model.model_type} models yet.`),
    );
    return;
  }
  const view = views.includes(args[1]) ? args[1] : views[0];
  if (views.length > 1) {
    main.append(
      h(
        "div",
        { role: "tablist", class: "tabs", "aria-label": "Try-it view" },
        views.map((v) =>
          h(
            "a",
            {
              role: "tab",
              class: "tab",
              "aria-selected": String(v === view),
              href: `#/try/${encodeURIComponent(model.id)}/${v}`,
              "data-view": v,
            },
            LABELS[v],
          ),
        ),
      ),
    );
  }
  const code = codePanel();
  const pane = h("section", {
    class: "panel try-pane",
    id: `try-${view}`,
    "aria-label": LABELS[view],
  });
  main.append(h("div", { class: "try-layout" }, pane, code.el));
  VIEWS[view](pane, model, code, signal);
}

// ---- shared bits ------------------------------------------------------------------------
function num(value, { min, max, step = "any", name }) {
  return h("input", { type: "number", value, min, max, step, name });
}

/** Generation settings shared by chat and completion: max_tokens, temperature, stop. */
function sampling() {
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

function busy(button, on, label) {
  button.disabled = on;
  button.setAttribute("aria-busy", String(on));
  if (label) button.textContent = label;
}

/** Run a request's `work` with `go` busy and `out` emptied first; an error other than an abort
 * is shown in `out`. */
async function running(go, out, work) {
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
function ctrlEnter(form) {
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
}

// ---- chat -------------------------------------------------------------------------------
function chatView(pane, model, code, signal) {
  const system = h("textarea", {
    rows: "2",
    name: "system",
    placeholder: "You are a helpful assistant.",
  });
  const s = sampling();
  const log = h("div", {
    class: "chat-log",
    role: "log",
    "aria-live": "polite",
    "aria-label": "Conversation",
    id: "chat-log",
  });
  const input = h("textarea", {
    rows: "2",
    id: "chat-input",
    name: "message",
    placeholder: "Type a message (Enter sends, Shift+Enter for a new line)",
  });
  const sendBtn = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
  const stopBtn = h("button", { type: "button", id: "chat-stop", disabled: true }, "Stop");
  const clearBtn = h(
    "button",
    {
      type: "button",
      onclick: () => {
        history = [];
        fill(log);
      },
    },
    "Clear",
  );
  let history = [];
  let inflight = null;
  stopBtn.addEventListener("click", () => inflight && inflight.abort());
  signal.addEventListener("abort", () => inflight && inflight.abort());

  const form = h(
    "form",
    { class: "chat" },
    h(
      "details",
      { class: "settings" },
      h("summary", {}, "Settings"),
      field("System prompt", system),
      s.el,
    ),
    log,
    h("div", { class: "composer" }, input, h("div", { class: "row" }, sendBtn, stopBtn, clearBtn)),
  );
  pane.append(form);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || inflight) return;
    input.value = "";
    history.push({ role: "user", content: text });
    log.append(
      h(
        "div",
        { class: "msg user" },
        h("span", { class: "who" }, "You"),
        h("div", { class: "text" }, text),
      ),
    );
    const messages = [
      ...(system.value.trim() ? [{ role: "system", content: system.value.trim() }] : []),
      ...history,
    ];
    const body = { model: model.id, messages, ...s.params() };
    code.update("chat", { ...body, stream: s.stream });

    const reasoning = h("div", { class: "text" });
    const think = h(
      "details",
      { class: "reasoning", hidden: true, open: true },
      h("summary", {}, "Reasoning"),
      reasoning,
    );
    const answer = h("div", { class: "text answer" });
    const meta = h("div", { class: "meta muted" });
    const bubble = h(
      "div",
      { class: "msg assistant", "aria-busy": "true" },
      h("span", { class: "who" }, model.id),
      think,
      answer,
      meta,
    );
    log.append(bubble);
    log.scrollTop = log.scrollHeight;
    inflight = new AbortController();
    busy(sendBtn, true);
    stopBtn.disabled = false;
    let content = "",
      chunks = 0,
      finish = null;
    const started = performance.now();
    try {
      if (s.stream) {
        await stream(
          "/v1/chat/completions",
          body,
          (chunk) => {
            const choice = chunk.choices && chunk.choices[0];
            if (!choice) return;
            const d = choice.delta || {};
            if (d.reasoning_content) {
              think.hidden = false;
              reasoning.append(d.reasoning_content);
            }
            if (d.content) {
              content += d.content;
              answer.append(d.content);
              chunks++;
            }
            if (choice.finish_reason) finish = choice.finish_reason;
            log.scrollTop = log.scrollHeight;
          },
          { signal: inflight.signal },
        );
      } else {
        const res = await api("POST", "/v1/chat/completions", body, { signal: inflight.signal });
        const msg = res.choices[0].message;
        if (msg.reasoning_content) {
          think.hidden = false;
          reasoning.append(msg.reasoning_content);
        }
        content = msg.content || "";
        answer.append(content);
        finish = res.choices[0].finish_reason;
        chunks = res.usage ? res.usage.completion_tokens : 0;
      }
      history.push({ role: "assistant", content });
      const secs = (performance.now() - started) / 1000;
      meta.textContent = `${finish || "done"} · ${
        s.stream ? `${chunks} chunks` : `${chunks} tokens`
      } · ${secs.toFixed(1)} s`;
    } catch (e) {
      if (e.name === "AbortError") {
        history.push({ role: "assistant", content });
        meta.textContent = "stopped";
      } else {
        history.pop(); // the question was not answered; it can be asked again
        bubble.append(errorBox(e));
      }
    } finally {
      bubble.setAttribute("aria-busy", "false");
      inflight = null;
      busy(sendBtn, false);
      stopBtn.disabled = true;
      input.focus();
    }
  });
}

// ---- completion -------------------------------------------------------------------------
function completionView(pane, model, code, signal) {
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
      if (s.stream) {
        await stream(
          "/v1/completions",
          body,
          (chunk) => {
            const c = chunk.choices && chunk.choices[0];
            if (c && c.text) out.append(c.text);
          },
          { signal },
        );
      } else {
        const res = await api("POST", "/v1/completions", body, { signal });
        out.append(res.choices[0].text);
      }
    });
  });
}

// ---- embeddings -------------------------------------------------------------------------
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

function embeddingsView(pane, model, code, signal) {
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

// ---- rerank -----------------------------------------------------------------------------
function rerankView(pane, model, code, signal) {
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

// ---- audio ------------------------------------------------------------------------------
function transcriptionView(pane, model, code, signal) {
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
    const f = file.files[0];
    if (!f) {
      fill(out, errorBox(new Error("Choose an audio file first")));
      file.focus();
      return;
    }
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

function speechView(pane, model, code, signal) {
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

// ---- images -----------------------------------------------------------------------------
function imageView(pane, model, code, signal) {
  const prompt = h("textarea", {
    rows: "3",
    id: "image-prompt",
    value: "A lighthouse on a cliff at sunset, oil painting",
  });
  const sizes = h(
    "datalist",
    { id: "image-sizes" },
    ["256x256", "512x512", "768x768", "1024x1024"].map((s) => h("option", { value: s })),
  );
  const size = h("input", {
    name: "size",
    list: "image-sizes",
    placeholder: "the model's own",
    autocomplete: "off",
  });
  const n = num("1", { min: "1", max: "4", step: "1", name: "n" });
  const negative = h("input", { name: "negative_prompt", autocomplete: "off" });
  const extra = h("textarea", {
    name: "extra",
    rows: "2",
    spellcheck: "false",
    placeholder: '{"num_inference_steps": 20, "guidance_scale": 7.5, "seed": 42}',
  });
  const out = h("div", { class: "images", id: "image-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Generate");
  const form = h(
    "form",
    {},
    field("Prompt", prompt),
    h(
      "div",
      { class: "grid3" },
      field("Size", size, "WxH"),
      field("Images", n),
      field("Negative prompt", negative),
    ),
    sizes,
    field("Extra options (JSON object)", extra, "num_inference_steps, guidance_scale, seed…"),
    h("div", { class: "row" }, go),
    out,
  );
  ctrlEnter(form);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let options = {};
    try {
      options = extra.value.trim() ? JSON.parse(extra.value) : {};
      if (typeof options !== "object" || options === null || Array.isArray(options)) {
        throw new Error("must be a JSON object");
      }
    } catch (e) {
      fill(out, errorBox(new Error(`Extra options: ${e.message}`)));
      extra.focus();
      return;
    }
    const body = {
      model: model.id,
      prompt: prompt.value,
      n: Number(n.value) || 1,
      response_format: "b64_json",
    };
    if (size.value.trim()) body.size = size.value.trim();
    if (negative.value.trim()) body.negative_prompt = negative.value.trim();
    Object.assign(body, options);
    code.update("image", body);
    await running(go, out, async () => {
      fill(out, h("p", { class: "muted" }, "Generating…"));
      const res = await api("POST", "/v1/images/generations", body, { signal });
      fill(
        out,
        res.data.map((d, i) =>
          h("img", {
            alt: `Generated image ${i + 1}: ${prompt.value}`,
            src: d.b64_json ? `data:image/png;base64,${d.b64_json}` : d.url,
          }),
        ),
      );
    });
  });
}

function ocrView(pane, model, code, signal) {
  const file = h("input", { type: "file", accept: "image/*", id: "ocr-file" });
  const out = h("div", { id: "ocr-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Read text");
  const form = h("form", {}, field("Image", file), h("div", { class: "row" }, go), out);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) {
      fill(out, errorBox(new Error("Choose an image first")));
      file.focus();
      return;
    }
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
