"""Images in chat, end to end on the Transformers engine with a tiny random-weight LLaVA
(:mod:`tests.vision_helpers`) registered as a custom ``vision`` model on the shared server,
through the OpenAI SDK; plus the URL-fetching rules of :mod:`xinference.model.llm.images`
(refused addresses, redirects, size, timeout) against local HTTP servers.
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from xinference.errors import InvalidRequestError
from xinference.model import images as shared_images
from xinference.model.llm import images as img_mod

from .test_transformers import smollm2_pytorch_dir  # noqa: F401  (fixture)
from .vision_helpers import IMAGE_TOKENS, cached_tiny_llava, data_uri, png_bytes

VISION_MODEL = "tiny-llava"


# ---- a local image server ------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        r = self.routes.get(self.path)
        if r is None:
            self.send_response(404)
            self.end_headers()
            return
        kind, value = r
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", value)
            self.end_headers()
        elif kind == "slow":
            time.sleep(value)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(value)))
            self.end_headers()
            self.wfile.write(value)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def image_server():
    """A local HTTP server (on 127.0.0.1) serving PNGs, redirects and a slow answer."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    _Handler.routes = {
        "/red.png": ("data", png_bytes("red")),
        "/blue.png": ("data", png_bytes("blue")),
        "/text.txt": ("data", b"hello, not an image"),
        "/big.png": ("data", png_bytes("gradient", size=(1500, 1500))),
        "/hop1": ("redirect", "/hop2"), "/hop2": ("redirect", "/hop3"),
        "/hop3": ("redirect", "/hop4"), "/hop4": ("redirect", "/red.png"),
        "/to-red": ("redirect", "/red.png"),
        "/to-link-local": ("redirect", "http://169.254.169.254/latest/meta-data"),
        "/slow.png": ("slow", 3.0),
    }
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield base
    srv.shutdown()


# ---- the URL rules, in-process ----------------------------------------------------------------
@pytest.mark.parametrize("ip,kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.169.254", "link-local"),
    ("10.1.2.3", "private"), ("192.168.0.1", "private"), ("172.16.5.4", "private"),
    ("fd00::1", "private"), ("0.0.0.0", "private"), ("::ffff:127.0.0.1", "loopback"),
])
def test_refused_addresses(ip, kind):
    assert img_mod.refused_address(ip) == kind


def test_public_address_allowed():
    assert img_mod.refused_address("8.8.8.8") is None
    assert img_mod.refused_address("2606:4700:4700::1111") is None


@pytest.mark.parametrize("url,what", [
    ("http://127.0.0.1:9/x.png", "loopback"),
    ("http://localhost:9/x.png", "loopback"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://10.0.0.1/x.png", "private"),
    ("http://[::1]:9/x.png", "loopback"),
])
def test_fetch_refuses_without_flag(url, what, monkeypatch):
    monkeypatch.delenv(img_mod.ALLOW_PRIVATE_ENV, raising=False)
    with pytest.raises(InvalidRequestError, match=f"messages\\[0\\].content\\[1\\].*{what}"):
        img_mod.fetch_url(url, "messages[0].content[1]")


def test_fetch_with_flag_and_redirect_rules(image_server, monkeypatch):
    monkeypatch.delenv(img_mod.ALLOW_PRIVATE_ENV, raising=False)
    got = img_mod.fetch_url(image_server + "/to-red", "p", allow_private_addresses=True)
    assert got == png_bytes("red")
    # the environment variable does the same
    monkeypatch.setenv(img_mod.ALLOW_PRIVATE_ENV, "1")
    assert img_mod.fetch_url(image_server + "/red.png", "p") == png_bytes("red")
    # at most MAX_REDIRECTS (3) hops
    with pytest.raises(InvalidRequestError, match="redirected more than 3 times"):
        img_mod.fetch_url(image_server + "/hop1", "p")
    # 404
    with pytest.raises(InvalidRequestError, match="HTTP 404"):
        img_mod.fetch_url(image_server + "/nothing", "p")
    # size cap, from Content-Length
    with pytest.raises(InvalidRequestError, match="over the 100-byte limit"):
        img_mod.fetch_url(image_server + "/red.png", "p", max_bytes=100)
    # timeout
    with pytest.raises(InvalidRequestError, match="timed out"):
        img_mod.fetch_url(image_server + "/slow.png", "p", timeout=0.5)


def test_redirect_target_is_checked_again(image_server, monkeypatch):
    """A public host that redirects to a refused one: the check after the redirect refuses
    it (simulated: the first hop's address is allowed, the second is link-local)."""
    monkeypatch.delenv(img_mod.ALLOW_PRIVATE_ENV, raising=False)
    real = img_mod.refused_address
    first = {"done": False}

    def once_allowed(ip):
        if not first["done"]:
            first["done"] = True
            return None
        return real(ip)

    monkeypatch.setattr(img_mod, "refused_address", once_allowed)
    with pytest.raises(InvalidRequestError, match="link-local address \\(169.254.169.254\\)"):
        img_mod.fetch_url(image_server + "/to-link-local", "p")


def test_data_uri_and_decode_errors():
    with pytest.raises(InvalidRequestError, match="p: a data URI must look like"):
        shared_images.decode_data_uri("data:text/plain;base64,aGk=", "p")
    with pytest.raises(InvalidRequestError, match="not valid base64"):
        shared_images.decode_data_uri("data:image/png;base64,@@@", "p")
    with pytest.raises(InvalidRequestError, match="not an image"):
        shared_images.decode_image(b"hello", "p")
    with pytest.raises(InvalidRequestError, match="unsupported image format 'TIFF'"):
        shared_images.decode_image(png_bytes("red", fmt="TIFF"), "p")
    img = img_mod.shrink_for_detail(
        shared_images.decode_image(png_bytes("red", size=(1024, 768)), "p"), "low")
    assert img.size == (512, 384) and img.mode == "RGB"
    with pytest.raises(InvalidRequestError, match="detail must be one of"):
        img_mod.image_part_source({"type": "image_url",
                                   "image_url": {"url": "data:,", "detail": "max"}}, "p")


def test_image_count_checked_before_fetching():
    """Over ``max_images``, the request is refused before any URL is fetched (these point
    at a closed port: fetching would answer a different error)."""
    parts = [{"type": "image_url", "image_url": {"url": f"http://127.0.0.1:9/{k}.png"}}
             for k in range(3)]
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, *parts[:2]]},
                {"role": "user", "content": [parts[2]]}]
    assert img_mod.image_part_locations(messages) == [
        "messages[0].content[1]", "messages[0].content[2]", "messages[1].content[0]"]
    with pytest.raises(InvalidRequestError,
                       match=r"messages\[1\].content\[0\]: the request has 3 images"):
        img_mod.check_image_count(messages, 2)
    img_mod.check_image_count(messages, 3)


# ---- end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llava_dir(smollm2_pytorch_dir) -> Path:  # noqa: F811
    return cached_tiny_llava(smollm2_pytorch_dir)


def _register(endpoint, name, path, model_id: str = "local/tiny-llava"):
    """Register the tiny vision checkpoint at ``path`` as the custom chat + vision LLM
    ``name`` (not persisted)."""
    family = {
        "version": 2, "context_length": 2048, "model_name": name, "model_lang": ["en"],
        "model_ability": ["chat", "vision"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_01",
                         "quantizations": ["none"], "model_id": model_id,
                         "model_uri": f"file://{path}"}],
    }
    r = requests.post(f"{endpoint}/v1/model_registrations/LLM",
                      json={"model": family, "persist": False}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def registered(endpoint, tiny_llava_dir) -> str:
    _register(endpoint, VISION_MODEL, tiny_llava_dir)
    yield VISION_MODEL
    requests.delete(f"{endpoint}/v1/model_registrations/LLM/{VISION_MODEL}", timeout=30)


@pytest.fixture(scope="module")
def vision_uid(endpoint, registered) -> str:
    """The tiny LLaVA launched on Transformers (3 images at most per request)."""
    r = requests.post(f"{endpoint}/v1/models", json={
        "model_name": VISION_MODEL, "model_engine": "Transformers", "max_num_seqs": 8,
        "max_images": 3}, timeout=300)
    assert r.status_code == 200, r.text
    uid = r.json()["model_uid"]
    yield uid
    requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)


@pytest.fixture(scope="module")
def oai(endpoint):
    return openai.OpenAI(base_url=endpoint + "/v1", api_key="none", max_retries=0)


def _image_part(url, detail=None):
    d = {"url": url}
    if detail:
        d["detail"] = detail
    return {"type": "image_url", "image_url": d}


def _chat(oai, uid, content, **kw):
    return oai.chat.completions.create(
        model=uid, messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 4), temperature=0, **kw)


RED, BLUE = data_uri(png_bytes("red")), data_uri(png_bytes("blue"))


def test_image_tokens_counted(oai, vision_uid):
    text_only = _chat(oai, vision_uid, [{"type": "text", "text": "What is it?"}])
    one = _chat(oai, vision_uid, [_image_part(RED), {"type": "text", "text": "What is it?"}])
    # the <image> placeholder (1 token) becomes IMAGE_TOKENS tokens
    assert one.usage.prompt_tokens == text_only.usage.prompt_tokens + IMAGE_TOKENS
    two = _chat(oai, vision_uid, [_image_part(RED), _image_part(BLUE, "high"),
                                  {"type": "text", "text": "What is it?"}])
    assert two.usage.prompt_tokens == text_only.usage.prompt_tokens + 2 * IMAGE_TOKENS


def _top(oai, uid, url):
    r = _chat(oai, uid, [_image_part(url), {"type": "text", "text": "Colour?"}],
              max_tokens=1, logprobs=True, top_logprobs=5)
    return [(t.token, round(t.logprob, 4)) for t in r.choices[0].logprobs.content[0].top_logprobs]


def test_different_images_different_logprobs(oai, vision_uid):
    red, blue = _top(oai, vision_uid, RED), _top(oai, vision_uid, BLUE)
    assert red != blue
    assert _top(oai, vision_uid, RED) == red  # and the same image gives the same


def test_images_across_conversation_and_stream(oai, vision_uid):
    messages = [
        {"role": "user", "content": [_image_part(RED), {"type": "text", "text": "This?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, _image_part(BLUE)]},
    ]
    chunks = list(oai.chat.completions.create(
        model=vision_uid, messages=messages, max_tokens=3, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage.prompt_tokens > 2 * IMAGE_TOKENS and usage.completion_tokens >= 1


def test_batches_with_text_requests(oai, vision_uid):
    """Image and text requests at once: each equals its answer alone."""
    alone_img = _chat(oai, vision_uid, [_image_part(RED), {"type": "text", "text": "Hi"}],
                      max_tokens=8, logprobs=True)
    alone_txt = _chat(oai, vision_uid, "Tell me a story", max_tokens=8, logprobs=True)
    results = {}

    def run(key, content):
        results[key] = _chat(oai, vision_uid, content, max_tokens=8, logprobs=True)

    threads = [threading.Thread(target=run, args=(f"i{i}", [_image_part(RED),
                                                            {"type": "text", "text": "Hi"}]))
               for i in range(3)]
    threads += [threading.Thread(target=run, args=(f"t{i}", "Tell me a story"))
                for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, r in results.items():
        ref = alone_img if k.startswith("i") else alone_txt
        assert r.choices[0].message.content == ref.choices[0].message.content
        got = [t.logprob for t in r.choices[0].logprobs.content]
        want = [t.logprob for t in ref.choices[0].logprobs.content]
        assert got == pytest.approx(want, abs=1e-3)


def _bad(oai, uid, content):
    with pytest.raises(openai.BadRequestError) as e:
        _chat(oai, uid, content)
    return e.value.response.json()["error"]["message"]


def test_bad_images_are_400_naming_the_part(oai, vision_uid, image_server):
    txt = {"type": "text", "text": "?"}
    assert "messages[0].content[1]: the data is not an image" in _bad(
        oai, vision_uid, [txt, _image_part(data_uri(b"not an image at all"))])
    assert "messages[0].content[0]: unsupported image format 'TIFF'" in _bad(
        oai, vision_uid, [_image_part(data_uri(png_bytes("red", fmt="TIFF"), "image/tiff"))])
    assert "messages[0].content[0]: a data URI must look like" in _bad(
        oai, vision_uid, [_image_part("data:text/plain;base64,aGk=")])
    msg = _bad(oai, vision_uid, [txt, _image_part(image_server + "/red.png")])
    assert "messages[0].content[1]" in msg and "loopback" in msg
    assert "messages[0].content[0]: image_url.detail must be one of" in _bad(
        oai, vision_uid, [_image_part(RED, "ultra")])
    assert "messages[0].content[3]" in _bad(oai, vision_uid, [_image_part(RED)] * 4) and \
        "limit of 3" in _bad(oai, vision_uid, [_image_part(RED)] * 4)
    assert "image URL must be http(s)" in _bad(
        oai, vision_uid, [_image_part("file:///etc/passwd")])
    # the model still answers afterwards
    assert _chat(oai, vision_uid, [_image_part(RED), txt]).choices[0].finish_reason


def test_private_urls_with_launch_option(endpoint, oai, registered, image_server):
    """``allow_private_image_urls`` lets the model fetch from the local image server; size,
    type and timeout rules still apply."""
    r = requests.post(f"{endpoint}/v1/models", json={
        "model_name": VISION_MODEL, "model_engine": "Transformers",
        "model_uid": "tiny-llava-lan", "allow_private_image_urls": True}, timeout=300)
    assert r.status_code == 200, r.text
    uid = r.json()["model_uid"]
    try:
        txt = {"type": "text", "text": "?"}
        by_url = _chat(oai, uid, [_image_part(image_server + "/to-red"), txt],
                       max_tokens=1, logprobs=True, top_logprobs=3)
        by_data = _chat(oai, uid, [_image_part(RED), txt], max_tokens=1, logprobs=True,
                        top_logprobs=3)
        assert by_url.choices[0].logprobs.content[0].top_logprobs[0].logprob == \
            pytest.approx(by_data.choices[0].logprobs.content[0].top_logprobs[0].logprob,
                          abs=1e-4)
        assert "messages[0].content[0]: the data is not an image" in _bad(
            oai, uid, [_image_part(image_server + "/text.txt")])
        assert "redirected more than 3 times" in _bad(oai, uid,
                                                      [_image_part(image_server + "/hop1")])
    finally:
        requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)


def test_text_only_model_still_400(oai, endpoint):
    models = [m for m in oai.models.list().data if m.id != "tiny-llava"]
    uid = next(m.id for m in models if "smollm2" in m.id)
    msg = _bad(oai, uid, [_image_part(RED), {"type": "text", "text": "?"}])
    assert "lacks the 'vision' ability" in msg
