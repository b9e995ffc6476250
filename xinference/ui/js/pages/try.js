// Try it: one view per ability of a running model (chat, completion, embeddings, rerank,
// speech-to-text, text-to-speech, text-to-image, OCR), each with the equivalent cURL and
// Python (OpenAI SDK) code of the request it sent. Each view is a module under try/, built
// from the shared form helpers (try/form.js) and request helper (try/stream.js); a new view
// adds its module, a label and an entry in VIEWS, and its ability in viewsFor.

import { api } from "../api.js";
import { errorBox, field, h } from "../dom.js";
import { codePanel } from "../snippets.js";
import { chatView } from "./try/chat.js";
import { completionView } from "./try/completion.js";
import { embeddingsView } from "./try/embeddings.js";
import { imageView } from "./try/image.js";
import { ocrView } from "./try/ocr.js";
import { rerankView } from "./try/rerank.js";
import { speechView } from "./try/speech.js";
import { transcriptionView } from "./try/transcription.js";

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
