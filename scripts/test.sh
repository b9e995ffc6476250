#!/usr/bin/env bash
# The test command: the whole suite (unit + end-to-end on real servers and models).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
# pytest's "no tests collected" (5) is a failure here too.
exit $rc
