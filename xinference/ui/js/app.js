// The single-page app: a view per URL fragment (#/launch, #/running, #/try/<uid>,
// #/register, #/cluster), the API-key dialog and the server version in the header.

import { api, authEnabled, getApiKey, onUnauthorized, setApiKey } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import * as launch from "./pages/launch.js";
import * as running from "./pages/running.js";
import * as tryit from "./pages/try.js";
import * as register from "./pages/register.js";
import * as cluster from "./pages/cluster.js";

const PAGES = { launch, running, try: tryit, register, cluster };
const main = document.getElementById("main");
let controller = null; // aborted when the view changes: stops its timers and requests

/** Show the key dialog; resolves true when a key was saved. */
function askKey(reason) {
  const dlg = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").firstChild.textContent = reason
    ? `${reason}. Enter an API key; it is kept in this browser (localStorage) and sent as `
    : "Enter an API key; it is kept in this browser (localStorage) and sent as ";
  input.value = getApiKey();
  return new Promise((resolve) => {
    dlg.addEventListener(
      "close",
      () => {
        if (dlg.returnValue === "save" && input.value.trim()) {
          setApiKey(input.value.trim());
          document.getElementById("key-button").hidden = false;
          resolve(true);
        } else {
          if (dlg.returnValue === "forget") setApiKey("");
          resolve(false);
        }
      },
      { once: true },
    );
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
}

let pendingAsk = null; // one dialog for concurrent 401s
onUnauthorized((message) => {
  if (!pendingAsk)
    pendingAsk = askKey(message).finally(() => {
      pendingAsk = null;
    });
  return pendingAsk;
});

async function render() {
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = PAGES[name] ? name : "launch";
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  fill(main);
  try {
    await PAGES[page].render(main, args.filter(Boolean), signal);
  } catch (e) {
    if (e.name !== "AbortError" && !signal.aborted) main.append(errorBox(e));
  }
}

async function start() {
  // Enter in the key field saves (the form's first button would forget the key).
  document.getElementById("key-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      document.getElementById("key-dialog").close("save");
    }
  });
  document.getElementById("key-button").addEventListener("click", () => askKey(""));
  document.getElementById("skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    main.focus();
  });
  window.addEventListener("hashchange", async () => {
    await render();
    const heading = main.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: false });
    }
  });
  if (await authEnabled()) {
    document.getElementById("key-button").hidden = false;
    if (!getApiKey()) await askKey("This server has authentication on");
  } else if (getApiKey()) {
    document.getElementById("key-button").hidden = false;
  }
  api("GET", "/v1/cluster/version").then(
    (v) => {
      document.getElementById("version").textContent = `v${v.version}`;
    },
    () => {},
  );
  await render();
}

// Anything unexpected is shown on the page too, never only in the console.
window.addEventListener("unhandledrejection", (ev) => {
  if (ev.reason && ev.reason.name === "AbortError") {
    ev.preventDefault();
    return;
  }
  main.prepend(errorBox(ev.reason));
});

start();
