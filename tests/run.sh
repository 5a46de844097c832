#!/usr/bin/env bash
# Runs edge-agent's whole test suite on a fresh machine (the README's test command).
#
# Installs what the tests need first. Today that is only the Rust toolchain the
# machine already has; real-peer tests (Mosquitto, pymodbus, python-snap7, aiocoap)
# add their installs here as they land, so this stays the one command.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Unit, property, golden, CLI and end-to-end tests of every crate.
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole suite (cargo's last line is a doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
