#!/usr/bin/env bash
# Longer crash soak than the test suite runs: kill -9 of the agent binary at random
# points during ingest and replay, with broker restarts, against a real Mosquitto.
#   tests/soak.sh [ITERATIONS]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
EDGE_CRASH_ITERATIONS="${1:-200}" cargo test --release -p edge-agent-tests --test crash_mosquitto -- --nocapture
