"""Validation of the OpenAI Chat Completions fields that go beyond sampling: ``tools``,
``tool_choice``, ``parallel_tool_calls``, ``response_format``, ``logprobs`` /
``top_logprobs`` and ``n`` (the OpenAI API reference, "Create chat completion").

Every check raises :class:`~xinference.errors.InvalidRequestError` (HTTP 400) with a
message that names the field; a field we do not support is refused the same way instead of
being ignored (:data:`UNSUPPORTED_FIELDS`).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError

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
