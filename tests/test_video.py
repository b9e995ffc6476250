"""Video models end to end on a real server: a tiny ``TextToVideoSDPipeline`` with random
weights (built by :mod:`tests.diffusion_helpers`, registered as a custom video model
through ``model_uri``), MP4s decoded with PyAV."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests

from xinference.client import RESTfulClient

from .conftest import start_server
from .diffusion_helpers import build_tiny_video

pytestmark = pytest.mark.e2e

VIDEO = "tiny-video"
FAST = {"num_inference_steps": 2}


def detail(r) -> str:
    return r.json()["detail"]


def decode(mp4: bytes):
    """``(frames, width, height, fps)`` of an MP4."""
    import av

    with av.open(io.BytesIO(mp4)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return len(frames), stream.width, stream.height, float(stream.average_rate or 0), \
            frames


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    path = build_tiny_video(tmp_path_factory.mktemp("pipelines") / "tiny-video")
    server = start_server(tmp_path_factory.mktemp("video-home"))
    try:
        r = requests.post(f"{server.endpoint}/v1/model_registrations/video", json={
            "model": json.dumps({"model_name": VIDEO, "model_family": "text2video-sd",
                                 "model_uri": f"file://{path}",
                                 "model_ability": ["text2video"], "min_image_size": 16,
                                 "max_image_size": 256,
                                 "default_generate_config": {"fps": 4}})}, timeout=30)
        assert r.status_code == 200, r.text
        RESTfulClient(server.endpoint).launch_model(model_name=VIDEO, model_type="video")
        yield server
    finally:
        server.stop()


def test_text_to_video_b64_decodes_to_the_asked_frames(srv):
    model = RESTfulClient(srv.endpoint).get_model(VIDEO)
    out = model.text_to_video("a cat on a bench", n=2, size="64*48", num_frames=5,
                              response_format="b64_json", seed=1, **FAST)
    assert len(out["data"]) == 2
    videos = [decode(base64.b64decode(d["b64_json"])) for d in out["data"]]
    for n, w, h, fps, _ in videos:
        assert (n, w, h) == (5, 64, 48)
        assert fps == 4  # the family's default
    again = model.text_to_video("a cat on a bench", size="64*48", num_frames=5,
                                response_format="b64_json", seed=1, **FAST)
    assert base64.b64decode(again["data"][0]["b64_json"]) == \
        base64.b64decode(out["data"][0]["b64_json"])


def test_text_to_video_url_is_served(srv):
    r = requests.post(f"{srv.endpoint}/v1/video/generations", json={
        "model": VIDEO, "prompt": "a red car", "size": "64x64", "num_frames": 3, "fps": 6,
        **FAST}, timeout=300)
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    assert url.startswith(srv.endpoint + "/v1/video/files/")
    f = requests.get(url, timeout=30)
    assert f.status_code == 200 and f.headers["content-type"] == "video/mp4"
    n, w, h, fps, _ = decode(f.content)
    assert (n, w, h, fps) == (3, 64, 64, 6)
    assert (srv.home / "generated" / "video" / url.rsplit("/", 1)[1]).is_file()


@pytest.mark.parametrize("body, message", [
    ({"n": 11}, "'n' must be between 1 and 10"),
    ({"size": "64"}, "'size' must be WIDTH*HEIGHT"),
    ({"size": "512x512"}, "out of range"),
    ({"response_format": "gif"}, "'response_format' must be one of"),
    ({"num_frames": 0}, "'num_frames' must be a positive integer"),
    ({"num_frames": 100000}, "'num_frames' is 100000; the limit is 512"),
    ({"fps": 0}, "'fps' must be a number"),
    ({"bogus": 1}, "Unknown option(s) ['bogus']"),
])
def test_bad_video_requests_are_400(srv, body, message):
    r = requests.post(f"{srv.endpoint}/v1/video/generations",
                      json={"model": VIDEO, "prompt": "x", **FAST, **body}, timeout=120)
    assert r.status_code == 400, r.text
    assert message in detail(r)


def test_image_routes_on_a_video_model_are_400(srv):
    r = requests.post(f"{srv.endpoint}/v1/images/generations",
                      json={"model": VIDEO, "prompt": "x"}, timeout=60)
    assert r.status_code == 400
    assert "does not support text_to_image; its abilities are ['text2video']" in detail(r)


def test_builtin_video_families(srv):
    client = RESTfulClient(srv.endpoint)
    names = {r["model_name"] for r in client.list_model_registrations("video")}
    assert {"CogVideoX-2b", "Wan2.1-T2V-1.3B"} <= names
    assert client.get_model_registration("video", "CogVideoX-2b")["model_id"] == \
        "THUDM/CogVideoX-2b"
    assert client.query_engine_by_model_name(VIDEO)["diffusers"][0]["available"] is True
