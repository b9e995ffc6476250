"""The names of reasoning formats that are not one tag pair (lazy ``name -> (module,
class)``), checked when a family is registered. Kept apart from ``reasoning.py`` so the
family schema can check a name without importing the parsers."""

from __future__ import annotations

from typing import Dict, Tuple

# Reasoning formats that are not one tag pair, by the family's ``reasoning_parser`` name
# (lazy ``name -> (module, class)``); a family without one uses its tags.
REASONING_PARSERS: Dict[str, Tuple[str, str]] = {
    "harmony": ("xinference.model.llm.harmony", "HarmonyReasoningParser"),
}
REASONING_ALIASES: Dict[str, str] = {"openai_gptoss": "harmony", "gpt-oss": "harmony"}


def check_reasoning_parser(name: str) -> str:
    """Return ``name`` when it is a registered reasoning parser (or alias).

    Raises:
        ValueError: naming the known ones.
    """
    if REASONING_ALIASES.get(name, name) not in REASONING_PARSERS:
        known = sorted(set(REASONING_PARSERS) | set(REASONING_ALIASES))
        raise ValueError(f"unknown reasoning_parser {name!r}; known: {known}")
    return name
