"""Multimodal (CLIP-style) embeddings: images and text in one space through
``/v1/embeddings``.

A tiny random CLIP built locally (``tests/rag_helpers.build_clip``: ``CLIPModel``, a CLIP
tokenizer over a hand-written vocabulary, ``CLIPImageProcessor``, saved in
sentence-transformers' ``clip-ViT-B-32`` layout) is registered with ``modalities: ["text",
"image"]`` and ``normalize: true`` (as the builtin ``clip-ViT-B-32`` entry) and launched on
the sentence-transformers engine. Inputs mix strings, ``{"text": ...}`` and ``{"image":
"data:image/png;base64,..."}`` items (upstream Xinference's shape); every vector must equal
transformers' ``get_text_features`` / ``get_image_features`` in this process, L2-normalised.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from xinference.client import RESTfulClient

from .rag_helpers import build_clip

TOL = 1e-4
NAME = "tiny-clip"


def png_uri(seed: int, size=(40, 50)) -> str:
    from PIL import Image

    arr = (np.random.RandomState(seed).rand(size[0], size[1], 3) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def huge_png_header_uri(width=10000, height=10000) -> str:
    """A PNG whose header claims ``width`` x ``height`` pixels (the data is a stub: the
    size check must come before decoding)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                             8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def ref(clip_dir):
    """``(text_vec(texts), image_vec(uris))`` with transformers' CLIP in this process."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from xinference.model.images import decode_data_image

    model = CLIPModel.from_pretrained(f"{clip_dir}/0_CLIPModel").eval()
    proc = CLIPProcessor.from_pretrained(f"{clip_dir}/0_CLIPModel")

    def norm(t):
        t = getattr(t, "pooler_output", t)
        return torch.nn.functional.normalize(t, dim=-1).numpy()

    def text_vec(texts):
        with torch.no_grad():
            return norm(model.get_text_features(**proc(text=texts, return_tensors="pt",
                                                       padding=True)))

    def image_vec(uris):
        images = [decode_data_image(u, "ref") for u in uris]
        with torch.no_grad():
            return norm(model.get_image_features(**proc(images=images, return_tensors="pt")))

    return text_vec, image_vec


@pytest.fixture(scope="module")
def clip_uid(endpoint, clip_dir):
    family = {"model_name": NAME, "dimensions": 16, "max_tokens": 77, "language": ["en"],
              "modalities": ["text", "image"], "normalize": True,
              "model_uri": "file://" + clip_dir}
    r = requests.post(endpoint + "/v1/model_registrations/embedding", timeout=30,
                      json={"model": json.dumps(family), "persist": False})
    assert r.status_code == 200, r.text
    client = RESTfulClient(endpoint)
    uid = client.launch_model(model_name=NAME, model_type="embedding", model_uid=NAME)
    yield uid
    client.terminate_model(uid)
    client.unregister_model("embedding", NAME)


def test_text_and_images_in_one_space(endpoint, clip_uid, ref, clip_dir):
    import openai
    from transformers import CLIPTokenizer

    text_vec, image_vec = ref
    client = openai.Client(api_key="not empty", base_url=endpoint + "/v1")
    images = [png_uri(1), png_uri(2, size=(64, 30))]
    res = client.embeddings.create(model=clip_uid, input=[
        "a photo of a cat", {"image": images[0]}, {"text": "a red car"}, {"image": images[1]}])
    got = np.array([d.embedding for d in res.data])
    assert got.shape == (4, 16)  # one space: the same size for both modalities
    np.testing.assert_allclose(got[[0, 2]], text_vec(["a photo of a cat", "a red car"]),
                               atol=TOL)
    np.testing.assert_allclose(got[[1, 3]], image_vec(images), atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert abs(got[1] - got[3]).max() > 1e-3  # different images, different vectors
    # usage counts the text tokens (images count 0)
    tok = CLIPTokenizer.from_pretrained(f"{clip_dir}/0_CLIPModel")
    assert res.usage.prompt_tokens == sum(
        len(ids) for ids in tok(["a photo of a cat", "a red car"])["input_ids"])
    desc = RESTfulClient(endpoint).describe_model(clip_uid)
    assert desc["modalities"] == ["text", "image"]


def test_single_image_object_and_concurrent_requests(endpoint, clip_uid, ref):
    _, image_vec = ref
    uris = [png_uri(10 + i) for i in range(6)]

    def one(uri):
        r = requests.post(endpoint + "/v1/embeddings", timeout=60,
                          json={"model": clip_uid, "input": {"image": uri}})
        assert r.status_code == 200, r.text
        return r.json()["data"][0]["embedding"]

    with ThreadPoolExecutor(6) as pool:
        got = np.array(list(pool.map(one, uris)))
    np.testing.assert_allclose(got, image_vec(uris), atol=TOL)


def test_bad_images_are_400(endpoint, clip_uid):
    text_b64 = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
    cases = [
        ({"image": text_b64}, "not an image"),
        ({"image": "data:image/png;base64,@@@"}, "base64"),
        ({"image": "https://example.com/cat.png"}, "data:image"),
        ({"image": "/etc/passwd"}, "data:image"),
        ({"image": huge_png_header_uri()}, "pixels"),
        ({"image": png_uri(1), "text": "both"}, "one of them"),
        ({"audio": "x"}, "input[1]"),
    ]
    for item, words in cases:
        r = requests.post(endpoint + "/v1/embeddings", timeout=60,
                          json={"model": clip_uid, "input": ["fine", item]})
        assert r.status_code == 400, (item, r.text)
        assert words in r.json()["detail"] and "input[1]" in r.json()["detail"], r.text
    # the model process survived every bad image
    ok = requests.post(endpoint + "/v1/embeddings", timeout=60,
                       json={"model": clip_uid, "input": [{"image": png_uri(3)}]})
    assert ok.status_code == 200


def test_image_byte_limit(monkeypatch):
    """The limit is the one chat images have (``xinference.model.images``), read per call."""
    from xinference.errors import InvalidRequestError
    from xinference.model import images
    from xinference.model.embedding.request import decode_image_item

    uri = png_uri(4)
    assert decode_image_item(uri, "input[0]").size == (50, 40)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(InvalidRequestError,
                       match=r"input\[0\].image: image is over the 100-byte limit"):
        decode_image_item(uri, "input[0]")
