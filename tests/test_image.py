"""Image models end to end on a real server: a tiny Stable Diffusion pipeline with random
weights (built by :mod:`tests.diffusion_helpers`, registered as a custom model through
``model_uri``) for text-to-image, image-to-image and inpainting, and the builtin PP-OCRv4
(real weights shipped in rapidocr-onnxruntime) for OCR. Clients: the OpenAI SDK,
RESTfulClient, requests and the CLI.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests

from xinference.client import RESTfulClient

from .client_adapters import Loops, make_async_client
from .conftest import start_server, wait_until
from .diffusion_helpers import build_tiny_sd

pytestmark = pytest.mark.e2e

SD = "tiny-sd"
SD_T2I = "tiny-sd-t2i"
OCR = "PP-OCRv4"
FAST = {"num_inference_steps": 2}
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def detail(r) -> str:
    return r.json()["detail"]


def png_size(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def pixels(data: bytes) -> bytes:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def png(size=(64, 64), color=(200, 30, 30), mode="RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def register(endpoint, name, path, abilities):
    r = requests.post(f"{endpoint}/v1/model_registrations/image", json={"model": json.dumps({
        "model_name": name, "model_family": "stable_diffusion",
        "model_uri": f"file://{path}", "model_ability": abilities,
        "default_generate_config": {"guidance_scale": 1.0}, "min_image_size": 16,
        "max_image_size": 512})}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    sd_dir = build_tiny_sd(tmp_path_factory.mktemp("pipelines") / "tiny-sd")
    server = start_server(tmp_path_factory.mktemp("image-home"))
    try:
        register(server.endpoint, SD, sd_dir, ["text2image", "image2image", "inpainting"])
        register(server.endpoint, SD_T2I, sd_dir, ["text2image"])
        client = RESTfulClient(server.endpoint)
        for name in (SD, SD_T2I, OCR):
            client.launch_model(model_name=name, model_type="image")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sync", "async"])
def client(srv, request):
    """``RESTfulClient``, or ``AsyncRESTfulClient`` driven by a private event loop."""
    if request.param == "sync":
        yield RESTfulClient(srv.endpoint)
        return
    loops = Loops()
    yield make_async_client(srv.endpoint, loops)
    loops.close()


@pytest.fixture(scope="module")
def openai_client(srv):
    import openai

    return openai.OpenAI(base_url=srv.endpoint + "/v1", api_key="unused")


# ---- request parameters (pure functions shared by the gateway and the engines) ----------

def test_parse_size_and_bounds():
    from xinference.errors import InvalidRequestError
    from xinference.model.image.params import check_n, parse_kwargs, parse_size

    assert parse_size("512*256") == (512, 256)
    assert parse_size("512x256") == (512, 256)
    assert parse_size(" 64 X 32 ") == (64, 32)
    assert parse_size(None) is None and parse_size("auto") is None
    for bad in ("512", "0x5", "a*b", "512*512*3", "-1x5"):
        with pytest.raises(InvalidRequestError):
            parse_size(bad)
    assert check_n("3") == 3 and check_n(None) == 1
    for bad in (0, 11, "x", True, 1.5):
        with pytest.raises(InvalidRequestError):
            check_n(bad)
    assert parse_kwargs('{"seed": 1}') == {"seed": 1} and parse_kwargs(None) == {}
    with pytest.raises(InvalidRequestError):
        parse_kwargs("[1]")


# ---- text to image ----------------------------------------------------------------------

def test_openai_sdk_generate_b64_same_seed_same_pixels(openai_client):
    def gen(seed):
        return openai_client.images.generate(
            model=SD, prompt="a red cat", n=2, size="64x48", response_format="b64_json",
            extra_body={**FAST, "seed": seed})

    first = gen(7)
    assert len(first.data) == 2
    imgs = [base64.b64decode(d.b64_json) for d in first.data]
    assert all(png_size(b) == (64, 48) for b in imgs)
    assert pixels(imgs[0]) != pixels(imgs[1])  # seeds 7 and 8
    again = [base64.b64decode(d.b64_json) for d in gen(7).data]
    assert [pixels(b) for b in again] == [pixels(b) for b in imgs]
    other = [base64.b64decode(d.b64_json) for d in gen(99).data]
    assert pixels(other[0]) != pixels(imgs[0])


def test_restful_client_url_is_served_over_http(srv, client, openai_client):
    model = client.get_model(SD)
    out = model.text_to_image("a red cat", n=1, size="64*48", response_format="url",
                              seed=7, **FAST)
    url = out["data"][0]["url"]
    assert urlparse(url).netloc == urlparse(srv.endpoint).netloc
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert png_size(r.content) == (64, 48)
    # the same seed through the OpenAI SDK (b64_json) gives the same pixels
    b64 = openai_client.images.generate(model=SD, prompt="a red cat", size="64x48",
                                        response_format="b64_json",
                                        extra_body={**FAST, "seed": 7}).data[0].b64_json
    assert pixels(base64.b64decode(b64)) == pixels(r.content)
    # the file lives under XINFERENCE_HOME and expires
    name = url.rsplit("/", 1)[1]
    path = srv.home / "generated" / "images" / name
    assert path.is_file()
    old = time.time() - 7200
    os.utime(path, (old, old))
    r = requests.get(url, timeout=30)
    assert r.status_code == 404 and "expired" in detail(r)
    assert not path.exists()
    assert requests.get(f"{srv.endpoint}/v1/images/files/../../etc/passwd",
                        timeout=10).status_code == 404


def test_urls_do_not_follow_the_host_header(srv, monkeypatch):
    """Image URLs start with the address the connection reached (or --public-url), not
    with the request's Host header (which a DNS-rebinding page or a proxy controls)."""
    port = urlparse(srv.endpoint).port
    r = requests.post(f"{srv.endpoint}/v1/images/generations", timeout=120,
                      headers={"Host": f"localhost:{port}"},
                      json={"model": SD, "prompt": "a cat", "size": "32x32", **FAST})
    assert r.status_code == 200, r.text
    assert urlparse(r.json()["data"][0]["url"]).netloc == f"127.0.0.1:{port}"
    r = requests.post(f"{srv.endpoint}/v1/images/generations", timeout=30,
                      headers={"Host": "attacker.example"},
                      json={"model": SD, "prompt": "a cat", "size": "32x32", **FAST})
    assert r.status_code == 400 and "Host" in detail(r)


def test_image_to_image_input_pixels_bounded_without_size(srv):
    """Without ``size`` the output takes the input's size: a 2100x2100 input (small as a
    flat PNG) is refused naming the limit; with a ``size`` it is not the output size."""
    big = png((2100, 2100))
    r = requests.post(f"{srv.endpoint}/v1/images/variations", timeout=120,
                      files={"image": ("big.png", big, "image/png")},
                      data={"model": SD, "prompt": "x", "response_format": "b64_json",
                            **{k: str(v) for k, v in FAST.items()}})
    assert r.status_code == 400, r.text
    assert "limit is 4194304 pixels" in detail(r), detail(r)


def test_default_size_and_kwargs_string(srv):
    r = requests.post(f"{srv.endpoint}/v1/images/generations", json={
        "model": SD, "prompt": "a dog", "response_format": "b64_json",
        "kwargs": json.dumps(FAST)}, timeout=120)
    assert r.status_code == 200, r.text
    # the tiny UNet's sample_size 32 x VAE factor 2
    assert png_size(base64.b64decode(r.json()["data"][0]["b64_json"])) == (64, 64)


# ---- image to image and inpainting ----------------------------------------------------

def test_image_to_image_keeps_the_input_size(client):
    model = client.get_model(SD)
    out = model.image_to_image(png((72, 56)), "a blue car", n=2,
                               response_format="b64_json", strength=0.6, seed=1,
                               num_inference_steps=4)
    sizes = [png_size(base64.b64decode(d["b64_json"])) for d in out["data"]]
    assert sizes == [(72, 56), (72, 56)]
    out = model.image_to_image(png((72, 56)), "a blue car", size="64*64",
                               response_format="b64_json", num_inference_steps=4)
    assert png_size(base64.b64decode(out["data"][0]["b64_json"])) == (64, 64)


def test_inpainting_returns_the_input_size(client):
    model = client.get_model(SD)
    out = model.inpainting(png((64, 48)), png((64, 48), 255, "L"), "a tree",
                           response_format="url", seed=3, **FAST)
    r = requests.get(out["data"][0]["url"], timeout=30)
    assert png_size(r.content) == (64, 48)


def test_openai_sdk_edit_with_and_without_mask(openai_client):
    from PIL import Image

    mask = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 48))  # transparent: edit the left half
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    src = png((64, 48))
    out = openai_client.images.edit(
        model=SD, image=("in.png", src, "image/png"), mask=("mask.png", buf.getvalue(),
                                                            "image/png"),
        prompt="a house", response_format="b64_json", extra_body={**FAST, "seed": 2})
    edited = base64.b64decode(out.data[0].b64_json)
    assert png_size(edited) == (64, 48)
    out = openai_client.images.edit(model=SD, image=("in.png", src, "image/png"),
                                    prompt="a house", n=2, response_format="b64_json",
                                    extra_body=FAST)
    assert [png_size(base64.b64decode(d.b64_json)) for d in out.data] == [(64, 48)] * 2


# ---- bad input ----------------------------------------------------------------------------

def _gen(srv, **body):
    body = {"model": SD, "prompt": "a cat", "response_format": "b64_json", **FAST, **body}
    return requests.post(f"{srv.endpoint}/v1/images/generations", json=body, timeout=120)


@pytest.mark.parametrize("body, message", [
    ({"size": "64"}, "'size' must be WIDTH*HEIGHT"),
    ({"size": "axb"}, "'size' must be WIDTH*HEIGHT"),
    ({"size": "1024x512"}, "out of range"),
    ({"size": "8x8"}, "each side must lie in 16..512"),
    ({"size": "68x64"}, "multiple of 8"),
    ({"n": 11}, "'n' must be between 1 and 10"),
    ({"n": 0}, "'n' must be between 1 and 10"),
    ({"response_format": "png"}, "'response_format' must be one of"),
    ({"kwargs": "{not json"}, "'kwargs' is not valid JSON"),
    ({"no_such_option": 1}, "Unknown option(s) ['no_such_option']"),
    ({"num_inference_steps": 0}, "'num_inference_steps' must be a positive integer"),
    ({"num_inference_steps": 100000}, "'num_inference_steps' is 100000; the limit is 500"),
    ({"size": "4096x4096"}, "the limit is 4194304 pixels"),
    ({"progress": 1}, "'progress' is not an option of this route"),
    ({"method": "x"}, "'method' is not an option of this route"),
    ({"seed": "x"}, "'seed' must be an integer"),
    ({"prompt": " "}, "'prompt' must be a non-empty string"),
])
def test_bad_generation_requests_are_400(srv, body, message):
    r = _gen(srv, **body)
    assert r.status_code == 400, r.text
    assert message in detail(r)


def test_bad_uploads_are_400(srv):
    e = srv.endpoint
    r = requests.post(f"{e}/v1/images/variations", data={"model": SD, "prompt": "x"},
                      files={"image": ("a.png", b"not an image", "image/png")}, timeout=60)
    assert r.status_code == 400 and "'image' is not an image" in detail(r)
    r = requests.post(f"{e}/v1/images/inpainting", data={"model": SD, "prompt": "x"},
                      files={"image": ("a.png", png((64, 48)), "image/png"),
                             "mask_image": ("m.png", png((64, 64), 255, "L"), "image/png")},
                      timeout=60)
    assert r.status_code == 400
    assert "'mask_image' is 64x64 but 'image' is 64x48" in detail(r)
    r = requests.post(f"{e}/v1/images/inpainting", data={"model": SD, "prompt": "x"},
                      files={"image": ("a.png", png(), "image/png")}, timeout=60)
    assert r.status_code == 400 and "'mask_image'" in detail(r)
    r = requests.post(f"{e}/v1/images/variations", json={"model": SD}, timeout=60)
    assert r.status_code == 400 and "multipart/form-data" in detail(r)
    r = requests.post(f"{e}/v1/images/variations", data={"model": SD, "n": "12"},
                      files={"image": ("a.png", png(), "image/png")}, timeout=60)
    assert r.status_code == 400 and "'n' must be between 1 and 10" in detail(r)


def test_abilities_the_model_lacks_are_400(srv):
    e = srv.endpoint
    r = requests.post(f"{e}/v1/images/inpainting", data={"model": SD_T2I, "prompt": "x"},
                      files={"image": ("a.png", png(), "image/png"),
                             "mask_image": ("m.png", png(), "image/png")}, timeout=60)
    assert r.status_code == 400 and "its abilities are ['text2image']" in detail(r)
    r = requests.post(f"{e}/v1/images/ocr", data={"model": SD},
                      files={"image": ("a.png", png(), "image/png")}, timeout=60)
    assert r.status_code == 400
    assert "does not support ocr" in detail(r)
    assert "['text2image', 'image2image', 'inpainting']" in detail(r)
    r = _gen(srv, model=OCR)
    assert r.status_code == 400 and "its abilities are ['ocr']" in detail(r)
    r = requests.post(f"{e}/v1/video/generations", json={"model": SD, "prompt": "x"},
                      timeout=60)
    assert r.status_code == 400 and "does not support text_to_video" in detail(r)
    r = _gen(srv, model="not-running")
    assert r.status_code == 404


# ---- progress and cancellation ------------------------------------------------------------

def test_progress_while_generating(srv, client):
    # unique per run: the module runs this test once per client, and a finished request's
    # progress stays readable for a while
    rid = f"progress-test-{uuid.uuid4().hex[:8]}"
    seen = []
    result = {}

    def run():
        result["out"] = client.get_model(SD).text_to_image(
            "a cat", size="64*64", response_format="b64_json", request_id=rid,
            num_inference_steps=40)

    t = threading.Thread(target=run)
    t.start()
    model = client.get_model(SD)

    def poll():
        try:
            p = model.get_progress(rid)
        except Exception:  # not sent yet
            return False
        seen.append(p)
        return p["status"] == "done"

    wait_until(poll, 300, "the request to finish", step=0.05)
    t.join(60)
    assert len(result["out"]["data"]) == 1
    assert seen[-1] == {"request_id": rid, "status": "done", "progress": 1.0}
    running = [p["progress"] for p in seen if p["status"] == "running"]
    assert running and all(0 <= x < 1 for x in running)
    assert running == sorted(running)
    r = requests.get(f"{srv.endpoint}/v1/requests/no-such-request/progress", timeout=10)
    assert r.status_code == 404


def test_client_that_goes_away_stops_the_generation(srv, client):
    rid = "cancel-test-1"
    body = json.dumps({"model": SD, "prompt": "a cat", "size": "64x64",
                       "response_format": "b64_json", "request_id": rid,
                       "num_inference_steps": 500}).encode()
    host, port = urlparse(srv.endpoint).hostname, urlparse(srv.endpoint).port
    sock = socket.create_connection((host, port))
    sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    model = client.get_model(SD)

    def progress():
        try:
            return model.get_progress(rid)
        except Exception:
            return None

    wait_until(lambda: (progress() or {}).get("progress", 0) > 0, 120,
               "the generation to start")
    sock.close()  # the client goes away
    final = wait_until(lambda: (p := progress()) and p["status"] == "cancelled" and p, 120,
                       "the generation to stop")
    assert final["progress"] < 0.5  # stopped long before its 500 steps
    # the engine is free again
    out = model.text_to_image("a cat", size="64*64", response_format="b64_json", **FAST)
    assert len(out["data"]) == 1


def test_duplicate_running_request_id_is_409(srv, client):
    rid = "dup-test-1"
    t = threading.Thread(target=lambda: client.get_model(SD).text_to_image(
        "a cat", size="64*64", response_format="b64_json", request_id=rid,
        num_inference_steps=60))
    t.start()
    model = client.get_model(SD)
    wait_until(lambda: _status(model, rid) == "running", 120, "the first request")
    r = _gen(srv, request_id=rid)
    t.join(300)
    assert r.status_code == 409 and "already running" in detail(r)


def _status(model, rid):
    try:
        return model.get_progress(rid)["status"]
    except Exception:
        return None


# ---- OCR on real weights ----------------------------------------------------------------

def _text_image(text: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, 32)
    img = Image.new("RGB", (640, 80), "white")
    ImageDraw.Draw(img).text((10, 20), text, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_ocr_reads_rendered_text(srv, client):
    text = "Hello Xinference OCR 2026"
    r = requests.post(f"{srv.endpoint}/v1/images/ocr", data={"model": OCR},
                      files={"image": ("t.png", _text_image(text), "image/png")}, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["text"].replace(" ", "") == text.replace(" ", "")
    line = out["data"][0]
    assert len(line["box"]) == 4 and 0.5 < line["score"] <= 1.0
    xs = [p[0] for p in line["box"]]
    assert 0 <= min(xs) < max(xs) <= 640
    out = client.get_model(OCR).ocr(_text_image("Second line 42"))
    assert out["text"].replace(" ", "") == "Secondline42"
    r = requests.post(f"{srv.endpoint}/v1/images/ocr", data={"model": OCR},
                      files={"image": ("t.png", b"GIF89a broken", "image/gif")}, timeout=60)
    assert r.status_code == 400 and "not an image" in detail(r)
    r = requests.post(f"{srv.endpoint}/v1/images/ocr",
                      data={"model": OCR, "kwargs": json.dumps({"bogus": 1})},
                      files={"image": ("t.png", _text_image("x"), "image/png")}, timeout=60)
    assert r.status_code == 400 and "Unknown OCR option(s) ['bogus']" in detail(r)


# ---- registry, engines, CLI -------------------------------------------------------------

def test_builtins_and_engines(srv, client):
    names = {r["model_name"] for r in client.list_model_registrations("image")}
    assert {"sd-turbo", "sdxl-turbo", "stable-diffusion-v1.5", "stable-diffusion-xl-base-1.0",
            "stable-diffusion-3.5-medium", "FLUX.1-schnell", "FLUX.1-dev", OCR} <= names
    reg = client.get_model_registration("image", "sd-turbo")
    assert reg["model_id"] == "stabilityai/sd-turbo"
    assert client.query_engine_by_model_name(SD)["diffusers"][0]["available"] is True
    assert client.query_engine_by_model_name(OCR)["rapidocr"][0]["available"] is True
    desc = client.describe_model(SD)
    assert desc["model_type"] == "image" and desc["model_engine"] == "diffusers"
    r = requests.post(f"{srv.endpoint}/v1/models", json={
        "model_name": SD, "model_type": "image", "model_uid": "x", "bogus": 1}, timeout=30)
    assert r.status_code == 400 and "Unknown launch option(s) ['bogus']" in detail(r)


def test_cli_launch_sd_turbo_offline_names_the_hub_id(srv):
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "xinference.deploy.cmdline", "launch", "-t", "image", "-n",
         "sd-turbo", "--endpoint", srv.endpoint], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", "")))
    assert p.returncode == 1
    assert "stabilityai/sd-turbo" in p.stderr and "model_uri=file://" in p.stderr
    assert "sd-turbo" not in RESTfulClient(srv.endpoint).list_models()
