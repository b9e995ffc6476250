// The only way the UI talks to the server: the public REST API, with the API key when auth
// is on. Errors come back as ApiError carrying the server's own message and status.

const KEY_STORE = "xinference.api_key";

/** A failed call: HTTP `status` (0: no answer), the server's `message`, its `param`. */
export class ApiError extends Error {
  constructor(status, message, param = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.param = param;
  }
}

export const getApiKey = () => localStorage.getItem(KEY_STORE) || "";

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
}

let keyPrompt = null;
/**
 * Register the function that asks the user for a key after a 401; it receives the server's
 * message and resolves true when a new key was stored (the call is then retried).
 */
export function onUnauthorized(fn) {
  keyPrompt = fn;
}

function headers(json) {
  const hd = {};
  if (json) hd["Content-Type"] = "application/json";
  const key = getApiKey();
  if (key) hd.Authorization = `Bearer ${key}`;
  return hd;
}

/** The message of an error response: Xinference's `detail`, OpenAI's `error.message`. */
async function readError(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    const msg = body.error?.message ?? body.detail ?? text;
    return new ApiError(
      resp.status,
      typeof msg === "string" ? msg : JSON.stringify(msg),
      body.error?.param ?? null,
    );
  } catch {
    return new ApiError(resp.status, text || resp.statusText || `HTTP ${resp.status}`);
  }
}

/**
 * fetch() with the key; a 401 asks for a key (then retries), any other non-2xx throws
 * ApiError. `body`: a plain object (sent as JSON), FormData, or undefined.
 */
export async function send(method, path, body, { signal } = {}) {
  for (let attempt = 0; attempt < 4; attempt++) {
    const isForm = body instanceof FormData;
    const init = { method, signal, headers: headers(body !== undefined && !isForm) };
    if (body !== undefined) init.body = isForm ? body : JSON.stringify(body);
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, `The server cannot be reached (${e.message})`);
    }
    if (resp.ok) return resp;
    const err = await readError(resp);
    if (resp.status === 401 && keyPrompt && (await keyPrompt(err.message))) continue;
    throw err;
  }
  throw new ApiError(401, "No valid API key given");
}

/** A JSON call: `api("GET", "/v1/models")` resolves to the parsed body. */
export async function api(method, path, body, opts) {
  const resp = await send(method, path, body, opts);
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

/**
 * POST `body` with `stream: true` and call `onChunk(obj)` for every Server-Sent Event until
 * `[DONE]`. An error the server sends in-band (after the stream started) throws ApiError.
 */
export async function stream(path, body, onChunk, { signal } = {}) {
  const resp = await send("POST", path, { ...body, stream: true }, { signal });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (!data) continue; // comments, pings
      if (data === "[DONE]") return;
      const obj = JSON.parse(data);
      if (obj.error && !obj.choices) {
        throw new ApiError(obj.error.code || 500, obj.error.message || obj.detail);
      }
      onChunk(obj);
    }
  }
}

/**
 * Whether the server has auth on: `GET /v1/cluster/auth` (true/false, or an object with
 * `auth`, `auth_enabled` or `enabled`).
 * A server without that route has no auth.
 */
export async function authEnabled() {
  try {
    const resp = await fetch("/v1/cluster/auth");
    if (!resp.ok) return false;
    const body = await resp.json();
    if (typeof body !== "object" || body === null) return !!body;
    return !!(body.auth ?? body.auth_enabled ?? body.enabled);
  } catch {
    return false;
  }
}
