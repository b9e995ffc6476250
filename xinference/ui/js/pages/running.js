// Running models: GET /v1/models as a table, with terminate (confirmed), a Try-it link and
// each model's events (GET /v1/models/{uid}/events: launch steps, progress, errors,
// replicas added, removed or dead, terminate).

import { api } from "../api.js";
import { confirmDialog, errorBox, fill, h, sizeLabel } from "../dom.js";

export async function render(main, args, signal) {
  const table = h("div", { class: "table-wrap", id: "running-table" });
  const status = h("div", { "aria-live": "polite", class: "status" });
  const refresh = h("button", { type: "button", onclick: () => load() }, "Refresh");
  const events = h("section", { id: "model-events", "aria-live": "polite" });
  main.append(
    h("div", { class: "row between" }, h("h1", {}, "Running models"), refresh),
    status,
    table,
    events,
  );

  async function showEvents(uid, button) {
    let rows;
    try {
      rows = await api("GET", `/v1/models/${encodeURIComponent(uid)}/events`, undefined, {
        signal,
      });
    } catch (e) {
      if (!signal.aborted) fill(events, errorBox(e));
      return;
    }
    const cls = { ERROR: "error", WARNING: "warn", INFO: "" };
    fill(
      events,
      h("h2", {}, `Events of ${uid}`),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "data-events-of": uid },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Time", "Type", "Kind", "Replica", "Event"].map((c) =>
                h("th", { scope: "col" }, c),
              ),
            ),
          ),
          h(
            "tbody",
            {},
            rows
              .slice()
              .reverse()
              .map((e) =>
                h(
                  "tr",
                  { class: cls[e.event_type] || "" },
                  h("td", { "data-label": "Time" }, new Date(e.event_ts * 1000).toLocaleString()),
                  h("td", { "data-label": "Type" }, e.event_type),
                  h("td", { "data-label": "Kind" }, e.kind),
                  h("td", { "data-label": "Replica" }, e.replica_uid || "–"),
                  h("td", { "data-label": "Event" }, e.event_content),
                ),
              ),
          ),
        ),
      ),
    );
    button.setAttribute("aria-expanded", "true");
  }

  async function load() {
    let models;
    try {
      models = (await api("GET", "/v1/models", undefined, { signal })).data;
    } catch (e) {
      if (!signal.aborted) fill(table, errorBox(e));
      return;
    }
    if (!models.length) {
      fill(
        table,
        h(
          "p",
          { class: "empty" },
          "No model is running. ",
          h("a", { href: "#/launch" }, "Launch one"),
          ".",
        ),
      );
      return;
    }
    const rows = models.map((m) => {
      const replicas = m.replicas || [];
      const ready = replicas.filter((r) => r.status === "ready").length;
      const terminate = h(
        "button",
        {
          type: "button",
          class: "danger small",
          "aria-label": `Terminate ${m.id}`,
          onclick: () => stop(m.id, terminate),
        },
        "Terminate",
      );
      return h(
        "tr",
        { "data-uid": m.id },
        h(
          "td",
          { "data-label": "UID" },
          h("strong", {}, m.id),
          m.model_name !== m.id ? h("div", { class: "muted" }, m.model_name) : null,
        ),
        h("td", { "data-label": "Type" }, m.model_type),
        h("td", { "data-label": "Engine" }, m.model_engine || "–"),
        h("td", { "data-label": "Format" }, m.model_format || "–"),
        h("td", { "data-label": "Size" }, sizeLabel(m.model_size_in_billions)),
        h(
          "td",
          { "data-label": "Replicas" },
          `${ready}/${m.replica ?? replicas.length}`,
          replicas.some((r) => r.error)
            ? h(
                "div",
                { class: "warn" },
                replicas
                  .map((r) => r.error)
                  .filter(Boolean)
                  .join("; "),
              )
            : null,
        ),
        h("td", { "data-label": "Address" }, h("code", {}, m.address || "–")),
        h(
          "td",
          { class: "actions" },
          h("a", { class: "button small", href: `#/try/${encodeURIComponent(m.id)}` }, "Try it"),
          h(
            "button",
            {
              type: "button",
              class: "small",
              "aria-label": `Events of ${m.id}`,
              "aria-controls": "model-events",
              onclick: (ev) => showEvents(m.id, ev.currentTarget),
            },
            "Events",
          ),
          terminate,
        ),
      );
    });
    fill(
      table,
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["UID", "Type", "Engine", "Format", "Size", "Replicas", "Address", ""].map((c) =>
              h("th", { scope: "col" }, c),
            ),
          ),
        ),
        h("tbody", {}, rows),
      ),
    );
  }

  async function stop(uid, button) {
    if (
      !(await confirmDialog(`Terminate model ${uid}? Requests in flight are cut off.`, "Terminate"))
    ) {
      button.focus();
      return;
    }
    button.disabled = true;
    fill(status, h("p", { class: "muted" }, `Terminating ${uid}…`));
    try {
      await api("DELETE", `/v1/models/${encodeURIComponent(uid)}`);
      fill(status, h("p", { class: "ok", role: "status" }, `Model ${uid} was terminated.`));
    } catch (e) {
      fill(status, errorBox(e));
      button.disabled = false;
    }
    await load();
    refresh.focus();
  }

  await load();
}
