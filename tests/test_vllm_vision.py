"""Images in chat on the vLLM engine (issue 23), end to end: a tiny random-weight Idefics3
(SmolVLM v1's architecture, :func:`tests.vision_helpers.build_tiny_idefics3`) registered as
a custom ``vision`` model and launched on vLLM's CPU build through the real server, asked
through the OpenAI SDK.

Why Idefics3 and not the tiny LLaVA of the Transformers tests: vLLM's CPU environment has
no torchvision (the PyPI wheels are CUDA builds, see doc/vllm.md), and vLLM 0.32's LLaVA,
Qwen-VL, Gemma 3, InternVL and GLM-4.1V modules import transformers' torchvision-backed
image processors when they load; its Idefics3 / SmolVLM module does not, and transformers
falls back to the PIL image processor.

Needs the vLLM engine's prepared environment, as :mod:`tests.test_vllm` (skips without it,
saying why). One server and one vLLM launch for the whole module (1 GiB CPU KV cache, at
most 3 images per request); the same weights also run on the Transformers engine, whose
answer the vLLM one must equal.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from .test_transformers import smollm2_pytorch_dir  # noqa: F401  (fixture)
from .test_vision import _bad, _chat, _image_part, _register, image_server  # noqa: F401  (fixture)
from .test_vllm import _prepared_vllm_env, _venv_dir
from .vision_helpers import IDEFICS3_PROMPT_TOKENS, cached_tiny_idefics3, data_uri, png_bytes

MODEL = "tiny-idefics3"
UID = "idefics3-vllm"
TF_UID = "idefics3-tf"
SIZE = (32, 32)
RED, BLUE = data_uri(png_bytes("red", SIZE)), data_uri(png_bytes("blue", SIZE))
GRADIENT = data_uri(png_bytes("gradient", (48, 40)))
TXT = {"type": "text", "text": "What is it?"}


# ---- no vLLM needed ----------------------------------------------------------------------
def test_max_images_is_checked_where_the_launch_is_planned():
    from xinference.errors import InvalidRequestError

    from .test_vllm import _plan

    for bad in (0, -2, "many"):
        with pytest.raises(InvalidRequestError, match="max_images"):
            _plan(model_engine="vLLM", model_format="pytorch", n_gpu=0, max_images=bad)
    _plan(model_engine="vLLM", model_format="pytorch", n_gpu=0, max_images=2)


def test_a_request_vllm_refuses_names_its_image_parts():
    from PIL import Image

    from xinference.errors import InvalidRequestError
    from xinference.model.llm.images import ImageInput
    from xinference.model.llm.vllm.common import vllm_error as _vllm_error

    images = [ImageInput(Image.new("RGB", (8, 8)), f"messages[0].content[{j}]")
              for j in (1, 3)]
    err = _vllm_error(ValueError("The decoder prompt (length 2058) is longer"), images)
    assert isinstance(err, InvalidRequestError)
    assert "messages[0].content[1], messages[0].content[3]" in err.message
    assert "length 2058" in err.message
    assert not isinstance(_vllm_error(RuntimeError("boom"), images), InvalidRequestError)


# ---- end to end: the real server, vLLM's CPU build --------------------------------------
def _launch(endpoint: str, **kw) -> None:
    r = requests.post(f"{endpoint}/v1/models", json={"model_name": MODEL, **kw}, timeout=900)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_pytorch_dir):  # noqa: F811
    """This module's server (its environments are the test cache's, where the vLLM one is
    prepared) with the tiny Idefics3 registered and launched on vLLM."""
    from tests.conftest import Server

    env_path, why = _prepared_vllm_env()
    if env_path is None:
        pytest.skip(why)
    path = cached_tiny_idefics3(smollm2_pytorch_dir)
    srv = Server(tmp_path_factory.mktemp("vllm-vision-home"),
                 env={"XINFERENCE_VIRTUAL_ENV_DIR": str(_venv_dir())})
    try:
        _register(srv.endpoint, MODEL, path, model_id="local/tiny-idefics3")
        _launch(srv.endpoint, model_uid=UID, model_engine="vLLM", model_format="pytorch",
                n_gpu=None, cpu_kvcache_space=1, max_model_len=2048, max_images=3)
    except BaseException:
        log = srv.log()[-4000:]
        srv.stop()
        pytest.fail(f"launch on vLLM failed\n{log}")
    yield srv
    try:
        for uid in (UID, TF_UID):
            requests.delete(f"{srv.endpoint}/v1/models/{uid}", timeout=120)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.endpoint + "/v1", api_key="none", max_retries=0)


def _pid(endpoint: str, uid: str = UID) -> int:
    return requests.get(f"{endpoint}/v1/models/{uid}", timeout=30).json()["replicas"][0]["pid"]


def _top(oai, content, uid=UID):
    r = _chat(oai, uid, content, max_tokens=1, logprobs=True, top_logprobs=5)
    return [(t.token, round(t.logprob, 3)) for t in r.choices[0].logprobs.content[0].top_logprobs]


def test_image_tokens_counted(oai):
    text_only = _chat(oai, UID, [TXT])
    one = _chat(oai, UID, [_image_part(RED), TXT])
    # the one-token <image> placeholder becomes the image's 7 tokens in vLLM's prompt
    assert one.usage.prompt_tokens == text_only.usage.prompt_tokens + IDEFICS3_PROMPT_TOKENS
    two = _chat(oai, UID, [_image_part(RED), _image_part(BLUE, "high"), TXT])
    assert two.usage.prompt_tokens == text_only.usage.prompt_tokens + 2 * IDEFICS3_PROMPT_TOKENS
    chunks = list(oai.chat.completions.create(
        model=UID, messages=[{"role": "user", "content": [_image_part(RED), TXT]}],
        max_tokens=4, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens == one.usage.prompt_tokens
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        one.choices[0].message.content


def test_different_images_different_logprobs(oai):
    red, blue = _top(oai, [_image_part(RED), TXT]), _top(oai, [_image_part(BLUE), TXT])
    assert red != blue
    assert _top(oai, [_image_part(RED), TXT]) == red  # and the same image gives the same
    # the order of two images in one message matters too
    assert _top(oai, [_image_part(RED), _image_part(BLUE), TXT]) != \
        _top(oai, [_image_part(BLUE), _image_part(RED), TXT])


def test_images_across_conversation_and_n(oai):
    messages = [
        {"role": "user", "content": [_image_part(RED), {"type": "text", "text": "This?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                     _image_part(GRADIENT)]},
    ]
    r = oai.chat.completions.create(model=UID, messages=messages, max_tokens=4,
                                    temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content  # greedy
    text = oai.chat.completions.create(
        model=UID, max_tokens=1, messages=[
            {"role": "user", "content": "This?"}, {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "And this?"}])
    assert r.usage.prompt_tokens == text.usage.prompt_tokens + 2 * IDEFICS3_PROMPT_TOKENS


def test_same_answer_as_the_transformers_engine(server, oai):
    """The same weights and images on the Transformers engine (the model's own HF
    processor and modeling code, in-process): same prompt tokens, same top logprobs."""
    _launch(server.endpoint, model_uid=TF_UID, model_engine="Transformers", n_gpu=None)
    for content in ([_image_part(RED), TXT], [_image_part(BLUE), _image_part(GRADIENT), TXT]):
        a = _chat(oai, UID, content, max_tokens=1, logprobs=True, top_logprobs=5)
        b = _chat(oai, TF_UID, content, max_tokens=1, logprobs=True, top_logprobs=5)
        assert a.usage.prompt_tokens == b.usage.prompt_tokens
        ta, tb = (r.choices[0].logprobs.content[0].top_logprobs for r in (a, b))
        assert [t.token for t in ta] == [t.token for t in tb]
        assert [t.logprob for t in ta] == pytest.approx([t.logprob for t in tb], abs=2e-3)
    requests.delete(f"{server.endpoint}/v1/models/{TF_UID}", timeout=120)


def test_batches_with_text_requests(oai):
    """Image and text requests at once in vLLM's batch: each equals its answer alone."""
    img = [_image_part(RED), {"type": "text", "text": "Hi"}]
    alone_img = _chat(oai, UID, img, max_tokens=8, logprobs=True)
    alone_txt = _chat(oai, UID, "Tell me a story", max_tokens=8, logprobs=True)
    results = {}

    def run(key, content):
        results[key] = _chat(oai, UID, content, max_tokens=8, logprobs=True)

    threads = [threading.Thread(target=run, args=(f"i{i}", img)) for i in range(3)]
    threads += [threading.Thread(target=run, args=(f"t{i}", "Tell me a story"))
                for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    for k, r in results.items():
        ref = alone_img if k.startswith("i") else alone_txt
        assert r.choices[0].message.content == ref.choices[0].message.content
        assert r.usage.prompt_tokens == ref.usage.prompt_tokens
        got = [t.logprob for t in r.choices[0].logprobs.content]
        want = [t.logprob for t in ref.choices[0].logprobs.content]
        assert got == pytest.approx(want, abs=1e-3)


def test_bad_images_are_400_naming_the_part_and_the_engine_survives(server, oai,
                                                                    image_server):  # noqa: F811
    pid = _pid(server.endpoint)
    assert "messages[0].content[1]: the data is not an image" in _bad(
        oai, UID, [TXT, _image_part(data_uri(b"not an image at all"))])
    assert "messages[0].content[0]: unsupported image format 'TIFF'" in _bad(
        oai, UID, [_image_part(data_uri(png_bytes("red", fmt="TIFF"), "image/tiff"))])
    msg = _bad(oai, UID, [TXT, _image_part(image_server + "/red.png")])
    assert "messages[0].content[1]" in msg and "loopback" in msg
    # max_images=3 is checked before any image is decoded, and is vLLM's own limit too
    msg = _bad(oai, UID, [_image_part(RED)] * 4)
    assert "messages[0].content[3]" in msg and "limit of 3" in msg
    assert "image_url.detail must be one of" in _bad(oai, UID, [_image_part(RED, "ultra")])
    # the model still answers, in the same process
    r = _chat(oai, UID, [_image_part(RED), _image_part(BLUE), _image_part(RED), TXT])
    assert r.choices[0].finish_reason and r.usage.prompt_tokens > 3 * IDEFICS3_PROMPT_TOKENS
    assert _pid(server.endpoint) == pid


def test_prompt_over_the_context_with_images_is_a_400(server, oai):
    """The image tokens count against ``max_model_len``: a prompt that fits as text (one
    placeholder per image) but not once vLLM expands the images is vLLM's 400, naming the
    request's image parts; the model answers afterwards."""
    def words(n):
        return [{"type": "text", "text": "word " * n}]

    p100, p200 = (_chat(oai, UID, words(n), max_tokens=1).usage.prompt_tokens
                  for n in (100, 200))
    per_word = (p200 - p100) / 100
    n = int(100 + (2040 - 3 - p100) / per_word)  # 2040 tokens with 3 placeholders
    t0 = time.monotonic()
    r = requests.post(f"{server.endpoint}/v1/chat/completions", json={
        "model": UID, "max_tokens": 2, "messages": [{"role": "user", "content": words(n) + [
            _image_part(RED)] * 3}]}, timeout=120)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert "messages[0].content[1]" in msg and "2048" in msg, msg
    assert time.monotonic() - t0 < 60
    assert _chat(oai, UID, [_image_part(RED), TXT]).choices[0].finish_reason


@pytest.mark.parametrize("kind", ["llava", "qwen2vl"])
def test_torchvision_architectures_on_the_cpu_build_say_why_they_cannot_load(
        server, smollm2_pytorch_dir, kind):  # noqa: F811
    """vLLM 0.32's LLaVA module imports a torchvision-backed image processor; Qwen2-VL's
    processor has a video processor, which needs torchvision. The CPU environment has no
    torchvision: the launch fails at once, and says so."""
    from .test_vision import _register
    from .vision_helpers import cached_tiny_llava, cached_tiny_qwen2vl

    env_path, _ = _prepared_vllm_env()
    if list(Path(env_path).glob("lib/python*/site-packages/torchvision")):
        pytest.skip("this vLLM environment has torchvision")
    build = {"llava": cached_tiny_llava, "qwen2vl": cached_tiny_qwen2vl}[kind]
    _register(server.endpoint, f"tiny-{kind}-vllm", build(smollm2_pytorch_dir))
    r = requests.post(f"{server.endpoint}/v1/models", json={
        "model_name": f"tiny-{kind}-vllm", "model_engine": "vLLM", "model_format": "pytorch",
        "n_gpu": None, "cpu_kvcache_space": 1, "max_model_len": 2048}, timeout=600)
    assert r.status_code != 200
    assert "torchvision" in r.text and "Transformers engine" in r.text, r.text
