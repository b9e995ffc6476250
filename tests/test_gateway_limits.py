"""Unit tests of the gateway's guards and the request bounds (issue 22), no server: the
login rate limiter, the Host check, node labels of ``/metrics``, error bodies without actor
addresses, the dummy bcrypt compare, reserved option names, ``max_tokens`` defaults and
ceilings, and the media bounds (decoded audio duration, image pixels, steps, frames).
The same guards are tried over HTTP in ``tests/test_security_e2e.py``."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import pytest

from xinference.api.errors import exception_to_response
from xinference.api.limits import (
    HostCheckMiddleware,
    LoginRateLimiter,
    body_limit_for,
    public_base_url,
)
from xinference.core.limits import (
    cap_max_tokens,
    completion_defaults,
    positional_names,
    request_options,
)
from xinference.core.metrics import node_labels
from xinference.errors import InvalidRequestError


def test_login_rate_limiter_refills_per_client():
    lim = LoginRateLimiter(per_minute=6)  # one every 10 s, 6 at once
    assert [lim.take("a", now=100.0) for _ in range(6)] == [0] * 6
    wait = lim.take("a", now=100.0)
    assert 1 <= wait <= 10
    assert lim.take("b", now=100.0) == 0  # another address has its own bucket
    assert lim.take("a", now=111.0) == 0  # refilled
    assert lim.take("a", now=111.0) > 0


def test_host_check():
    loop = HostCheckMiddleware(None, loopback_only=True)
    for ok in ("localhost", "localhost:9997", "127.0.0.1:1", "[::1]:9997", "127.0.0.2"):
        assert loop.permits(ok), ok
    for bad in ("attacker.example", "attacker.example:9997", "10.0.0.1", None, "",
                "localhost.attacker.example"):
        assert not loop.permits(bad), bad
    extra = HostCheckMiddleware(None, allowed={"my.host"}, loopback_only=True)
    assert extra.permits("my.host:80") and extra.permits("localhost")
    assert not extra.permits("other.host")
    assert HostCheckMiddleware(None, allowed={"*"}).permits("anything")
    # bound to a public address, nothing configured: not checked
    assert HostCheckMiddleware(None, loopback_only=False).permits("anything")


def test_body_limits_by_route():
    hdr = lambda ct: [(b"content-type", ct.encode())]  # noqa: E731
    assert body_limit_for({"path": "/v1/completions",
                           "headers": hdr("application/json")}, 1 << 20) == 1 << 20
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/embeddings"):  # inline images
        assert body_limit_for({"path": path, "headers": hdr("application/json")},
                              1 << 20) == 64 << 20
    assert body_limit_for({"path": "/token", "headers": hdr("application/json")},
                          1 << 20) == 16 * 1024
    assert body_limit_for({"path": "/v1/images/variations",
                           "headers": hdr("multipart/form-data; boundary=x")},
                          1 << 20) > 64 * (1 << 20)


def test_public_base_url_ignores_host_header(monkeypatch):
    monkeypatch.delenv("XINFERENCE_PUBLIC_URL", raising=False)
    scope = {"scheme": "http", "server": ("127.0.0.1", 9997),
             "headers": [(b"host", b"attacker.example")]}
    assert public_base_url(scope) == "http://127.0.0.1:9997"
    assert public_base_url(dict(scope, server=("::1", 80))) == "http://[::1]"
    monkeypatch.setenv("XINFERENCE_PUBLIC_URL", "https://models.example.org/x/")
    assert public_base_url(scope) == "https://models.example.org/x"


def test_node_labels_drop_ports():
    labels = node_labels(["10.0.0.2:4321", "10.0.0.1:5555", "10.0.0.1:6666"])
    assert labels == {"10.0.0.1:5555": "10.0.0.1", "10.0.0.1:6666": "10.0.0.1#2",
                      "10.0.0.2:4321": "10.0.0.2"}


class _Remote(Exception):
    """What xoscar makes of an error raised in another process: its text starts with the
    actor's address and pid."""

    def __str__(self):
        return "[address=127.0.0.1:41234, pid=4242] TypeError: boom"


def test_error_bodies_keep_addresses_in_the_log(caplog):
    with caplog.at_level(logging.WARNING, logger="xinference.api.errors"):
        resp = exception_to_response(_Remote())
        dead = exception_to_response(ConnectionRefusedError(
            "[address=127.0.0.1:41234, pid=4242] refused"))
    body = resp.body.decode()
    assert resp.status_code == 500 and "address=" not in body and "4242" not in body
    eid = resp.headers["X-Error-Id"]
    assert eid in body and "_Remote" in body
    assert dead.status_code == 503 and "41234" not in dead.body.decode()
    assert dead.headers["X-Error-Id"] in dead.body.decode()
    logged = caplog.text
    assert eid in logged and "address=127.0.0.1:41234" in logged


def test_429_has_retry_after():
    from xinference.errors import TooManyRequestsError

    e = TooManyRequestsError("full")
    e.retry_after = 7
    assert exception_to_response(e).headers["Retry-After"] == "7"
    assert exception_to_response(TooManyRequestsError("x")).headers["Retry-After"] == "1"


def test_unknown_user_pays_a_bcrypt_compare(monkeypatch):
    import bcrypt

    from xinference.api.auth import AuthService, _ConfigFile
    from xinference.errors import AuthenticationError

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(10)).decode()
    svc = AuthService(_ConfigFile.model_validate({
        "auth_config": {"secret_key": "x" * 32},
        "user_config": [{"username": "alice", "password": hashed,
                         "permissions": ["admin"]}]}))
    svc._dummy_hash()  # made once, at the first unknown user
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda a, b: calls.append(b) or real(a, b))

    def timed(user):
        t0 = time.perf_counter()
        with pytest.raises(AuthenticationError):
            svc.issue_token(user, "wrong")
        return time.perf_counter() - t0

    known = min(timed("alice") for _ in range(3))
    unknown = min(timed("mallory") for _ in range(3))
    assert len(calls) == 6  # a bcrypt compare for the unknown user too
    assert unknown > 0.3 * known, (unknown, known)
    assert calls[-1].startswith(b"$2b$10$")  # the users' own cost


def test_reserved_and_positional_option_names():
    with pytest.raises(InvalidRequestError, match="'method'"):
        request_options({"method": "x"})
    with pytest.raises(InvalidRequestError, match="'progress'"):
        request_options({"progress": 1, "seed": 2})
    assert request_options({"seed": 2, "kwargs": "{}"}) == {"seed": 2, "kwargs": "{}"}

    def engine(input, documents=None, *, cancel=None, **kw):
        pass

    assert positional_names(engine, 1) == ("input",)
    assert positional_names(engine, 2) == ("input", "documents")


def test_max_tokens_default_and_ceiling():
    assert completion_defaults({})["max_tokens"] == 16
    assert completion_defaults({"max_completion_tokens": 40}).get("max_tokens") is None
    assert completion_defaults({"max_tokens": 300})["max_tokens"] == 300
    cfg = {"max_tokens": 300}
    cap_max_tokens(cfg, 100)
    assert cfg["max_tokens"] == 100
    cfg = {"max_completion_tokens": 30}
    cap_max_tokens(cfg, 100)
    assert cfg == {"max_completion_tokens": 30}
    cfg = {}
    cap_max_tokens(cfg, 100)
    assert cfg == {"max_tokens": 100}
    cfg = {"max_tokens": "many"}
    cap_max_tokens(cfg, 100)  # left for the engine's 400
    assert cfg == {"max_tokens": "many"}


def _flac_silence(seconds: float, rate: int = 16000) -> bytes:
    from xinference.model.audio.codec import AudioEncoder

    enc = AudioEncoder("flac", rate)
    out = enc.encode(np.zeros(int(seconds * rate), np.float32))
    return out + enc.finish()


def test_decoded_audio_duration_bound():
    from xinference.model.audio.codec import decode_audio

    data = _flac_silence(5.0)
    assert decode_audio(data, 16000, max_seconds=10).size == 5 * 16000
    with pytest.raises(InvalidRequestError, match="longer than 2 seconds"):
        decode_audio(data, 16000, max_seconds=2)


def test_image_bounds():
    from PIL import Image

    from xinference.model.image.diffusers_engine import load_image
    from xinference.model.image.params import (
        MAX_INPUT_PIXELS,
        check_bounded_int,
        parse_size,
    )

    with pytest.raises(InvalidRequestError, match="limit is 4194304 pixels"):
        parse_size("4096x4096")
    assert parse_size("1024*1024") == (1024, 1024)
    assert check_bounded_int("num_inference_steps", 20, 500) == 20
    with pytest.raises(InvalidRequestError, match="'num_inference_steps' is 100000; the "
                                                  "limit is 500"):
        check_bounded_int("num_inference_steps", 100000, 500)
    with pytest.raises(InvalidRequestError, match="positive integer"):
        check_bounded_int("num_frames", 0, 512)
    # a 1-bit PNG of 10000x10000: small on the wire, refused from its header
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 1_000_000 and 10000 * 10000 > MAX_INPUT_PIXELS
    with pytest.raises(InvalidRequestError, match="'image' is 10000x10000"):
        load_image(buf.getvalue())
