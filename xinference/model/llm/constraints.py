"""Decoding constraints, independent of the engine, and their GBNF lowering (llama.cpp).

A :class:`Constraint` says what the whole output must be: one of its
:class:`Alternative` s, each a JSON value that validates against a JSON schema, with literal
text before and after it (a tool-call format's ``<tool_call>\\n`` ... ``\\n</tool_call>``).
``schema=None`` means any JSON object (``response_format: {"type": "json_object"}``).

Engines lower it: the Transformers engine compiles :func:`to_xgrammar`'s grammar with
xgrammar (``transformers/grammar.py``); the vLLM engine hands the same grammar, as EBNF text,
to vLLM's structured outputs; the llama.cpp engine sends :func:`to_gbnf`'s grammar to
llama-server. Once the constraint is complete, only an end-of-generation token is allowed,
so the output is exactly the constrained text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# Any JSON object: what response_format json_object asks for.
ANY_OBJECT_SCHEMA: Dict[str, Any] = {"type": "object", "additionalProperties": True}


@dataclass(frozen=True)
class Alternative:
    """Literal ``prefix``, then a JSON value valid against ``schema`` (None: any object),
    then literal ``suffix``."""

    schema: Optional[Dict[str, Any]] = None
    prefix: str = ""
    suffix: str = ""

    @property
    def schema_json(self) -> str:
        # key order kept: properties are generated in the order the schema lists them
        return json.dumps(self.schema if self.schema is not None else ANY_OBJECT_SCHEMA,
                          ensure_ascii=False)


@dataclass
class Constraint:
    """What the output must be: one of ``alternatives``."""

    alternatives: List[Alternative] = field(default_factory=list)

    @classmethod
    def json(cls, schema: Optional[Dict[str, Any]] = None) -> "Constraint":
        """The output is one JSON value valid against ``schema`` (None: any object)."""
        return cls([Alternative(schema)])

    def key(self) -> str:
        """A stable text key (for caches of compiled grammars)."""
        return json.dumps([[a.prefix, a.schema_json, a.suffix] for a in self.alternatives])


def strict_schema(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema that lists ``properties`` and says
    nothing of ``additionalProperties`` gets ``false`` (xgrammar's ``strict_mode``, OpenAI's
    strict structured outputs): generated objects carry only the declared keys."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (strict_schema(v) if k not in ("const", "enum", "default", "examples")
               else v) for k, v in schema.items()}
    if "properties" in out and isinstance(out["properties"], dict):
        out["properties"] = {k: strict_schema(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def _rename_root(grammar: str, root: str, new: str, sep: str) -> str:
    """Rename the definition of rule ``root`` to ``new`` in a grammar whose rules are
    ``name sep body`` (GBNF ``::=``, Lark ``:``). The converters never refer to their root
    rule from another rule, so only the definition changes."""
    return re.sub(rf"(?m)^(\s*){re.escape(root)}(\s*){re.escape(sep)}",
                  lambda m: f"{m.group(1)}{new}{m.group(2)}{sep}", grammar, count=1)


_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[A-Za-z][\w\-]*|.',
                         re.S)


def _prefix_gbnf_rules(grammar: str, prefix: str) -> str:
    """Prefix every rule name of a GBNF grammar (definitions and references, never the
    text inside string literals or character classes), so that several converted schemas
    can live in one grammar."""
    names = set(re.findall(r"(?m)^([\w\-]+)\s*::=", grammar))
    return "".join(prefix + t if t in names else t for t in _GBNF_TOKEN.findall(grammar))


def _literal(text: str) -> str:
    """A string literal both GBNF and Lark read (JSON escapes)."""
    return json.dumps(text, ensure_ascii=False)


def to_gbnf(constraint: Constraint) -> str:
    """The constraint as a llama.cpp grammar (what llama-server takes as ``grammar``).

    Each alternative's schema goes through ``xllamacpp.json_schema_to_grammar``; its root
    rule is renamed and wrapped in the literal prefix and suffix. xllamacpp builds with
    llguidance return Lark-style grammars (``%llguidance {}`` ... ``start: ...``); others
    return GBNF (``root ::= ...``); both are handled.

    Raises:
        ValueError: xllamacpp could not convert a schema.
    """
    import xllamacpp

    gbnf_rules: List[str] = []
    lark_rules: List[str] = []
    gbnf_roots: List[str] = []
    lark_roots: List[str] = []
    for n, alt in enumerate(constraint.alternatives):
        schema = strict_schema(alt.schema if alt.schema is not None else ANY_OBJECT_SCHEMA)
        # llguidance: compact JSON (no free whitespace), as the Transformers engine makes it;
        # GBNF converters ignore the unknown keyword
        schema.setdefault("x-guidance", {"whitespace_flexible": False})
        g = xllamacpp.json_schema_to_grammar(json.dumps(schema, ensure_ascii=False)).strip()
        if g.startswith("%llguidance"):
            body = g.split("\n", 1)[1] if "\n" in g else ""
            name = f"alt{n}"
            lark_rules.append(_rename_root(body, "start", name, ":"))
            parts = [_literal(alt.prefix)] if alt.prefix else []
            parts.append(name)
            if alt.suffix:
                parts.append(_literal(alt.suffix))
            lark_roots.append(" ".join(parts))
        else:
            name = f"alt{n}-root"
            gbnf_rules.append(_prefix_gbnf_rules(g, f"a{n}-").replace(
                f"a{n}-root ::=", f"{name} ::=", 1))
            parts = [_literal(alt.prefix)] if alt.prefix else []
            parts.append(name)
            if alt.suffix:
                parts.append(_literal(alt.suffix))
            gbnf_roots.append(" ".join(parts))
    if lark_rules:
        if gbnf_rules:  # pragma: no cover - one converter gives one dialect
            raise ValueError("mixed grammar dialects from json_schema_to_grammar")
        return "%llguidance {}\n" + "start: " + " | ".join(lark_roots) + "\n" + \
            "\n".join(lark_rules) + "\n"
    return "root ::= " + " | ".join(f"({r})" for r in gbnf_roots) + "\n" + \
        "\n".join(gbnf_rules) + "\n"


def to_xgrammar(constraint: Constraint):
    """The constraint as an ``xgrammar.Grammar``: per alternative, the literal prefix, the
    schema's JSON grammar without free whitespace (``any_whitespace=False``: xgrammar's
    compact separators; small models otherwise tend to loop on newlines inside a JSON
    value), the literal suffix; alternatives joined by a union. ``str()`` of the result is
    EBNF that ``xgrammar.Grammar.from_ebnf`` reads back (what vLLM's ``grammar`` takes).
    Imports xgrammar: call it in the model process.

    Raises:
        RuntimeError / ValueError: xgrammar cannot build a grammar from a schema.
    """
    import xgrammar as xgr

    alts = []
    for a in constraint.alternatives:
        parts = []
        if a.prefix:
            parts.append(xgr.Grammar.from_ebnf(f"root ::= {_literal(a.prefix)}"))
        parts.append(xgr.Grammar.from_json_schema(a.schema_json, any_whitespace=False))
        if a.suffix:
            parts.append(xgr.Grammar.from_ebnf(f"root ::= {_literal(a.suffix)}"))
        alts.append(parts[0] if len(parts) == 1 else xgr.Grammar.concat(*parts))
    return alts[0] if len(alts) == 1 else xgr.Grammar.union(*alts)
