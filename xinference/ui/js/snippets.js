// The cURL and Python (OpenAI SDK) equivalents of what a Try-it view sent.

import { getApiKey } from "./api.js";
import { h, fill } from "./dom.js";

const base = () => `${location.origin}/v1`;

function curlAuth() {
  return getApiKey() ? ` \\\n  -H "Authorization: Bearer $XINFERENCE_API_KEY"` : "";
}

/** A Python literal of a JSON value (True/False/None, double-quoted strings). */
export function py(value, indent = 0) {
  const pad = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const short = value.every((v) => typeof v !== "object" || v === null);
    if (short && JSON.stringify(value).length < 60)
      return `[${value.map((v) => py(v)).join(", ")}]`;
    return `[\n${value.map((v) => `${pad}    ${py(v, indent + 4)}`).join(",\n")},\n${pad}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries
    .map(([k, v]) => `${pad}    ${JSON.stringify(k)}: ${py(v, indent + 4)}`)
    .join(",\n")},\n${pad}}`;
}

function shellQuote(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function curlJson(path, body) {
  return (
    `curl ${base()}${path} \\\n  -H "Content-Type: application/json"${curlAuth()} \\\n` +
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`
  );
}

const header = () =>
  `import os\n\nfrom openai import OpenAI\n\n` +
  `client = OpenAI(base_url="${base()}",\n` +
  `                api_key=os.environ.get("XINFERENCE_API_KEY", "not empty"))\n`;

/** Keyword arguments of an SDK call; fields the SDK does not know go in extra_body. */
function kwargs(body, known) {
  const args = [],
    extra = {};
  for (const [k, v] of Object.entries(body)) {
    if (v === undefined) continue;
    if (known.includes(k)) args.push(`    ${k}=${py(v, 4)},`);
    else extra[k] = v;
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${py(extra, 4)},`);
  return args.join("\n");
}

const CHAT_ARGS = [
  "model",
  "messages",
  "max_tokens",
  "temperature",
  "top_p",
  "stop",
  "seed",
  "stream",
  "frequency_penalty",
  "presence_penalty",
  "tools",
  "n",
];
const COMPLETION_ARGS = [
  "model",
  "prompt",
  "max_tokens",
  "temperature",
  "top_p",
  "stop",
  "seed",
  "stream",
  "frequency_penalty",
  "presence_penalty",
  "n",
];

/**
 * `{curl, python}` for a request of `kind` (chat, completion, embeddings, rerank,
 * transcription, speech, image, ocr) with JSON `body` (for uploads: the form fields and the
 * file's name in `body.file`).
 */
export function snippetsFor(kind, body) {
  switch (kind) {
    case "chat":
      return {
        curl: curlJson("/chat/completions", body) + (body.stream ? " \\\n  --no-buffer" : ""),
        python:
          header() +
          `\nresponse = client.chat.completions.create(\n` +
          `${kwargs(body, CHAT_ARGS)}\n)\n` +
          (body.stream
            ? `for chunk in response:\n    if chunk.choices and chunk.choices[0].delta.content:\n` +
              `        print(chunk.choices[0].delta.content, end="", flush=True)\n`
            : `print(response.choices[0].message.content)\n`),
      };
    case "completion":
      return {
        curl: curlJson("/completions", body) + (body.stream ? " \\\n  --no-buffer" : ""),
        python:
          header() +
          `\nresponse = client.completions.create(\n` +
          `${kwargs(body, COMPLETION_ARGS)}\n)\n` +
          (body.stream
            ? `for chunk in response:\n    print(chunk.choices[0].text, end="", flush=True)\n`
            : `print(response.choices[0].text)\n`),
      };
    case "embeddings":
      return {
        curl: curlJson("/embeddings", body),
        python:
          header() +
          `\nresponse = client.embeddings.create(\n` +
          `${kwargs(body, ["model", "input", "dimensions", "encoding_format"])}\n)\n` +
          `vectors = [d.embedding for d in response.data]\nprint(len(vectors[0]))\n`,
      };
    case "rerank":
      return {
        curl: curlJson("/rerank", body),
        python:
          header() +
          `\n# /v1/rerank is Xinference's own route: call it with the SDK's post()\n` +
          `response = client.post("/rerank", cast_to=object, body=${py(body)})\n` +
          `for r in response["results"]:\n    print(r["relevance_score"], r["index"])\n`,
      };
    case "transcription": {
      const { file, ...fields } = body;
      const form = Object.entries(fields)
        .map(([k, v]) => ` \\\n  -F ${shellQuote(`${k}=${v}`)}`)
        .join("");
      return {
        curl:
          `curl ${base()}/audio/transcriptions${curlAuth()} \\\n` +
          `  -F file=@${shellQuote(file)}${form}`,
        python:
          header() +
          `\nwith open(${py(file)}, "rb") as f:\n` +
          `    response = client.audio.transcriptions.create(\n        file=f,\n` +
          Object.entries(fields)
            .map(([k, v]) => `        ${k}=${py(v)},\n`)
            .join("") +
          `    )\nprint(response.text)\n`,
      };
    }
    case "speech": {
      const ext = body.response_format || "mp3";
      return {
        curl: curlJson("/audio/speech", body) + ` \\\n  --output speech.${ext}`,
        python:
          header() +
          `\nwith client.audio.speech.with_streaming_response.create(\n` +
          `${kwargs(body, ["model", "input", "voice", "response_format", "speed"])}\n` +
          `) as response:\n` +
          `    response.stream_to_file("speech.${ext}")\n`,
      };
    }
    case "image":
      return {
        curl: curlJson("/images/generations", body),
        python:
          header() +
          `\nimport base64\n\nresponse = client.images.generate(\n` +
          `${kwargs(body, ["model", "prompt", "n", "size", "response_format"])}\n)\n` +
          `with open("image.png", "wb") as f:\n` +
          `    f.write(base64.b64decode(response.data[0].b64_json))\n`,
      };
    case "ocr": {
      const { file, ...fields } = body;
      const form = Object.entries(fields)
        .map(([k, v]) => ` \\\n  -F ${shellQuote(`${k}=${v}`)}`)
        .join("");
      return {
        curl: `curl ${base()}/images/ocr${curlAuth()} \\\n  -F image=@${shellQuote(file)}${form}`,
        python:
          header() +
          `\n# /v1/images/ocr is Xinference's own route: call it with the SDK's post()\n` +
          `with open(${py(file)}, "rb") as f:\n` +
          `    response = client.post("/images/ocr", cast_to=object, body=${py(fields, 4)},\n` +
          `                           files={"image": f}, options={"headers": ` +
          `{"Content-Type": "multipart/form-data"}})\nprint(response)\n`,
      };
    }
    default:
      throw new Error(`no snippet for ${kind}`);
  }
}

/**
 * A "Code" panel with cURL / Python tabs; `update(kind, body)` shows the snippets of the
 * request just sent.
 */
export function codePanel() {
  const pre = h("pre", { class: "code", tabindex: "0", "aria-label": "Code snippet" });
  let current = { curl: "", python: "" };
  let tab = "curl";
  const tabs = {};
  const show = (name) => {
    tab = name;
    for (const [n, b] of Object.entries(tabs)) b.setAttribute("aria-selected", String(n === name));
    fill(pre, current[name] || "Send a request to see its code.");
  };
  for (const [name, label] of [
    ["curl", "cURL"],
    ["python", "Python (OpenAI SDK)"],
  ]) {
    tabs[name] = h(
      "button",
      {
        type: "button",
        role: "tab",
        class: "tab",
        "data-snippet": name,
        onclick: () => show(name),
      },
      label,
    );
  }
  const copy = h(
    "button",
    {
      type: "button",
      class: "small",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(current[tab] || "");
          copy.textContent = "Copied";
        } catch {
          copy.textContent = "Select and copy";
        }
        setTimeout(() => {
          copy.textContent = "Copy";
        }, 1500);
      },
    },
    "Copy",
  );
  const el = h(
    "section",
    { class: "panel code-panel", "aria-label": "Equivalent code" },
    h(
      "div",
      { class: "row between" },
      h(
        "div",
        { role: "tablist", class: "tabs", "aria-label": "Snippet language" },
        Object.values(tabs),
      ),
      copy,
    ),
    pre,
  );
  show("curl");
  return {
    el,
    update(kind, body) {
      current = snippetsFor(kind, body);
      show(tab);
    },
  };
}
