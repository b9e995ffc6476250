"""Chat template rendering with jinja2, the way Hugging Face tokenizers render them.

Templates come from the GGUF metadata (``tokenizer.chat_template``), the tokenizer's
``chat_template`` or the family's ``chat_template``. ``chat_template_kwargs`` (for example
``enable_thinking``) are passed to the template as variables, as in
``transformers.PreTrainedTokenizer.apply_chat_template``.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any, Callable, Dict, List, Optional

from ...errors import InvalidRequestError


def _raise_exception(message: str):
    raise InvalidRequestError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env.from_string(template)


def _tojson(value, indent=None, ensure_ascii=False, separators=None, sort_keys=False):
    import json

    return json.dumps(
        value, indent=indent, ensure_ascii=ensure_ascii, separators=separators,
        sort_keys=sort_keys,
    )


# ChatML, the fallback for families that ship no template of their own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat_template(
    template: str,
    messages: List[Dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Optional[List[Dict[str, Any]]] = None,
    chat_template_kwargs: Optional[Dict[str, Any]] = None,
) -> str:
    """Render ``messages`` (OpenAI chat format) into one prompt string.

    Raises:
        InvalidRequestError: the template rejects the conversation or fails to render.
    """
    variables: Dict[str, Any] = dict(chat_template_kwargs or {})
    variables.update(
        messages=messages,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )
    if tools:
        variables["tools"] = tools
    try:
        return _compile(template).render(**variables)
    except InvalidRequestError:
        raise
    except Exception as e:  # jinja2 syntax / undefined errors
        raise InvalidRequestError(f"chat template could not be rendered: {e}") from e


# Content parts other than text, and the ability a model needs to take each.
PART_ABILITY = {"image_url": "vision", "input_image": "vision", "video_url": "vision",
                "input_audio": "audio", "audio_url": "audio", "file": "file"}


def _text_of_parts(parts: list, i: int, abilities: Optional[List[str]],
                   model_uid: Optional[str], images: Optional[list] = None,
                   fetch: Optional[Callable[[str, str], bytes]] = None):
    texts: List[Any] = []
    has_image = False
    for j, p in enumerate(parts):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            if not isinstance(p.get("text"), str):
                raise InvalidRequestError(f"messages[{i}].content[{j}].text must be a string")
            texts.append(p["text"])
        elif kind in ("image_url", "input_image") and images is not None:
            from .images import fetch_url, load_image_part

            images.append(load_image_part(p, f"messages[{i}].content[{j}]",
                                          fetch or fetch_url))
            texts.append(None)
            has_image = True
        elif kind in PART_ABILITY:
            need = PART_ABILITY[kind]
            have = list(abilities or [])
            why = (f"it lacks the '{need}' ability" if need not in have else
                   "its weights or engine here take text parts only")
            raise InvalidRequestError(
                f"messages[{i}].content[{j}] is a {kind!r} part, but model "
                f"{model_uid or ''!r} (abilities: {have}) cannot take it: {why}")
        else:
            raise InvalidRequestError(
                f"messages[{i}].content[{j}] has unknown type {kind!r}; known: "
                f"['text'] + {sorted(PART_ABILITY)}")
    if not has_image:
        return "".join(texts)
    # the processors' templates take a list of parts; an image part marks where it goes
    return [{"type": "image"} if t is None else {"type": "text", "text": t} for t in texts]


def normalize_messages(messages: Any, abilities: Optional[List[str]] = None,
                       model_uid: Optional[str] = None, images: Optional[list] = None,
                       fetch: Optional[Callable[[str, str], bytes]] = None
                       ) -> List[Dict[str, Any]]:
    """Check an OpenAI ``messages`` list for a chat template: list-of-parts content becomes
    the joined text; with ``images`` (a list, given for a model that sees), ``image_url``
    parts are decoded (:func:`.images.load_image_part`) and appended to it in order, and a
    message with images keeps its content as ``[{"type": "text", "text"} | {"type":
    "image"}]`` parts, the shape Hugging Face processor templates take (``fetch(url,
    where) -> bytes`` gets http(s) images, default :func:`.images.fetch_url`); assistant ``tool_calls`` keep their ``id`` / ``function`` with
    ``arguments`` parsed from its JSON string into an object (templates encode it once
    more otherwise); ``tool`` messages keep ``tool_call_id`` / ``name``.

    Raises:
        InvalidRequestError: ``messages`` is not a non-empty list of ``{"role", "content"}``;
        a part the model cannot take (``image_url``, ``input_audio``, ``video_url`` ...):
        the error names the model and its ``abilities``; malformed ``tool_calls``.
    """
    import json

    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise InvalidRequestError(f"messages[{i}] must be an object with a 'role'")
        m = dict(m)
        content = m.get("content")
        if isinstance(content, list):
            m["content"] = _text_of_parts(content, i, abilities, model_uid, images, fetch)
        elif content is None:
            m["content"] = ""
        elif not isinstance(content, str):
            raise InvalidRequestError(f"messages[{i}].content must be a string or a list of parts")
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise InvalidRequestError(f"messages[{i}].tool_calls must be a list")
            norm = []
            for j, c in enumerate(calls):
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise InvalidRequestError(
                        f"messages[{i}].tool_calls[{j}] must have function.name")
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise InvalidRequestError(
                            f"messages[{i}].tool_calls[{j}].function.arguments is not "
                            "valid JSON") from None
                norm.append({**c, "type": c.get("type", "function"),
                             "function": {**fn, "arguments": args or {}}})
            m["tool_calls"] = norm
        out.append(m)
    return out


GENERIC_TOOL_PROMPT = (
    "You can call functions. The functions you may call are listed, as JSON schemas, "
    "between <tools> and </tools>:\n<tools>\n{tools}\n</tools>\n\n"
    "To call a function, answer with one block per call, each a JSON object with the "
    "function's name and arguments:\n<tool_call>\n{{\"name\": <function-name>, "
    "\"arguments\": <args-json-object>}}\n</tool_call>\n"
    "The results come back between <tool_response> and </tool_response>."
)


def template_knows_tools(template: str) -> bool:
    """True when a chat template renders the ``tools`` variable itself."""
    return "tools" in template


def generic_tool_messages(messages: List[Dict[str, Any]], tools: List[Dict[str, Any]]
                          ) -> List[Dict[str, Any]]:
    """Messages for a template that knows no tools (documented in the README): the tools
    and the call format (Hermes' ``<tool_call>`` blocks, which the default tool parser
    reads) go into the system message; assistant ``tool_calls`` are written back as those
    blocks; ``tool`` results become user turns in ``<tool_response>`` blocks."""
    import json

    prompt = GENERIC_TOOL_PROMPT.format(
        tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
    out: List[Dict[str, Any]] = []
    if messages and messages[0]["role"] == "system":
        out.append({"role": "system", "content": messages[0]["content"] + "\n\n" + prompt})
        messages = messages[1:]
    else:
        out.append({"role": "system", "content": prompt})
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            blocks = [
                "<tool_call>\n" + json.dumps(
                    {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                    ensure_ascii=False) + "\n</tool_call>"
                for c in m["tool_calls"]]
            text = "\n".join(([m["content"]] if m["content"] else []) + blocks)
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            out.append({"role": "user", "content":
                        f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content", "name")})
    return out
