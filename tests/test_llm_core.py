"""Unit tests of the engine-independent LLM logic (no server, no weights)."""

import pytest

from xinference.errors import InvalidRequestError
from xinference.model.llm.chat_template import CHATML_TEMPLATE, render_chat_template
from xinference.model.llm.core import stream_interval_option
from xinference.model.llm.params import GenerationParams
from xinference.model.llm.request import Delta
from xinference.model.llm.responses import ChatBuilder
from xinference.model.llm.text import BytesDetokenizer, StopStringMatcher
from xinference.model.llm.engines import engines_for_family, match_spec
from xinference.model.llm.llm_family import builtin_llm_families, normalize_size


def feed(matcher, pieces):
    out, stopped = [], False
    for p in pieces:
        text, stopped = matcher.push(p)
        out.append(text)
        if stopped:
            break
    if not stopped:
        out.append(matcher.flush())
    return "".join(out), stopped


def test_stop_string_split_across_pieces_is_never_emitted():
    m = StopStringMatcher(["</answer>"])
    emitted = []
    for p in ["Paris", " is it", "</ans", "wer> trailing"]:
        text, stopped = m.push(p)
        emitted.append(text)
        if stopped:
            break
    assert stopped
    assert "".join(emitted) == "Paris is it"
    assert "</" not in "".join(emitted)


def test_stop_prefix_that_does_not_complete_is_released():
    assert feed(StopStringMatcher(["STOP"]), ["ab", "ST", "OX", "yz"]) == ("abSTOXyz", False)


def test_earliest_of_several_stop_strings_wins():
    assert feed(StopStringMatcher(["b", "a"]), ["xxaxxb"]) == ("xx", True)


def test_bytes_detokenizer_holds_partial_utf8():
    emoji = "🙂".encode()
    pieces = {1: emoji[:2], 2: emoji[2:], 3: "é".encode()[:1], 4: "é".encode()[1:]}
    d = BytesDetokenizer(lambda t: pieces[t])
    assert d.push(1) == ""
    assert d.push(2) == "🙂"
    assert d.push(3) == ""
    assert d.push(4) == "é"
    assert d.flush() == ""


@pytest.mark.parametrize("cfg,msg", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "ten"}, "max_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"stop": 5}, "stop"),
    ({"stop_token_ids": ["a"]}, "stop_token_ids"),
    ({"chat_template_kwargs": []}, "chat_template_kwargs"),
])
def test_generation_params_reject_bad_values(cfg, msg):
    with pytest.raises(InvalidRequestError, match=msg):
        GenerationParams.from_config(cfg)


def test_generation_params_read_openai_fields():
    p = GenerationParams.from_config({
        "max_completion_tokens": 7, "stop": "x", "temperature": 0, "seed": 3,
        "stream": True, "stream_options": {"include_usage": True}, "enable_thinking": False,
    })
    assert (p.max_tokens, p.stop, p.temperature, p.seed) == (7, ["x"], 0.0, 3)
    assert p.stream and p.include_usage
    assert p.chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize("given,expected", [
    (7, "7"), ("7", "7"), (0.5, "0_5"), ("0_5", "0_5"), ("0.135", "0_135"), ("1_50", "1_5"),
])
def test_normalize_size(given, expected):
    assert normalize_size(given) == expected


def test_normalize_size_rejects_garbage():
    with pytest.raises(InvalidRequestError):
        normalize_size("big")


def test_builtin_smollm2_spec():
    fam = builtin_llm_families()["smollm2-instruct"]
    engine, spec, quant = match_spec(fam, model_engine="llama.cpp")
    assert (engine.name, spec.model_format, spec.model_size_in_billions, quant) == (
        "llama.cpp", "ggufv2", "0_135", "q4_1")
    assert set(fam.model_ability) >= {"chat", "generate"}
    # quantization matches case-insensitively
    assert match_spec(fam, quantization="Q4_1")[2] == "q4_1"


def test_match_spec_error_names_what_was_asked_and_offered():
    fam = builtin_llm_families()["smollm2-instruct"]
    with pytest.raises(InvalidRequestError) as e:
        match_spec(fam, model_format="ggufv2", quantization="q8_0")
    assert "q8_0" in e.value.message and "ggufv2/0_135B/q4_1" in e.value.message


def test_engines_for_family_lists_both_engines():
    table = engines_for_family(builtin_llm_families()["qwen2.5-instruct"])
    assert {"llama.cpp", "Transformers"} <= set(table)
    assert all(r["model_format"] == "ggufv2" for r in table["llama.cpp"])


def test_chat_template_kwargs_reach_the_template():
    tpl = "{% if enable_thinking is defined and not enable_thinking %}NOTHINK{% endif %}" \
          + CHATML_TEMPLATE
    msgs = [{"role": "user", "content": "hi"}]
    assert "NOTHINK" in render_chat_template(tpl, msgs,
                                             chat_template_kwargs={"enable_thinking": False})
    assert "NOTHINK" not in render_chat_template(tpl, msgs)


def test_template_raise_exception_is_a_bad_request():
    with pytest.raises(InvalidRequestError, match="no system"):
        render_chat_template("{{ raise_exception('no system') }}", [{"role": "user",
                                                                    "content": "x"}])


def _contents(chunks):
    return [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]


def test_stream_interval_merges_deltas_but_not_the_first():
    deltas = [Delta(t) for t in "abcdefg"] + [Delta("h", "length", 3, 8)]
    one = ChatBuilder("m", include_usage=True).stream(iter(deltas))
    three = list(ChatBuilder("m", include_usage=True, stream_interval=3).stream(iter(deltas)))
    assert _contents(one) == ["", "a", "b", "c", "d", "e", "f", "g", "h"]
    # role chunk, the first token at once, then groups of 3; the last flushes with finish
    assert _contents(three) == ["", "a", "bcd", "efg", "h"]
    assert three[-2]["choices"][0]["finish_reason"] == "length"
    assert three[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8,
                                  "total_tokens": 11}
    held = list(ChatBuilder("m", False, stream_interval=4).stream(
        iter([Delta("a"), Delta("b"), Delta("", "stop", 1, 2)])))
    assert _contents(held) == ["", "a", "b"]
    assert held[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("value,expected", [(None, 1), (1, 1), ("4", 4), (8.0, 8)])
def test_stream_interval_option(value, expected):
    assert stream_interval_option(value) == expected


@pytest.mark.parametrize("value", [0, -2, "x", 1.5, True])
def test_stream_interval_option_refuses_bad_values(value):
    with pytest.raises(InvalidRequestError, match="stream_interval"):
        stream_interval_option(value)
