"""The parameters of one Completions or Chat Completions request, validated.

:class:`GenerationParams` is built from the request body (:meth:`GenerationParams.from_config`):
sampling and stopping (``max_tokens``, ``temperature``, ``stop`` ...) and the OpenAI fields
beyond sampling, checked by the ``check_*`` functions here: ``tools``, ``tool_choice``,
``parallel_tool_calls``, ``response_format``, ``logprobs`` / ``top_logprobs`` and ``n`` (the
OpenAI API reference, "Create chat completion").

Every check raises :class:`~xinference.errors.InvalidRequestError` (HTTP 400) with a
message that names the field; a field we do not support is refused the same way instead of
being ignored (:data:`UNSUPPORTED_FIELDS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from .constraints import Constraint

MAX_TOP_LOGPROBS = 20  # OpenAI's bound
MAX_N = 16  # most choices per request (each is a sequence in the engine's batch)
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

# Fields of the OpenAI API that no engine here implements: a 400, never silence.
UNSUPPORTED_FIELDS = {
    "functions": "the legacy 'functions' field is not supported; use 'tools'",
    "function_call": "the legacy 'function_call' field is not supported; use 'tool_choice'",
    "logit_bias": "'logit_bias' is not supported",
    "audio": "audio output is not supported",
    "prediction": "'prediction' (predicted outputs) is not supported",
    "web_search_options": "'web_search_options' is not supported",
}


def check_unsupported(config: Dict[str, Any]) -> None:
    """Refuse fields we do not implement (empty / null values pass).

    Raises:
        InvalidRequestError: naming the field.
    """
    for name, why in UNSUPPORTED_FIELDS.items():
        if config.get(name) not in (None, {}, []):
            raise InvalidRequestError(why)
    modalities = config.get("modalities")
    if modalities not in (None, ["text"]):
        raise InvalidRequestError(f"'modalities' may only be [\"text\"], got {modalities!r}")


def check_json_schema(schema: Any, where: str) -> Dict[str, Any]:
    """Return ``schema`` when it is a valid JSON schema object (Draft 2020-12 meta-schema).

    Raises:
        InvalidRequestError: ``where`` is not an object or not a valid schema, with the reason.
    """
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{where} must be a JSON schema object, got {schema!r}")
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        raise InvalidRequestError(
            f"{where} is not a valid JSON schema: {e.message}"
            + (f" (at {path})" if path else "")) from None
    return schema


def check_tools(tools: Any) -> Optional[List[Dict[str, Any]]]:
    """Validate ``tools``: a list of ``{"type": "function", "function": {"name",
    "description"?, "parameters"?, "strict"?}}``; names unique, ``parameters`` a valid
    JSON schema. Returns the list (None when absent or empty).

    Raises:
        InvalidRequestError: saying which tool and what is wrong.
    """
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be a list of function tools")
    names = set()
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise InvalidRequestError(
                f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}")
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequestError(f"{where}.function must be an object")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"{where}.function has no 'name'")
        if not _FUNCTION_NAME.match(name):
            raise InvalidRequestError(
                f"{where}.function.name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if name in names:
            raise InvalidRequestError(f"{where}: function name {name!r} is used twice")
        names.add(name)
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            raise InvalidRequestError(f"{where}.function.description must be a string")
        if fn.get("parameters") is not None:
            check_json_schema(fn["parameters"], f"{where}.function.parameters")
    return tools or None


def check_tool_choice(choice: Any, tools: Optional[List[Dict[str, Any]]]) -> Optional[str]:
    """Normalize ``tool_choice`` to ``"none"``, ``"auto"``, ``"required"`` or the name of
    the function it forces (``{"type": "function", "function": {"name": ...}}``).

    Raises:
        InvalidRequestError: an unknown value, a function not among ``tools``, or a
        ``tool_choice`` other than ``"none"`` without ``tools``.
    """
    if choice is None:
        return ("auto" if tools else "none")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequestError(
                f"'tool_choice' must be 'none', 'auto', 'required' or a function, got "
                f"{choice!r}")
        name = choice
    elif (isinstance(choice, dict) and choice.get("type", "function") == "function"
          and isinstance(choice.get("function"), dict)
          and isinstance(choice["function"].get("name"), str)):
        name = choice["function"]["name"]
        known = [t["function"]["name"] for t in tools or []]
        if name not in known:
            raise InvalidRequestError(
                f"'tool_choice' names function {name!r}, which is not in 'tools' "
                f"({known})")
        return name
    else:
        raise InvalidRequestError(
            "'tool_choice' must be 'none', 'auto', 'required' or "
            "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if name != "none" and not tools:
        raise InvalidRequestError(f"'tool_choice' {name!r} needs 'tools'")
    return name


def check_response_format(rf: Any) -> Optional[Dict[str, Any]]:
    """Normalize ``response_format``: None for ``{"type": "text"}`` / absent;
    ``{"type": "json_object"}``; ``{"type": "json_schema", "name", "schema", "strict"}``.

    Raises:
        InvalidRequestError: an unknown type, a missing or invalid schema.
    """
    if rf is None:
        return None
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise InvalidRequestError("'response_format' must be an object with a 'type'")
    kind = rf["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise InvalidRequestError(
            f"'response_format.type' must be 'text', 'json_object' or 'json_schema', got "
            f"{kind!r}")
    js = rf.get("json_schema")
    if not isinstance(js, dict):
        raise InvalidRequestError(
            "'response_format' of type json_schema needs 'json_schema': {\"name\", "
            "\"schema\"}")
    name = js.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidRequestError(
            "'response_format.json_schema.name' must be 1-64 letters, digits, '_' or '-'")
    schema = js.get("schema", js.get("schema_"))
    if schema is None:
        schema = {"type": "object"}
    check_json_schema(schema, "'response_format.json_schema.schema'")
    return {"type": "json_schema", "name": name, "schema": schema,
            "strict": bool(js.get("strict", False))}


def check_logprobs(config: Dict[str, Any], chat: bool) -> Tuple[bool, int]:
    """``(logprobs wanted, top_logprobs per token)``. Chat: ``logprobs: bool`` and
    ``top_logprobs`` 0-20 (needs ``logprobs``). Completions: ``logprobs: int`` 0-20.

    Raises:
        InvalidRequestError: out of range or of the wrong type.
    """
    lp, top = config.get("logprobs"), config.get("top_logprobs")
    if chat:
        if lp is not None and not isinstance(lp, bool):
            raise InvalidRequestError(f"'logprobs' must be a boolean, got {lp!r}")
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int) or not (
                    0 <= top <= MAX_TOP_LOGPROBS):
                raise InvalidRequestError(
                    f"'top_logprobs' must be an integer in [0, {MAX_TOP_LOGPROBS}], "
                    f"got {top!r}")
            if not lp:
                raise InvalidRequestError("'top_logprobs' needs 'logprobs': true")
        return bool(lp), int(top or 0)
    if top is not None:
        raise InvalidRequestError("Completions take 'logprobs': N, not 'top_logprobs'")
    if lp is None or lp is False:
        return False, 0
    if isinstance(lp, bool) or not isinstance(lp, int) or not 0 <= lp <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(
            f"'logprobs' must be an integer in [0, {MAX_TOP_LOGPROBS}], got {lp!r}")
    return True, lp


def check_n(n: Any) -> int:
    """``n`` (choices per request) in [1, :data:`MAX_N`].

    Raises:
        InvalidRequestError: out of range or not an integer.
    """
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise InvalidRequestError(f"'n' must be an integer in [1, {MAX_N}], got {n!r}")
    return n


@dataclass
class GenerationParams:
    """Sampling and stopping parameters of one request, validated.

    Field names are OpenAI's (``max_tokens``, ``stop``, ``seed`` ...) and llama.cpp's
    (``top_k``, ``repeat_penalty``). ``temperature == 0`` means greedy decoding.
    ``ignore_eos`` (vLLM's and llama.cpp's extension) keeps generating past the model's
    end-of-generation tokens until ``max_tokens``, a ``stop`` string or a
    ``stop_token_ids`` id: fixed-length outputs for benchmarks and tests.
    """

    max_tokens: Optional[int] = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)
    seed: Optional[int] = None
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    # OpenAI fields beyond sampling (the check_* functions above)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: str = "none"  # "none" | "auto" | "required" | a function name
    parallel_tool_calls: bool = True
    response_format: Optional[Dict[str, Any]] = None
    # what decoding must produce (tool_choice required/named, response_format), set by
    # LLM.prepare_chat / prepare_generate; engines lower it (constraints.py)
    constraint: Optional[Constraint] = None

    @classmethod
    def from_config(cls, config: Optional[Dict[str, Any]], chat: bool = False
                    ) -> "GenerationParams":
        """Build from a ``generate_config`` dict (the request body minus model/prompt).
        ``chat``: the Chat Completions fields (``tools``, ``logprobs: bool`` +
        ``top_logprobs``) rather than the Completions ones (``logprobs: N``).

        Raises:
            InvalidRequestError: a value has the wrong type or range, or a field we do not
            implement is set (the ``check_*`` functions above).
        """
        config = dict(config or {})
        p = cls()
        check_unsupported(config)
        p.n = check_n(config.get("n"))
        p.logprobs, p.top_logprobs = check_logprobs(config, chat)
        p.response_format = check_response_format(config.get("response_format"))
        if chat:
            p.tools = check_tools(config.get("tools"))
            p.tool_choice = check_tool_choice(config.get("tool_choice"), p.tools)
            ptc = config.get("parallel_tool_calls")
            if ptc is not None and not isinstance(ptc, bool):
                raise InvalidRequestError("'parallel_tool_calls' must be a boolean")
            p.parallel_tool_calls = True if ptc is None else ptc
            if p.response_format and p.tool_choice not in ("none", "auto"):
                raise InvalidRequestError(
                    "'response_format' and a forced 'tool_choice' cannot be combined: the "
                    "output cannot be both a tool call and the requested JSON")
        else:
            for name in ("tools", "tool_choice"):
                if config.get(name) is not None:
                    raise InvalidRequestError(f"'{name}' is a Chat Completions field")
            if config.get("echo"):
                raise InvalidRequestError("'echo' is not supported")
            if config.get("suffix"):
                raise InvalidRequestError("'suffix' is not supported")
            if config.get("best_of") not in (None, 1) and config.get("best_of") != p.n:
                raise InvalidRequestError("'best_of' other than n is not supported")

        def num(name, lo=None, hi=None, integer=False):
            v = config.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                integer and not float(v).is_integer()
            ):
                kind = "an integer" if integer else "a number"
                raise InvalidRequestError(f"'{name}' must be {kind}, got {v!r}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise InvalidRequestError(f"'{name}' must be in [{lo}, {hi}], got {v!r}")
            return int(v) if integer else float(v)

        mt = config.get("max_tokens")
        if mt is None:
            mt = config.get("max_completion_tokens")
            config["max_tokens"] = mt
        p.max_tokens = num("max_tokens", 1, None, integer=True)
        for name, lo, hi in (
            ("temperature", 0, 2), ("top_p", 0, 1), ("min_p", 0, 1),
            ("repeat_penalty", 0, None), ("frequency_penalty", -2, 2),
            ("presence_penalty", -2, 2),
        ):
            v = num(name, lo, hi)
            if v is not None:
                setattr(p, name, v)
        top_k = num("top_k", -1, None, integer=True)
        if top_k is not None:
            p.top_k = top_k
        p.seed = num("seed", None, None, integer=True)

        stop = config.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            raise InvalidRequestError("'stop' must be a string or a list of strings")
        p.stop = [s for s in (stop or []) if s]
        ids = config.get("stop_token_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise InvalidRequestError("'stop_token_ids' must be a list of integers")
        p.stop_token_ids = list(ids)
        ignore_eos = config.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise InvalidRequestError(f"'ignore_eos' must be true or false, got {ignore_eos!r}")
        p.ignore_eos = ignore_eos
        p.stream = bool(config.get("stream", False))
        so = config.get("stream_options") or {}
        p.include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
        ctk = config.get("chat_template_kwargs")
        ctk = {} if ctk is None else ctk
        if not isinstance(ctk, dict):
            raise InvalidRequestError("'chat_template_kwargs' must be an object")
        p.chat_template_kwargs = dict(ctk)
        if config.get("enable_thinking") is not None:
            p.chat_template_kwargs["enable_thinking"] = bool(config["enable_thinking"])
        return p
