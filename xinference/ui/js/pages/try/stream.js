// The request helper shared by the text-generation views (chat, completion): one code path
// for a streamed answer (SSE chunks) and a whole one.

import { api, stream } from "../../api.js";

/** POST `body` to an OpenAI completion route (`/v1/chat/completions` or `/v1/completions`).
 * Every piece of the answer goes to `onPiece(piece, finishReason)`: with `streaming`, each
 * chunk's first choice (its `delta`, or `{ text }` for a completion chunk); otherwise once,
 * the whole choice (its `message`, or `{ text }`). Returns the whole response, or null when
 * streamed. Errors (HTTP or in-band) reject, an abort through `signal` as `AbortError`. */
export async function complete(path, body, streaming, onPiece, signal) {
  const piece = (c) => c.delta || c.message || { text: c.text };
  if (streaming) {
    await stream(
      path,
      body,
      (chunk) => {
        const c = chunk.choices && chunk.choices[0];
        if (c) onPiece(piece(c), c.finish_reason);
      },
      { signal },
    );
    return null;
  }
  const res = await api("POST", path, body, { signal });
  const c = res.choices[0];
  onPiece(piece(c), c.finish_reason);
  return res;
}
