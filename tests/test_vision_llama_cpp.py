"""GGUF vision models on llama.cpp, as far as they can be checked offline: no tiny GGUF
vision model with an mmproj can be built here (llama.cpp's ``convert_hf_to_gguf.py
--mmproj`` is not packaged), so these tests cover the spec field, the projector choice and
its launch option, the path the loader resolves beside the weights, and the multimodal
request the engine hands to xllamacpp's ``handle_completions``."""

from __future__ import annotations

import pytest

from xinference.errors import InvalidRequestError
from xinference.model.llm.images import ImageInput, decode_image
from xinference.model.llm.launch import plan_llm_launch
from xinference.model.llm.llama_cpp.core import MEDIA_MARKER, LlamaCppModel
from xinference.model.llm.llm_family import LLMFamily, builtin_llm_families
from xinference.model.llm.loader import choose_projector
from xinference.model.llm.params import GenerationParams

from .vision_helpers import png_bytes

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
    assert prompt.count(MEDIA_MARKER) == 2
    assert f"{MEDIA_MARKER}What?{MEDIA_MARKER}" in prompt
    assert mm["prompt_string"] == prompt and len(mm["multimodal_data"]) == 2
    first = Image.open(io.BytesIO(base64.b64decode(mm["multimodal_data"][0])))
    assert first.size == (20, 10) and first.getpixel((0, 0)) == (255, 0, 0)
    state = m.new_request_state(ids, params)
    state.mm_inputs = mm
    body = m.completion_body(state)
    assert body["prompt"] is mm
    # llama.cpp's own count (image tokens included) replaces the text count
    m._feed(state, {"tokens_evaluated": 321, "choices": [{"finish_reason": "stop"}]},
            lambda d: None)
    assert state.prompt_tokens == 321


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
    # every GGUF spec of a family that sees carries its projector (Gemma 3 1B reads text only)
    ggufs = [s for f in fams.values() if "vision" in f.model_ability
             for s in f.model_specs if s.model_format == "ggufv2"
             and s.model_id != "ggml-org/gemma-3-1b-it-GGUF"]
    assert ggufs and all(s.multimodal_projectors for s in ggufs)
