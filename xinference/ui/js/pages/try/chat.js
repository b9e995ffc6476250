// Try it, chat: a conversation with a chat model, streamed or whole, its reasoning shown
// apart.

import { errorBox, field, fill, h } from "../../dom.js";
import { busy, sampling } from "./form.js";
import { complete } from "./stream.js";

export function chatView(pane, model, code, signal) {
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
      const res = await complete(
        "/v1/chat/completions",
        body,
        s.stream,
        (d, finishReason) => {
          if (d.reasoning_content) {
            think.hidden = false;
            reasoning.append(d.reasoning_content);
          }
          if (d.content) {
            content += d.content;
            answer.append(d.content);
            chunks++;
          }
          if (finishReason) finish = finishReason;
          log.scrollTop = log.scrollHeight;
        },
        inflight.signal,
      );
      if (res) chunks = res.usage ? res.usage.completion_tokens : 0;
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
