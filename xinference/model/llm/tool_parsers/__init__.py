"""Tool-call parsers, one per output format, looked up by the ``tool_parser`` names that
Xinference's ``llm_family.json`` uses (so custom-model JSON written for Xinference keeps
working). The table is lazy: ``name -> (module, class)``; a family naming an unknown parser
is refused when it is registered (:func:`check_tool_parser`).

Families without a ``tool_parser`` get :data:`DEFAULT_TOOL_PARSER` (Hermes' format), the one
our generic tool prompt asks for (see ``chat_template.GENERIC_TOOL_PROMPT``).
"""

from __future__ import annotations

import functools
import importlib
from typing import Dict, Tuple

from .base import ParsedDelta, ToolCallStream, ToolParser  # noqa: F401

TOOL_PARSERS: Dict[str, Tuple[str, str]] = {
    "hermes": ("hermes", "HermesToolParser"),
    "llama3": ("llama3", "Llama3ToolParser"),
    "mistral": ("mistral", "MistralToolParser"),
    "deepseek_v3": ("deepseek", "DeepSeekV3ToolParser"),
    "deepseek-v3.1": ("deepseek", "DeepSeekV31ToolParser"),
    "glm4": ("glm4", "Glm45ToolParser"),
    "qwen3_coder": ("qwen3_coder", "Qwen3CoderToolParser"),
    "kimi_k2": ("kimi_k2", "KimiK2ToolParser"),
    # harmony also splits reasoning: it lives beside reasoning.py (absolute module path)
    "gpt-oss": ("xinference.model.llm.harmony", "HarmonyToolParser"),
}
# Other names upstream writes for the same formats.
ALIASES: Dict[str, str] = {
    "qwen": "hermes",
    "qwen2.5": "hermes",
    "qwen3": "hermes",
    "llama3_json": "llama3",
    "deepseek-r1": "deepseek_v3",
    "deepseek-v3": "deepseek_v3",
    "deepseek_v31": "deepseek-v3.1",
    "glm45": "glm4",
    "glm4_moe": "glm4",
    "glm-4.5": "glm4",
    "qwen3-coder": "qwen3_coder",
    "kimi-k2": "kimi_k2",
    "openai": "gpt-oss",
    "harmony": "gpt-oss",
    "gpt_oss": "gpt-oss",
}
DEFAULT_TOOL_PARSER = "hermes"


def known_tool_parsers():
    """Every name :func:`get_tool_parser` accepts."""
    return sorted(set(TOOL_PARSERS) | set(ALIASES))


def check_tool_parser(name: str) -> str:
    """Return ``name`` when it is known.

    Raises:
        ValueError: naming the known parsers.
    """
    if ALIASES.get(name, name) not in TOOL_PARSERS:
        raise ValueError(f"unknown tool_parser {name!r}; known: {known_tool_parsers()}")
    return name


@functools.lru_cache(maxsize=None)
def get_tool_parser(name: str) -> ToolParser:
    """The (stateless, shared) parser registered as ``name`` or one of its aliases.

    Raises:
        ValueError: unknown name.
    """
    check_tool_parser(name)
    module, cls = TOOL_PARSERS[ALIASES.get(name, name)]
    path = module if "." in module else f"{__name__}.{module}"
    return getattr(importlib.import_module(path), cls)()
