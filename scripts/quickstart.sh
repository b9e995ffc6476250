#!/usr/bin/env bash
# Set up, start xinference-local, launch the bundled SmolLM2 and ask it a question.
# The server keeps running afterwards (Ctrl-C stops it and every model process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PORT=${XINFERENCE_PORT:-9997}
export XINFERENCE_ENDPOINT="http://127.0.0.1:$PORT"
.venv/bin/xinference-local --host 127.0.0.1 --port "$PORT" --log-level INFO &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
  curl -sf "$XINFERENCE_ENDPOINT/status" >/dev/null && break
  sleep 0.2
done
.venv/bin/xinference launch --model-name smollm2-instruct --model-engine llama.cpp
.venv/bin/python examples/chat.py
echo "Server running at $XINFERENCE_ENDPOINT (Ctrl-C to stop)"
wait $SERVER
