"""Virtual environments per engine and per model, made with ``uv`` through
``xoscar.virtualenv``.

An engine whose packages conflict with the project's (vLLM pins its own transformers and
fastapi) runs its model process on the Python of its own environment. This module decides
*which* packages such an environment holds (supervisor side, at plan time, nothing installed:
:func:`plan_virtualenv`), resolves that list on the worker (markers such as ``has_cuda``:
:func:`resolve_requirements`) and creates or reuses the environment
(:func:`ensure_virtualenv`, blocking: the worker runs it in a thread).

What an environment holds:

- the project itself, without its dependencies: not installed, but put first on the model
  process's ``PYTHONPATH`` as a directory holding only a link to the package the worker
  runs (:func:`project_pythonpath`), so the model process runs exactly the worker's code
  (actor classes and loaders cross the process boundary by reference), nothing of the
  gateway (fastapi, uvicorn, ...) is installed, and one environment serves every install
  or checkout of the project that shares the directory;
- what a model process imports (:data:`MODEL_PROCESS_PACKAGES`, measured by importing the
  model-process modules and listing the distributions they load), ``xoscar`` and
  ``pydantic`` pinned to the worker's versions (pickled objects cross between the two);
- the engine's packages (``EngineSpec.virtualenv_packages``), or, for an engine that
  declares none, its ``requires`` pinned to the versions installed here
  (``#system_<pkg>#``, xoscar's placeholder);
- the launch's ``virtual_env_packages``; a later entry replaces an earlier one of the same
  distribution name.

Environments live under ``XINFERENCE_HOME/virtualenv/<key>`` (or
``$XINFERENCE_VIRTUAL_ENV_DIR/<key>``), ``key`` a hash of the resolved
requirement list and the Python version. The marker file :data:`MARKER` is written last:
a directory without it (an install that failed, was cancelled or was killed) is never
trusted: the next launch removes and re-creates it. Package sources: ``uv`` gets the
indexes, find-links and constraints of pip's configuration here (``pip config list``),
unless ``UV_*`` index variables are set, in which case uv's own configuration applies.
"""

from .make import (MARKER, InstallCancel, VirtualEnvInfo, check_key, ensure_virtualenv,
                   list_virtualenvs, model_process_env, pip_source_options,
                   prepare_virtualenv, project_pythonpath, read_marker, remove_virtualenv,
                   virtualenv_root)
from .plan import (HOST_PINNED, MODEL_PROCESS_PACKAGES, VirtualEnvPlan, base_requirements,
                   engine_environment, env_key, host_requirements, marker_environment,
                   merge_requirements, plan_for_engine, plan_virtualenv, python_version,
                   requirement_name, resolve_excludes, resolve_requirements,
                   virtualenv_enabled_by_default)

__all__ = [
    "MARKER", "InstallCancel", "VirtualEnvInfo", "check_key", "ensure_virtualenv",
    "list_virtualenvs", "model_process_env", "project_pythonpath", "pip_source_options", "prepare_virtualenv", "read_marker",
    "remove_virtualenv", "virtualenv_root", "HOST_PINNED", "MODEL_PROCESS_PACKAGES",
    "VirtualEnvPlan", "base_requirements", "engine_environment", "env_key",
    "host_requirements", "marker_environment", "merge_requirements", "plan_for_engine",
    "plan_virtualenv", "python_version", "requirement_name", "resolve_excludes",
    "resolve_requirements", "virtualenv_enabled_by_default",
]
