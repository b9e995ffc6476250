"""Make (or reuse) the virtual environment an engine's model processes run in, ahead of the
first launch: ``python scripts/prepare_engine_env.py vLLM``.

The environment is the one a launch of that engine would make on this machine (same plan,
same key: ``plan_for_engine`` + ``prepare_virtualenv``, as the supervisor and worker do)
under ``$XINFERENCE_VIRTUAL_ENV_DIR`` (else ``$XINFERENCE_HOME/virtualenv``);
``scripts/setup.sh`` points it at the test cache so the tests' servers reuse it. Prints
the environment's path, whether it was made now, and the seconds it took.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine", help="engine name, e.g. vLLM (case-insensitive)")
    ap.add_argument("--cuda", action="store_true",
                    help="resolve for a machine with a CUDA GPU (default: this machine)")
    args = ap.parse_args()

    from xinference.model import virtualenv as venv
    from xinference.model.llm.engines import find_engine

    info = find_engine(args.engine)
    plan = venv.plan_for_engine(info.class_path)  # what the supervisor plans for a launch
    if plan is None:
        print(f"The {info.name} engine does not use a virtual environment", file=sys.stderr)
        return 1
    has_cuda = args.cuda
    if not has_cuda:
        from xinference.core.resource import gpu_info

        has_cuda = bool(gpu_info())
    made = venv.prepare_virtualenv(plan, has_cuda, on_stage=lambda s: print(s, flush=True))
    print(f"{made.path} made={made.created} seconds={made.seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
