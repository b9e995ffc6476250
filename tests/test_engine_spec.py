"""The one engine description (``xinference.model.engine``) as every model type uses it:
names and aliases, the launch-option checker, the engine rows, and each type's table."""

import importlib.util

import pytest

from xinference.errors import InvalidRequestError
from xinference.model import model_type_handlers
from xinference.model.audio.launch import ENGINES as AUDIO_ENGINES
from xinference.model.embedding.launch import SENTENCE_EMBEDDING, SENTENCE_RERANK
from xinference.model.engine import (EngineSpec, OneSpec, bool_option, check_launch_options,
                                     engine_rows, find_engine, int_option)
from xinference.model.image.launch import DIFFUSERS_IMAGE, RAPIDOCR
from xinference.model.llm.engines import LLM_ENGINES
from xinference.model.video.launch import DIFFUSERS_VIDEO

ALL = [*LLM_ENGINES.values(), *AUDIO_ENGINES.values(), DIFFUSERS_IMAGE, RAPIDOCR,
       DIFFUSERS_VIDEO, SENTENCE_EMBEDDING, SENTENCE_RERANK]

TOY = EngineSpec("Toy", "mod:Cls", ("pytorch",), ("no_such_module_xyz",), aliases=("toy-x",),
                 options={"n": int_option("a count"), "on": bool_option("a switch")})


@pytest.mark.parametrize("name", ["Toy", "toy", "TOY-X"])
def test_names_and_aliases_match_in_any_case(name):
    assert find_engine([TOY], name) is TOY


def test_unknown_engine_lists_the_known_ones():
    with pytest.raises(InvalidRequestError, match=r"Unknown model_engine 'x'.*\['Toy'\]"):
        find_engine([TOY], "x")


def test_options_are_parsed_and_the_input_is_left_alone():
    given = {"n": "32.0", "on": "yes"}
    assert check_launch_options(TOY, given, "m") == {"n": 32, "on": True}
    assert given == {"n": "32.0", "on": "yes"}


def test_unknown_option_is_refused_with_the_known_ones():
    with pytest.raises(InvalidRequestError,
                       match=r"Unknown launch option\(s\) \['bogus'\] for 'm'; known: "
                             r"\['n', 'on'\]"):
        check_launch_options(TOY, {"bogus": 1}, "m")


@pytest.mark.parametrize("opts,name", [({"n": 0}, "'n'"), ({"on": "maybe"}, "'on'")])
def test_bad_value_names_the_option(opts, name):
    with pytest.raises(InvalidRequestError, match=name):
        check_launch_options(TOY, opts, "m")


def test_defaults_outside_the_schema_are_dropped_and_the_launch_overrides():
    out = check_launch_options(TOY, {"n": 2}, "m", defaults={"n": 1, "on": "0", "x": 5})
    assert out == {"n": 2, "on": False}


def test_llm_engines_pass_options_outside_their_schema_through():
    llama = LLM_ENGINES["llama.cpp"]
    assert check_launch_options(llama, {"n_ctx": "512", "custom": "v"}, "m") == {
        "n_ctx": 512, "custom": "v"}
    with pytest.raises(InvalidRequestError, match="'n_gpu_layers' must be an integer"):
        check_launch_options(llama, {"n_gpu_layers": "1.5"}, "m")
    assert check_launch_options(llama, {"n_gpu_layers": "-1"}, "m") == {"n_gpu_layers": -1}


def test_rows_say_why_an_engine_cannot_run_here():
    family = type("F", (), {"model_name": "m"})()
    rows = engine_rows(TOY, family, [OneSpec("pytorch"), OneSpec("ggufv2")], extra=1)
    assert rows == [{"model_name": "m", "model_format": "pytorch",
                     "model_size_in_billions": None, "quantizations": ["none"], "extra": 1,
                     "available": False,
                     "unavailable_reason": "missing Python package(s): no_such_module_xyz"}]


@pytest.mark.parametrize("engine", ALL, ids=lambda e: f"{e.name}:{e.class_path}")
def test_every_engine_description_is_complete(engine):
    module, _, cls = engine.class_path.partition(":")
    assert cls and importlib.util.find_spec(module) is not None
    assert engine.formats and engine.requires and engine.options
    assert engine.virtualenv_packages == ()  # all run in the project's environment today
    assert all(opt.doc for opt in engine.options.values())


def test_every_model_type_lists_its_engines_with_the_same_row_keys():
    keys = {"model_name", "model_format", "model_size_in_billions", "quantizations",
            "available", "unavailable_reason"}
    for model_type, handler in model_type_handlers().items():
        family = next(iter(handler.builtins().values()))
        table = handler.engines(family)
        assert table, model_type
        for rows in table.values():
            assert all(keys <= set(r) for r in rows), model_type
