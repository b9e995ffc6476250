"""llama.cpp engine for ``ggufv2`` specs, on xllamacpp (llama.cpp's server in-process).

xllamacpp (PyPI, MIT, prebuilt CPU and GPU wheels) embeds llama-server: a fixed number of
*slots* (``n_parallel``) decode together with continuous batching; a request that arrives
while every slot is busy waits in llama-server's queue and takes the first slot that frees.
This engine keeps the shared request logic of :class:`xinference.model.llm.core.LLM`
(parameter validation, chat templates, stop strings and stop token ids, ``max_tokens``,
incremental UTF-8 detokenisation, ``usage``, response shapes): it sends llama-server the
prompt as token ids and reads back the id and bytes of every sampled token (the per-token
entries of ``n_probs``), which it feeds to the request's :class:`RequestState`.

Each running request holds one Python thread blocked in ``Server.handle_completions``,
whose callback receives the chunks; returning True from the callback stops the request
and frees its slot (a stop string matched, the client went away). Tokenization uses the
embedded server's ``/tokenize`` route (127.0.0.1, random port, a random API key of this
process). A model with a multimodal projector streams every request from the same
server's native ``/completion`` route instead: ``handle_completions`` is llama-server's
OpenAI ``/v1/completions``, which takes no images (its ``prompt`` must be text) and, once a
projector is loaded, no token ids either; ``/completion`` takes both ids and llama.cpp's
multimodal prompt (``{"prompt_string", "multimodal_data"}``). ``xllamacpp`` is imported in
:meth:`LlamaCppModel.load`, inside the model's own process.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.client
import json
import logging
import os
import secrets
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from ....errors import InvalidRequestError, ModelLoadError
from ...options import integer, positive_int
from ..core import LLM
from ..request import RequestState
from ..text import BytesDetokenizer, IncrementalDetokenizer

logger = logging.getLogger(__name__)

#: default slots. Measured on a 2-core CPU with the bundled SmolLM2-135M (benchmark/
#: bench_serving.py): aggregate tokens/s rises up to 4-8 concurrent streams and a slot
#: costs only KV-cache bookkeeping while idle (the cache is shared, see ``n_ctx``).
DEFAULT_N_PARALLEL = 8
#: where an image goes in a multimodal prompt: llama.cpp's ``mtmd_default_marker`` before
#: llama-server drew a random one per process (read from ``/props`` as ``media_marker``)
MEDIA_MARKER = "<__media__>"
#: seconds a request of a projector model may wait for its next chunk (a queued request
#: waits for a slot, then its images are encoded): llama-server's own HTTP timeouts
STREAM_READ_TIMEOUT = 3600
#: tokens of history the repeat / frequency / presence penalties look at (llama.cpp's
#: and llama-cpp-python's default)
PENALTY_LAST_N = 64


#: the operating system's name of the threads that run requests (and, for streams, build
#: and write their chunks): visible in ``top -H``, ``ps -L`` and ``/proc/<pid>/task/*/comm``
REQUEST_THREAD_NAME = "llama-request"


def _name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (15 bytes at most) for the operating system too
    (Linux ``prctl(PR_SET_NAME)``; elsewhere nothing happens)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # 15: PR_SET_NAME
    except (OSError, AttributeError):
        pass


class LlamaCppModel(LLM):
    """A GGUF model served by llama.cpp's server with continuous batching.

    Launch kwargs (``xinference launch ... --key value``):

    * ``n_parallel``: slots, i.e. requests decoded together (default
      :data:`DEFAULT_N_PARALLEL`); more requests wait for a free slot.
    * ``n_ctx``: tokens of KV cache (default: the family's ``context_length``). The cache is
      **shared** by the slots (llama.cpp's unified KV cache): one request may use up to
      ``n_ctx`` tokens (prompt + completion), and all running requests together hold at
      most ``n_ctx``.
    * ``n_threads``: CPU threads for decoding and prompt processing (default: all cores).
    * ``n_batch``: most prompt tokens processed per step (default 2048, llama.cpp's).
    * ``n_gpu_layers``: layers offloaded to a GPU; default all of them when ``n_gpu`` is
      set (not 0) and llama.cpp sees a GPU device, else 0.

    Raises (from the constructor / :meth:`load`):
        InvalidRequestError: an option that is not a positive integer.
        ModelLoadError: xllamacpp is missing or cannot load the file.
    """

    engine_name = "llama.cpp"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: the multimodal projector (mmproj GGUF) of a vision spec, set by the loader
        #: (:func:`~xinference.model.llm.loader.choose_projector`); images need it
        self.mmproj_path: Optional[str] = None
        #: the text that stands for one image in a multimodal prompt (from ``/props``)
        self.media_marker = MEDIA_MARKER
        self._mtmd_adds_bos = False  # set by load()
        opts = self._parse_options(self.kwargs, self.family.context_length)
        self.n_parallel, self.n_ctx, self.n_threads, self.n_batch, self._n_gpu_layers = opts
        self._server = None
        self._pieces: Dict[int, bytes] = {}  # token id -> its bytes, as llama.cpp renders
        self._lock = threading.Lock()
        self._running = 0  # requests inside llama.cpp (in a slot or waiting for one)
        self._cancelled = 0  # requests stopped because their consumer went away

    @staticmethod
    def _parse_options(kw: Dict[str, Any], context_length: Optional[int]):
        return (positive_int("n_parallel", kw.get("n_parallel"), DEFAULT_N_PARALLEL),
                positive_int("n_ctx", kw.get("n_ctx"), context_length),
                positive_int("n_threads", kw.get("n_threads"), os.cpu_count() or 1),
                positive_int("n_batch", kw.get("n_batch"), 2048),
                integer("n_gpu_layers", kw.get("n_gpu_layers")))

    def stats(self) -> Dict[str, Any]:
        """``n_parallel``; ``slots_busy`` (slots decoding a request now, from llama-server);
        ``requests_running`` (requests handed to llama.cpp and not yet returned: in a slot
        or waiting for one); ``requests_cancelled`` (stopped because their consumer went
        away)."""
        slots = self._get("/slots") if self._server is not None else []
        return {"n_parallel": self.n_parallel,
                "slots_busy": sum(1 for s in slots if s.get("is_processing")),
                "requests_running": self._running,
                "requests_cancelled": self._cancelled}

    # ---- loading -------------------------------------------------------------------------
    def _gpu_layers(self, xllamacpp) -> int:
        if self._n_gpu_layers is not None:
            return self._n_gpu_layers
        n_gpu = self.kwargs.get("n_gpu")
        if n_gpu in (None, 0, "0", "none", "None"):
            return 0
        gpus = [d for d in xllamacpp.get_device_info()
                if d["type"] != xllamacpp.ggml_backend_dev_type.GGML_BACKEND_DEVICE_TYPE_CPU]
        return -1 if gpus else 0  # -1: every layer

    def load(self) -> None:
        try:
            import xllamacpp
        except ImportError as e:
            raise ModelLoadError(
                "The llama.cpp engine needs xllamacpp: pip install 'xinference[llama_cpp]'"
            ) from e
        p = xllamacpp.CommonParams()
        p.model.path = self.model_path
        p.n_parallel = self.n_parallel
        p.n_ctx = self.n_ctx
        p.kv_unified = True  # one cache for all slots: a request may use all of n_ctx
        p.n_batch = self.n_batch
        p.cpuparams.n_threads = self.n_threads
        p.cpuparams_batch.n_threads = self.n_threads
        p.n_gpu_layers = self._gpu_layers(xllamacpp)
        # llama.cpp's "fit" loads the model a first time without weights to shrink the
        # arguments left unset (GPU layers, context) to the free device memory. A CPU load
        # sets both, so fitting changes nothing there and costs a second read of the
        # vocabulary and metadata (0.15-0.5 s of a SmolLM2 launch here).
        p.fit_params = p.n_gpu_layers != 0
        if self.mmproj_path:
            if not os.path.isfile(self.mmproj_path):
                raise ModelLoadError(f"multimodal projector {self.mmproj_path}: no such file")
            p.mmproj.path = self.mmproj_path
            self.supports_images = True
        p.warmup = False  # a warm-up decode costs launch time; the first request pays it
        p.ui = False
        p.endpoint_slots = True  # read by stats(); the port takes only our key
        p.api_keys = [secrets.token_hex(16)]
        debug = logging.getLogger("xinference").getEffectiveLevel() <= logging.DEBUG
        p.verbosity = 3 if debug else -1
        if not os.path.isfile(self.model_path):
            raise ModelLoadError(f"llama.cpp could not load {self.model_path}: no such file")
        try:
            self._server = xllamacpp.Server(p)
        except Exception as e:  # llama.cpp reports unreadable files as runtime errors
            raise ModelLoadError(f"llama.cpp could not load {self.model_path}: {e}") from e
        url = urlsplit(self._server.listening_address)
        self._http = (url.hostname, url.port, p.api_keys[0])
        props = self._get("/props")
        self._template = props.get("chat_template") or None
        self._special = (props.get("bos_token") or "", props.get("eos_token") or "")
        # random per server: a user's text cannot name an image slot
        self.media_marker = props.get("media_marker") or MEDIA_MARKER
        # llama.cpp's multimodal tokenizer adds the vocabulary's BOS itself (add_special),
        # where the text path sends the rendered template's own: see encode_images
        bos = self._special[0]
        self._mtmd_adds_bos = bool(
            self.supports_images and bos
            and self.tokenize("", add_special=True)[:1] == self.tokenize(bos, False)[:1])
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(2 * self.n_parallel, 8), thread_name_prefix=REQUEST_THREAD_NAME,
            initializer=_name_os_thread, initargs=(REQUEST_THREAD_NAME,))

    def _open(self, method: str, path: str, body: Optional[dict], timeout: float
              ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        host, port, key = self._http
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Authorization": f"Bearer {key}",
                                  "Content-Type": "application/json"})
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _request(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        conn, resp = self._open(method, path, body, 60)
        try:
            data = json.loads(resp.read() or b"null")
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"llama.cpp {path} answered {resp.status}: {data}")
        return data

    def _stream_completion(self, body: Dict[str, Any],
                           on_chunk: Callable[[Dict[str, Any]], bool]) -> None:
        """POST ``body`` to the embedded server's native ``/completion`` route and hand
        each streamed event to ``on_chunk`` in the shape of a ``/v1/completions`` chunk
        (:func:`_native_chunk`); closing the connection when ``on_chunk`` returns True
        makes llama-server stop the request and free its slot.

        Raises:
            InvalidRequestError: llama-server refused the request (400: the prompt or an
            image could not be tokenized, the prompt exceeds the context).
            RuntimeError: any other error llama-server reported.
        """
        conn, resp = self._open("POST", "/completion", body, STREAM_READ_TIMEOUT)
        try:
            if resp.status != 200:
                data = json.loads(resp.read() or b"null")
                error = data.get("error") if isinstance(data, dict) else None
                raise _llama_error(error or {"code": resp.status, "message": str(data)})
            for line in resp:  # server-sent events: "data: {json}" lines
                if line.startswith(b"data: "):
                    if on_chunk(_native_chunk(json.loads(line[6:]))):
                        return
                elif line.startswith(b"error: "):
                    raise _llama_error(json.loads(line[7:]))
        finally:
            conn.close()

    def _get(self, path: str) -> Any:
        return self._request("GET", path)

    # ---- what the shared base needs ------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self.n_ctx

    @property
    def eos_token_ids(self) -> List[int]:
        # llama.cpp ends a generation at every end-of-generation token of the vocabulary
        # itself (EOS, EOT, <|im_end|> ...) and never emits it.
        return []

    def tokenize(self, text: str, add_special: bool) -> List[int]:
        return self._request("POST", "/tokenize", {
            "content": text, "add_special": add_special, "parse_special": True,
        })["tokens"]

    def new_detokenizer(self) -> IncrementalDetokenizer:
        return BytesDetokenizer(self._pieces.__getitem__)

    def model_chat_template(self) -> Optional[str]:
        return self._template

    def special_token_text(self) -> Tuple[str, str]:
        return self._special

    # ---- serving -------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes:
        return self._pieces.get(token_id, b"")

    def prepare_constraint(self, states: List[RequestState]) -> None:
        """Lower the request's constraint to a llama.cpp grammar
        (:func:`~xinference.model.llm.constraints.to_gbnf`, cached per constraint), sent
        as ``grammar`` with each choice.

        Raises:
            InvalidRequestError: the schema cannot be turned into a grammar.
        """
        grammar = _grammar(states[0].params.constraint)
        for state in states:
            state.grammar = grammar

    def encode_images(self, messages, images, params, tools):
        """A prompt with images for llama-server's multimodal completion: each image part
        becomes the server's media marker (:attr:`media_marker`) in the rendered chat, and
        the images travel as base64 PNG in ``multimodal_data``; the mmproj encodes them in
        the slot. The ids returned are the text's (llama.cpp expands the markers itself):
        the request's ``prompt_tokens`` becomes llama.cpp's own count
        (``tokens_evaluated``, image tokens included) when its chunks report it. llama.cpp's
        multimodal tokenizer adds the vocabulary's BOS itself where the vocabulary asks for
        one, so a BOS the template wrote at the start is left out of ``prompt_string``.

        Raises:
            InvalidRequestError: the template cannot be rendered.
        """
        import base64
        import io

        flat = []
        for m in messages:
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(self.media_marker if part["type"] == "image" else part["text"]
                            for part in c)
            flat.append({**m, "content": c})
        prompt = self._render(flat, params, tools)
        ids = self.tokenize(prompt.replace(self.media_marker, ""), add_special=False)
        bos = self._special[0]
        text = prompt
        if self._mtmd_adds_bos and prompt.startswith(bos):
            text = prompt[len(bos):]  # else the model reads two BOS (Gemma 3, Llama 3)
        data = []
        for img in images:
            buf = io.BytesIO()
            img.image.save(buf, format="PNG")
            data.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        return prompt, ids, {"prompt_string": text, "multimodal_data": data}

    def completion_body(self, state: RequestState) -> Dict[str, Any]:
        """The llama-server completion request for ``state``: the prompt as token ids, the
        sampling parameters, the token budget, and ``n_probs`` so that every streamed
        chunk names the ids and bytes of its tokens (post-sampling candidates: the cheap
        kind, llama.cpp does not sort the whole vocabulary for them). With ``logprobs``,
        ``n_probs`` is ``top_logprobs`` (at least 1) over the raw distribution
        (``post_sampling_probs`` false: the log-softmax of the logits before penalties,
        temperature, truncation and grammar); a constrained request carries its
        ``grammar``."""
        p = state.params
        body = {
            # a prompt with images is llama-server's {prompt_string, multimodal_data}
            "prompt": state.mm_inputs or state.prompt_ids,
            "stream": True,
            "n_predict": state.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "min_p": p.min_p,
            "repeat_penalty": p.repeat_penalty,
            "repeat_last_n": PENALTY_LAST_N,
            "frequency_penalty": p.frequency_penalty,
            "presence_penalty": p.presence_penalty,
            "seed": state.seed,
            "ignore_eos": p.ignore_eos,
            "n_probs": max(1, p.top_logprobs) if p.logprobs else 1,
            "post_sampling_probs": not p.logprobs,
            "cache_prompt": True,
        }
        if state.grammar is not None:
            body["grammar"] = state.grammar
        return body

    def _feed(self, state: RequestState, chunk: Dict[str, Any],
              emit: Callable[[Any], None]) -> bool:
        """Push the tokens of one llama-server chunk into ``state``; True when the request
        is over (its own stop conditions, or llama.cpp ended it)."""
        error = chunk.get("error")
        if error is not None:
            raise _llama_error(error)
        choice = (chunk.get("choices") or [{}])[0]
        if state.mm_inputs and chunk.get("tokens_evaluated"):
            state.prompt_tokens = int(chunk["tokens_evaluated"])
        for entry in (choice.get("logprobs") or {}).get("content") or ():
            tid = entry["id"]
            if tid not in self._pieces:
                self._pieces[tid] = bytes(entry["bytes"])
            lp = None
            if state.params.logprobs:
                top = entry.get("top_logprobs") or []
                for t in top:
                    self._pieces.setdefault(t["id"], bytes(t["bytes"]))
                k = state.params.top_logprobs
                lp = (entry["logprob"], [(t["id"], t["logprob"]) for t in top[:k]])
            deltas = state.push(tid, lp)
            if deltas:
                emit(deltas)
            if state.finished:
                return True
        reason = choice.get("finish_reason")
        if reason is not None:  # llama.cpp ended it: an end-of-generation token, or the
            # n_predict budget (the request's max_tokens / what the context left)
            emit(state.finish("length" if reason == "length" else "stop"))
            return True
        return False

    def submit(self, state: RequestState, emit: Callable[[Any], None]) -> Callable[[], None]:
        """Run the request in a llama.cpp slot (it waits for one when all are busy)."""
        cancelled = threading.Event()
        body = self.completion_body(state)

        failure: List[BaseException] = []

        def on_chunk(chunk: Dict[str, Any]) -> bool:
            # Called in this request's thread for each chunk; True stops the request.
            if cancelled.is_set():
                return True
            try:
                return self._feed(state, chunk, emit)
            except BaseException as e:  # noqa: BLE001 - relayed after the call returns
                failure.append(e)
                return True

        def run() -> None:
            if cancelled.is_set():
                return
            with self._lock:
                self._running += 1
            try:
                if self.supports_images:  # a projector is loaded: see the module's doc
                    self._stream_completion(body, on_chunk)
                else:
                    result = self._server.handle_completions(body, on_chunk)
                    if isinstance(result, dict) and result.get("error") is not None:
                        failure.append(_llama_error(result["error"]))
            except Exception as e:  # noqa: BLE001 - relayed to the request's consumer
                failure.append(e)
            finally:
                with self._lock:
                    self._running -= 1
                    if cancelled.is_set() and not state.finished:
                        self._cancelled += 1
            if state.finished:
                return
            if failure:
                emit(failure[0])
            else:  # stopped early by cancel: close the request
                emit(state.finish("stop"))

        self._pool.submit(run)
        return cancelled.set


@functools.lru_cache(maxsize=64)
def _grammar_for_key(key: str) -> str:
    from ..constraints import Alternative, Constraint, to_gbnf

    alts = [Alternative(json.loads(schema), prefix, suffix)
            for prefix, schema, suffix in json.loads(key)]
    try:
        return to_gbnf(Constraint(alts))
    except Exception as e:  # the converter rejects schemas it cannot express
        raise InvalidRequestError(
            f"the JSON schema cannot be used for constrained decoding: {e}") from e


def _grammar(constraint) -> str:
    """The llama.cpp grammar of ``constraint`` (cached by its key)."""
    return _grammar_for_key(constraint.key())


def _native_chunk(chunk: Dict[str, Any]) -> Dict[str, Any]:
    """A chunk of llama-server's native ``/completion`` stream (``completion_probabilities``,
    ``stop``, ``stop_type``, ``tokens_evaluated``) in the shape of a ``/v1/completions``
    chunk, which :meth:`LlamaCppModel._feed` reads: the per-token entries (``id``,
    ``bytes``, ``logprob`` / ``top_logprobs``) are the same in both; ``stop_type``
    ``"limit"`` (the ``n_predict`` budget) is ``finish_reason`` ``"length"``."""
    if chunk.get("error") is not None:
        return chunk
    reason = None
    if chunk.get("stop"):
        reason = "length" if chunk.get("stop_type") == "limit" else "stop"
    return {"tokens_evaluated": chunk.get("tokens_evaluated"),
            "choices": [{"logprobs": {"content": chunk.get("completion_probabilities")},
                         "finish_reason": reason}]}


def _llama_error(error: Any) -> Exception:
    """The exception for an error object llama-server reported for one request: a 400 of
    llama.cpp's stays a 400 (InvalidRequestError), anything else is an engine error."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    message = error.get("message") or str(error)
    if error.get("code") == 400 or error.get("type") in (
            "invalid_request_error", "exceed_context_size_error"):
        return InvalidRequestError(f"llama.cpp: {message}")
    return RuntimeError(f"llama.cpp: {message}")
