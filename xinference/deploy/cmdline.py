"""The ``xinference`` command line (click), plus ``xinference-local`` and the cluster
entry points.

Every client command takes ``-e/--endpoint`` (default ``$XINFERENCE_ENDPOINT`` or
``http://127.0.0.1:9997``) and talks to the REST API through :class:`RESTfulClient`.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

import click

from ..constants import (
    XINFERENCE_DEFAULT_HOST,
    XINFERENCE_DEFAULT_PORT,
    XINFERENCE_ENV_API_KEY,
    default_endpoint,
)

MODEL_TYPES = ["LLM", "embedding", "rerank", "image", "audio", "video"]


def _token_file():
    from ..constants import xinference_home

    return xinference_home() / "auth" / "tokens.json"


def _saved_tokens() -> Dict[str, str]:
    try:
        data = json.loads(_token_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _client(endpoint: Optional[str], api_key: Optional[str] = None):
    """A client of ``endpoint``; its credential is ``api_key``, else
    ``$XINFERENCE_API_KEY``, else the token ``xinference login`` saved for it."""
    import os

    from ..client import RESTfulClient

    endpoint = (endpoint or default_endpoint()).rstrip("/")
    key = api_key or os.environ.get(XINFERENCE_ENV_API_KEY) or _saved_tokens().get(endpoint)
    return RESTfulClient(endpoint, api_key=key)


def _endpoint_option(f):
    f = click.option("--api-key", "-ak", default=None, help="API key, if the server needs one.")(f)
    return click.option(
        "--endpoint", "-e", default=None,
        help="Xinference endpoint (default: $XINFERENCE_ENDPOINT or http://127.0.0.1:9997).",
    )(f)


def _parse_value(text: str) -> Any:
    """``"1"`` → 1, ``"true"`` → True, ``"none"`` → None, JSON literals, else the string."""
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def _extra_kwargs(args: List[str]) -> Dict[str, Any]:
    """``--n_ctx 4096 --flag value`` → ``{"n_ctx": 4096, "flag": "value"}``.

    Raises:
        click.UsageError: an option without a value.
    """
    out: Dict[str, Any] = {}
    i = 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--"):
            raise click.UsageError(f"Unexpected argument {key!r}; extra options are --key value")
        if "=" in key:
            k, v = key[2:].split("=", 1)
            out[k.replace("-", "_")] = _parse_value(v)
            i += 1
            continue
        if i + 1 >= len(args):
            raise click.UsageError(f"Option {key} needs a value")
        out[key[2:].replace("-", "_")] = _parse_value(args[i + 1])
        i += 2
    return out


def _fail(e: Exception):
    click.echo(f"Error: {e}", err=True)
    sys.exit(1)


def _call(endpoint: Optional[str], api_key: Optional[str], method: str, *args, **kwargs):
    """``RESTfulClient.<method>(*args, **kwargs)`` on ``endpoint`` (see :func:`_client`);
    any error is printed as ``Error: ...`` and the command exits 1."""
    try:
        return getattr(_client(endpoint, api_key), method)(*args, **kwargs)
    except Exception as e:
        _fail(e)


def _table(rows, headers: List[str]) -> None:
    """Print ``rows`` as a plain-text table (tabulate, imported on use)."""
    from tabulate import tabulate

    click.echo(tabulate(rows, headers=headers))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xinference", prog_name="xinference")
def cli():
    """Xinference: serve open models with an OpenAI-compatible API."""


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@_endpoint_option
@click.option("--model-name", "-n", required=True, help="Registered model name.")
@click.option("--model-type", "-t", default="LLM", show_default=True,
              type=click.Choice(MODEL_TYPES, case_sensitive=False))
@click.option("--model-engine", "-en", default=None, help="llama.cpp, Transformers ...")
@click.option("--model-uid", "-u", default=None, help="Uid of the model (default: its name).")
@click.option("--size-in-billions", "-s", default=None, help="Model size, e.g. 7 or 0_5.")
@click.option("--model-format", "-f", default=None, help="ggufv2, pytorch ...")
@click.option("--quantization", "-q", default=None)
@click.option("--replica", "-r", default=1, type=int, show_default=True)
@click.option("--n-gpu", default="auto", show_default=True,
              help="GPUs per replica: auto, an integer, or none for CPU.")
@click.option("--request-limits", default=None, type=int,
              help="Most requests admitted at once per replica.")
@click.option("--model-path", default=None, help="Local file or directory of the weights.")
@click.option("--worker-ip", default=None)
@click.option("--gpu-idx", default=None, help="Comma-separated GPU indexes.")
@click.option("--enable-thinking/--disable-thinking", default=None,
              help="Default thinking mode for hybrid reasoning models.")
@click.option("--persist/--no-persist", default=None,
              help="Launch the model again (same uid and options) when the server restarts "
                   "(default: the server's --persist-models).")
@click.option("--enable-virtual-env/--disable-virtual-env", default=None,
              help="Run the model in its own virtual environment (default: when its engine "
                   "declares packages, or the server's --enable-virtual-env).")
@click.option("--virtual-env-package", "-vp", "virtual_env_packages", multiple=True,
              help="Extra or overriding package of the model's virtual environment "
                   "(repeatable), e.g. -vp 'transformers==5.19.0'.")
@click.pass_context
def launch(ctx, endpoint, api_key, model_name, model_type, model_engine, model_uid,
           size_in_billions, model_format, quantization, replica, n_gpu, request_limits,
           model_path, worker_ip, gpu_idx, enable_thinking, persist, enable_virtual_env,
           virtual_env_packages):
    """Launch a model. Extra ``--key value`` options are passed to the engine."""
    kwargs = _extra_kwargs(ctx.args)
    if enable_virtual_env is not None:
        kwargs["enable_virtual_env"] = enable_virtual_env
    if virtual_env_packages:
        kwargs["virtual_env_packages"] = list(virtual_env_packages)
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    if persist is not None:
        kwargs["persist"] = persist
    n_gpu_value: Any = n_gpu
    if str(n_gpu).lower() == "none":
        n_gpu_value = None
    elif str(n_gpu).isdigit():
        n_gpu_value = int(n_gpu)
    gpu_list = [int(x) for x in gpu_idx.split(",")] if gpu_idx else None
    uid = _call(
        endpoint, api_key, "launch_model",
        model_name=model_name, model_type=model_type, model_engine=model_engine,
        model_uid=model_uid, model_size_in_billions=size_in_billions,
        model_format=model_format, quantization=quantization, replica=replica,
        n_gpu=n_gpu_value, request_limits=request_limits, model_path=model_path,
        worker_ip=worker_ip, gpu_idx=gpu_list, **kwargs,
    )
    click.echo(f"Model uid: {uid}")


@cli.command("list")
@_endpoint_option
def list_models(endpoint, api_key):
    """List the running models."""
    models = _call(endpoint, api_key, "list_models")
    rows = [
        (uid, d.get("model_type"), d.get("model_name"), d.get("model_engine", ""),
         d.get("model_format", ""), d.get("model_size_in_billions", ""),
         d.get("quantization", ""), d.get("replica", 1))
        for uid, d in models.items()
    ]
    _table(rows, ["UID", "Type", "Name", "Engine", "Format", "Size (B)", "Quantization",
                  "Replica"])


@cli.command()
@_endpoint_option
@click.option("--model-uid", "-u", required=True)
def events(endpoint, api_key, model_uid):
    """Show a model's events (launch steps, progress, errors, replicas, terminate)."""
    import datetime

    rows = _call(endpoint, api_key, "get_model_events", model_uid)
    _table([(datetime.datetime.fromtimestamp(r["event_ts"]).strftime("%Y-%m-%d %H:%M:%S"),
             r["event_type"], r["kind"], r.get("replica_uid") or "", r["event_content"])
            for r in rows], ["Time", "Type", "Kind", "Replica", "Event"])


@cli.command()
@_endpoint_option
@click.option("--model-uid", "-u", required=True)
def terminate(endpoint, api_key, model_uid):
    """Terminate a running model."""
    _call(endpoint, api_key, "terminate_model", model_uid)
    click.echo(f"Model {model_uid} terminated.")


@cli.command()
@_endpoint_option
@click.option("--model-type", "-t", default="LLM", show_default=True,
              type=click.Choice(MODEL_TYPES, case_sensitive=False))
@click.option("--model-name", "-n", default=None, help="Show one registration in full.")
@click.option("--ability", "-a", "abilities", multiple=True,
              help="Only models with this ability (tools, reasoning, vision, chat ...); "
                   "repeat to require several.")
@click.option("--hub", default=None, type=click.Choice(["huggingface", "modelscope"]),
              help="Only models with weights on this hub.")
def registrations(endpoint, api_key, model_type, model_name, abilities, hub):
    """List registered models (builtin and custom)."""
    if model_name:
        click.echo(json.dumps(_call(endpoint, api_key, "get_model_registration", model_type,
                                    model_name), indent=2))
        return
    regs = _call(endpoint, api_key, "list_model_registrations", model_type, detailed=True,
                 ability=list(abilities), hub=hub)
    rows = [
        (model_type, r["model_name"], ",".join(r.get("model_lang") or r.get("language") or []),
         ",".join(r.get("model_ability", []) or []), r["is_builtin"])
        for r in regs
    ]
    _table(rows, ["Type", "Name", "Language", "Ability", "Is-built-in"])


@cli.command("cal-model-mem")
@_endpoint_option
@click.option("--model-name", "-n", required=True, help="A registered LLM.")
@click.option("--size-in-billions", "-s", default=None, help="Model size, e.g. 7 or 0_5.")
@click.option("--model-format", "-f", default=None, help="pytorch, ggufv2, awq, gptq, fp8 ...")
@click.option("--quantization", "-q", default=None, help="e.g. none, Q4_K_M, Int4.")
@click.option("--context-length", "-c", default=None, type=int,
              help="Tokens of context (default: the model's).")
@click.option("--model-engine", "-en", default=None, help="llama.cpp or Transformers.")
@click.option("--cpu", is_flag=True, default=False,
              help="A CPU load (Transformers then keeps float32 weights).")
def cal_model_mem(endpoint, api_key, model_name, size_in_billions, model_format,
                  quantization, context_length, model_engine, cpu):
    """Estimate the memory a model launch needs: weights + KV cache + activations."""
    est = _call(endpoint, api_key, "estimate_model_memory", model_name, size_in_billions,
                model_format, quantization, context_length, model_engine, cpu)
    gib = lambda b: f"{b / 2 ** 30:.2f} GiB"  # noqa: E731
    click.echo(f"model: {est['model_name']} {est['model_format']}/"
               f"{est['model_size_in_billions']}B/{est['quantization']} on {est['engine']}, "
               f"context {est['context_length']}")
    click.echo(f"weights:      {gib(est['weights'])}")
    if est["shape_source"]:
        click.echo(f"kv cache:     {gib(est['kv_cache'])}")
        click.echo(f"activations:  {gib(est['activations'])}")
    else:
        click.echo("kv cache:     unknown (no config.json found locally or on the hub)")
    click.echo(f"total:        {gib(est['total'])}")


@cli.command()
@_endpoint_option
@click.option("--model-type", "-t", default="LLM", show_default=True,
              type=click.Choice(MODEL_TYPES, case_sensitive=False))
@click.option("--file", "file_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="The custom model's JSON definition.")
@click.option("--persist/--no-persist", default=False, show_default=True,
              help="Keep the registration under XINFERENCE_HOME/model/<type>/ across restarts.")
def register(endpoint, api_key, model_type, file_path, persist):
    """Register a custom model from a JSON file (see doc/custom_models.md)."""
    with open(file_path, encoding="utf-8") as f:
        model = f.read()
    _call(endpoint, api_key, "register_model", model_type=model_type, model=model,
          persist=persist)
    name = json.loads(model).get("model_name")  # the server has parsed it
    click.echo(f"Registered {model_type} model {name}" + (" (persisted)." if persist else "."))


@cli.command()
@_endpoint_option
@click.option("--model-type", "-t", default="LLM", show_default=True,
              type=click.Choice(MODEL_TYPES, case_sensitive=False))
@click.option("--model-name", "-n", required=True)
def unregister(endpoint, api_key, model_type, model_name):
    """Unregister a custom model (refused while it is running)."""
    _call(endpoint, api_key, "unregister_model", model_type=model_type, model_name=model_name)
    click.echo(f"Unregistered {model_type} model {model_name}.")


@cli.command()
@_endpoint_option
@click.option("--model-name", "-n", required=True)
def engine(endpoint, api_key, model_name):
    """Show which engines can run a model, with formats, sizes and quantizations."""
    engines = _call(endpoint, api_key, "query_engine_by_model_name", model_name)
    rows = [
        (name, r["model_format"], r.get("model_size_in_billions") or "", ",".join(r["quantizations"]),
         ("yes" if r.get("available") else f"no ({r.get('unavailable_reason')})")
         + (" (own virtual environment, made at the first launch)"
            if r.get("available") and r.get("virtualenv") else ""))
        for name, specs in engines.items() for r in specs
    ]
    _table(rows, ["Engine", "Format", "Size (B)", "Quantizations", "Available"])


def _typed_lines(label: str):
    """The lines typed at the prompt ``label``, until an empty line or EOF."""
    while True:
        try:
            text = click.prompt(label, default="", show_default=False)
        except (EOFError, click.Abort):
            return
        if not text.strip():
            return
        yield text


def _gen_config(max_tokens: Optional[int], stream: bool) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {"stream": stream}
    if max_tokens:
        cfg["max_tokens"] = max_tokens
    return cfg


@cli.command()
@_endpoint_option
@click.option("--model-uid", "-u", required=True)
@click.option("--max-tokens", default=512, type=int, show_default=True)
@click.option("--stream/--no-stream", default=True, show_default=True)
def generate(endpoint, api_key, model_uid, max_tokens, stream):
    """Complete prompts interactively (one prompt per line; empty line or EOF to quit)."""
    model = _client(endpoint, api_key).get_model(model_uid)
    for prompt in _typed_lines("Prompt"):
        try:
            if stream:
                for chunk in model.generate(prompt, generate_config=_gen_config(max_tokens, True)):
                    if chunk.get("choices"):
                        click.echo(chunk["choices"][0].get("text", ""), nl=False)
                click.echo()
            else:
                out = model.generate(prompt, generate_config=_gen_config(max_tokens, False))
                click.echo(out["choices"][0]["text"])
        except Exception as e:
            _fail(e)


@cli.command()
@_endpoint_option
@click.option("--model-uid", "-u", required=True)
@click.option("--max-tokens", default=512, type=int, show_default=True)
@click.option("--stream/--no-stream", default=True, show_default=True)
@click.option("--system-prompt", default=None)
def chat(endpoint, api_key, model_uid, max_tokens, stream, system_prompt):
    """Chat interactively, keeping the history (empty line or EOF to quit)."""
    model = _client(endpoint, api_key).get_model(model_uid)
    if not hasattr(model, "chat"):
        _fail(RuntimeError(f"Model {model_uid} does not support chat"))
    messages: List[Dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for text in _typed_lines("User"):
        messages.append({"role": "user", "content": text})
        click.echo("Assistant: ", nl=False)
        try:
            if stream:
                parts = []
                for chunk in model.chat(messages, generate_config=_gen_config(max_tokens, True)):
                    if chunk.get("choices"):
                        piece = chunk["choices"][0]["delta"].get("content") or ""
                        parts.append(piece)
                        click.echo(piece, nl=False)
                click.echo()
                answer = "".join(parts)
            else:
                out = model.chat(messages, generate_config=_gen_config(max_tokens, False))
                answer = out["choices"][0]["message"]["content"]
                click.echo(answer)
        except Exception as e:
            _fail(e)
        messages.append({"role": "assistant", "content": answer})


@cli.command()
@click.option("--endpoint", "-e", default=None,
              help="Xinference endpoint (default: $XINFERENCE_ENDPOINT or http://127.0.0.1:9997).")
@click.option("--username", "-u", required=True)
@click.option("--password", "-p", prompt=True, hide_input=True)
def login(endpoint, username, password):
    """Log in to a server with auth on; later commands to the same endpoint use the token
    (saved under XINFERENCE_HOME/auth, readable by you only)."""
    from ..client import RESTfulClient
    from ..fileio import atomic_write

    endpoint = (endpoint or default_endpoint()).rstrip("/")
    client = RESTfulClient(endpoint)
    try:
        client.login(username, password)
    except Exception as e:
        _fail(e)
    path = _token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = dict(_saved_tokens(), **{endpoint: client.token})
    atomic_write(path, json.dumps(tokens), mode=0o600)
    click.echo(f"Logged in to {endpoint} as {username}.")


@cli.command()
@_endpoint_option
@click.option("--model-name", "-n", default=None, help="Only this model's versions.")
@click.option("--worker-ip", default=None, help="Only this worker's cache.")
def cached(endpoint, api_key, model_name, worker_ip):
    """List the model files cached under XINFERENCE_HOME/cache on each worker."""
    rows = _call(endpoint, api_key, "list_cached_models", model_name, worker_ip)
    _table([(r["model_name"], r.get("model_format") or "", r.get("model_size_in_billions") or "",
             r["model_version"], f"{r['size_bytes'] / 2 ** 20:.1f}", r["path"],
             r.get("actor_ip_address", "")) for r in rows],
           ["Name", "Format", "Size (B)", "Version", "MiB", "Path", "Worker"])


@cli.command("remove-cache")
@_endpoint_option
@click.option("--model-version", "--model_version", "model_version", required=True,
              help="The version to remove, as `xinference cached` lists it.")
@click.option("--worker-ip", default=None, help="Only this worker's cache.")
@click.option("--check", is_flag=True, default=False,
              help="Deletion confirmed: do not list the files and ask.")
def remove_cache(endpoint, api_key, model_version, worker_ip, check):
    """Delete one model version from the cache (refused while a model runs from it)."""
    client = _client(endpoint, api_key)
    try:
        if not check:
            paths = client.list_cached_model_files(model_version, worker_ip)["paths"]
            if not paths:
                _fail(RuntimeError(f"Model version {model_version} is not cached"))
            click.echo("Files to delete:")
            for p in paths:
                click.echo(f"  {p}")
            click.confirm("Delete them?", abort=True)
        result = client.remove_cached_model(model_version, worker_ip)
    except click.Abort:
        raise
    except Exception as e:
        _fail(e)
    click.echo(f"Removed {model_version}: " + ", ".join(result["paths"]))


@cli.group()
def virtualenv():
    """The engines' virtual environments (XINFERENCE_HOME/virtualenv on each worker)."""


@virtualenv.command("list")
@_endpoint_option
def virtualenv_list(endpoint, api_key):
    """List the virtual environments, their size and the models that use them."""
    rows = _call(endpoint, api_key, "list_virtualenvs")
    _table([(r["key"], f"{(r.get('size') or 0) / 2 ** 20:.0f}", len(r["packages"]),
             ", ".join(r["in_use_by"]) or "-", r.get("worker_address", ""), r["path"])
            for r in rows], ["Key", "MiB", "Packages", "In use by", "Worker", "Path"])


@virtualenv.command("remove")
@_endpoint_option
@click.argument("key")
def virtualenv_remove(endpoint, api_key, key):
    """Delete virtual environment KEY (refused while a running model uses it)."""
    out = _call(endpoint, api_key, "remove_virtualenv", key)
    click.echo(f"Removed {key}: " + ", ".join(out["removed"].values()))


@cli.command("stop-cluster")
@_endpoint_option
@click.option("--yes", "-y", is_flag=True, default=False, help="Do not ask.")
def stop_cluster(endpoint, api_key, yes):
    """Stop the whole cluster: every worker (and its models), then the supervisor."""
    if not yes:
        click.confirm("Stop the cluster and every model in it?", abort=True)
    out = _call(endpoint, api_key, "abort_cluster")
    click.echo(f"Stopping the cluster ({len(out.get('stopped_workers', []))} remote "
               "worker(s)).")


def _enable_virtual_env_option(f):
    return click.option(
        "--enable-virtual-env", is_flag=True, default=False,
        help="Models of every engine run in their own virtual environment, not only "
             "those whose engine declares packages (XINFERENCE_ENABLE_VIRTUAL_ENV=1).")(f)


def _set_virtual_env_default(enable: bool) -> None:
    import os

    from ..constants import XINFERENCE_ENV_ENABLE_VIRTUAL_ENV

    if enable:
        os.environ[XINFERENCE_ENV_ENABLE_VIRTUAL_ENV] = "1"


def _cluster_key_option(f):
    return click.option(
        "--cluster-key", default=None, envvar="XOSCAR_AUTH_KEY", show_envvar=True,
        help="Secret that every actor pool of the cluster signs its frames with (at least "
             "16 characters); frames without it are refused. Default: the supervisor's "
             "saved key (XINFERENCE_HOME/auth/cluster_key) or a new one; a worker asks "
             "the supervisor for it (see doc/security.md).")(f)


def _server_options(f):
    f = _cluster_key_option(f)
    f = click.option("--allowed-hosts", default=None,
                     help="Comma-separated Host names the REST API answers besides the "
                          "loopback ones ('*': any). A server bound to a loopback address "
                          "answers only loopback names without it "
                          "(env XINFERENCE_ALLOWED_HOSTS).")(f)
    f = click.option("--public-url", default=None,
                     help="Base URL of this server as clients reach it (e.g. behind a "
                          "proxy), used in the URLs it answers with "
                          "(env XINFERENCE_PUBLIC_URL).")(f)
    f = click.option("--max-body-bytes", default=None, type=click.IntRange(min=1),
                     help="Largest JSON or form request body, in bytes (default 1 MiB; "
                          "uploads have their own limits; env XINFERENCE_MAX_BODY_BYTES)."
                     )(f)
    f = click.option("--auth-config", default=None, type=click.Path(dir_okay=False),
                     help="JSON file with API keys, users and permissions (see "
                          "doc/team.md); auth is off without it.")(f)
    f = click.option("--persist-models", is_flag=True, default=False,
                     help="Launches are persisted unless they say persist=false: the "
                          "models come back after a restart.")(f)
    f = click.option("--log-level", default="INFO", show_default=True)(f)
    f = click.option("--port", "-p", default=XINFERENCE_DEFAULT_PORT, type=int,
                     show_default=True)(f)
    return click.option("--host", "-H", default=XINFERENCE_DEFAULT_HOST, show_default=True)(f)


def _server_setup(auth_config, persist_models, cluster_key=None, allowed_hosts=None,
                  public_url=None, max_body_bytes=None):
    """Validate ``--auth-config`` and ``--cluster-key`` before anything starts (exit 1
    naming the bad field); ``--persist-models`` becomes ``XINFERENCE_PERSIST_MODELS=1``;
    ``--allowed-hosts``, ``--public-url`` and ``--max-body-bytes`` their environment
    variables (read by :mod:`xinference.api.limits`)."""
    import os

    if cluster_key is not None:
        from ..core.cluster_key import check_key

        try:
            check_key(cluster_key)
        except ValueError as e:
            _fail(e)
    if persist_models:
        os.environ["XINFERENCE_PERSIST_MODELS"] = "1"
    for name, value in (("XINFERENCE_ALLOWED_HOSTS", allowed_hosts),
                        ("XINFERENCE_PUBLIC_URL", public_url),
                        ("XINFERENCE_MAX_BODY_BYTES", max_body_bytes)):
        if value is not None:
            os.environ[name] = str(value)
    if auth_config is None:
        return None
    from ..api.auth import AuthConfigError, load_auth_config

    try:
        return load_auth_config(auth_config)
    except AuthConfigError as e:
        _fail(e)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_server_options
@_enable_virtual_env_option
def local(host, port, log_level, persist_models, auth_config, max_body_bytes, public_url,
          allowed_hosts, cluster_key, enable_virtual_env):
    """Start supervisor, worker and REST API on this machine."""
    from .local import run_local

    _set_virtual_env_default(enable_virtual_env)
    auth = _server_setup(auth_config, persist_models, cluster_key, allowed_hosts,
                         public_url, max_body_bytes)
    run_local(host, port, log_level, auth, cluster_key)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_server_options
@click.option("--supervisor-port", default=None, type=int,
              help="Port of the supervisor's internal actor pool (default: a free one). "
                   "Fix it so a restarted supervisor is found at the same address.")
def supervisor(host, port, log_level, persist_models, auth_config, max_body_bytes,
               public_url, allowed_hosts, supervisor_port, cluster_key):
    """Start a cluster supervisor and its REST API (see doc/cluster.md)."""
    from .supervisor import run_supervisor

    auth = _server_setup(auth_config, persist_models, cluster_key, allowed_hosts,
                         public_url, max_body_bytes)
    run_supervisor(host, port, supervisor_port, log_level, auth, cluster_key)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--endpoint", "-e", default=None,
              help="The supervisor's REST endpoint, e.g. http://10.0.0.1:9997 "
                   "(default: $XINFERENCE_ENDPOINT or http://127.0.0.1:9997).")
@click.option("--host", "-H", default=XINFERENCE_DEFAULT_HOST, show_default=True,
              help="Address of this machine that the supervisor and API reach.")
@click.option("--worker-port", default=None, type=int,
              help="Port of this worker's actor pool (default: a free one).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--api-key", "-ak", default=None,
              help="API key of an admin user, when the supervisor runs with --auth-config "
                   "(default: $XINFERENCE_API_KEY).")
@_enable_virtual_env_option
@_cluster_key_option
def worker(endpoint, host, worker_port, log_level, api_key, cluster_key, enable_virtual_env):
    """Start a cluster worker that joins the supervisor at ENDPOINT (see doc/cluster.md)."""
    from .worker import run_worker

    _set_virtual_env_default(enable_virtual_env)
    try:
        run_worker(endpoint or default_endpoint(), host, worker_port, log_level, api_key,
                   cluster_key)
    except RuntimeError as e:
        _fail(e)


if __name__ == "__main__":  # pragma: no cover
    cli()
