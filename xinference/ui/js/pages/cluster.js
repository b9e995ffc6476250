// Cluster: the supervisor and every worker from GET /v1/cluster/info (CPU, memory, GPUs,
// models), refreshed every few seconds while the page is open.

import { api } from "../api.js";
import { bytes, errorBox, fill, h, meter } from "../dom.js";

const REFRESH_MS = 5000;

function node(n) {
  const memUsed = n.memory_total - n.memory_available;
  const gpus = n.gpus || [];
  const models = n.models || [];
  return h(
    "section",
    { class: "panel node", "aria-label": `${n.node_type} ${n.address}` },
    h(
      "div",
      { class: "row between" },
      h("h2", {}, n.node_type),
      h("span", { class: `badge ${n.status === "alive" ? "ok" : "warn"}` }, n.status || "?"),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Address"),
      h("dd", {}, h("code", {}, n.address)),
      h("dt", {}, "IP"),
      h("dd", {}, n.ip_address || "–"),
      h("dt", {}, "CPU"),
      h(
        "dd",
        {},
        `${n.cpu_count} cores, ${Number(n.cpu_utilization || 0).toFixed(0)}% busy`,
        meter((n.cpu_utilization || 0) / 100, "CPU utilization"),
      ),
      h("dt", {}, "Memory"),
      h(
        "dd",
        {},
        `${bytes(memUsed)} used of ${bytes(n.memory_total)}`,
        meter(memUsed / (n.memory_total || 1), "Memory used"),
      ),
      h("dt", {}, "GPUs"),
      h(
        "dd",
        {},
        gpus.length
          ? h(
              "ul",
              { class: "plain" },
              gpus.map((g, i) =>
                h(
                  "li",
                  {},
                  `#${g.index ?? i} ${g.name || "GPU"}`,
                  g.memory_total
                    ? ` · ${bytes(g.memory_used ?? 0)} / ${bytes(g.memory_total)}`
                    : "",
                ),
              ),
            )
          : "none",
      ),
      n.node_type === "Worker"
        ? [
            h("dt", {}, "Models"),
            h(
              "dd",
              {},
              models.length
                ? h(
                    "ul",
                    { class: "plain" },
                    models.map((m) =>
                      h(
                        "li",
                        {},
                        typeof m === "string"
                          ? m
                          : `${m.replica_uid || m.model_uid || ""}` +
                              (m.model_type ? ` (${m.model_type})` : ""),
                      ),
                    ),
                  )
                : "none",
            ),
          ]
        : null,
      n.last_heartbeat_seconds_ago !== undefined
        ? [
            h("dt", {}, "Heartbeat"),
            h("dd", {}, `${n.last_heartbeat_seconds_ago.toFixed(1)} s ago`),
          ]
        : null,
    ),
  );
}

export async function render(main, args, signal) {
  const body = h("div", { class: "nodes", id: "cluster-nodes", "aria-live": "polite" });
  main.append(h("h1", {}, "Cluster"), body);
  async function load() {
    try {
      const info = await api("GET", "/v1/cluster/info", undefined, { signal });
      fill(body, info.map(node));
    } catch (e) {
      if (!signal.aborted) fill(body, errorBox(e));
    }
  }
  await load();
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}
