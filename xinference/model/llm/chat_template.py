"""Chat template rendering with jinja2, the way Hugging Face tokenizers render them.

Templates come from the GGUF metadata (``tokenizer.chat_template``), the tokenizer's
``chat_template`` or the family's ``chat_template``. ``chat_template_kwargs`` (for example
``enable_thinking``) are passed to the template as variables, as in
``transformers.PreTrainedTokenizer.apply_chat_template``.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any, Dict, List, Optional

from ...core.errors import InvalidRequestError


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


def normalize_messages(messages: Any) -> List[Dict[str, Any]]:
    """Check an OpenAI ``messages`` list and flatten list-of-parts text content to a string.

    Raises:
        InvalidRequestError: ``messages`` is not a non-empty list of ``{"role", "content"}``.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise InvalidRequestError(f"messages[{i}] must be an object with a 'role'")
        m = dict(m)
        content = m.get("content")
        if isinstance(content, list):
            m["content"] = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        elif content is None:
            m["content"] = ""
        elif not isinstance(content, str):
            raise InvalidRequestError(f"messages[{i}].content must be a string or a list of parts")
        out.append(m)
    return out
