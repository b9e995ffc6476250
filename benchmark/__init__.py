"""Benchmarks of the serving paths, each writing its section of ``doc/benchmarks.md``.

Run one from the repository root as a module, e.g. ``.venv/bin/python -m
benchmark.bench_serving`` (the root is then on ``sys.path``, so ``xinference`` and the
test helpers import without path edits). :mod:`benchmark.common` holds what they share.
"""
