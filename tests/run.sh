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

# Unit, property, golden, CLI and end-to-end tests of every crate.
cargo test --workspace --locked "$@"
