#!/usr/bin/env bash
# Regenerates the detection-quality benchmark (72 seeded scenarios, ~860 h) and
# scores the benchmark configuration on it: the README's "Detection quality" table.
#
#   models/eval/run.sh   # writes models/eval/scenarios/, results.json and plots/
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run -q --release -p edge-train --bin edge-scenarios -- models/eval/scenarios
cargo run -q --release -p edge-agent -- eval \
    --config models/eval/agent.toml \
    --scenarios models/eval/scenarios \
    --json models/eval/results.json \
    --plots models/eval/plots
