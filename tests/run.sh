#!/usr/bin/env bash
# Runs edge-agent's whole test suite on a fresh machine (the README's test command).
#
# Installs what the tests need first: the real peers the protocol tests talk to —
# the Mosquitto MQTT broker, openssl (throw-away TLS certificates), socat (pty pairs
# standing in for serial lines) and systemd-analyze (unit checks) from Debian's
# packages, Debian's chromium and chromium-driver (the web UI's browser tests), and
# pymodbus, python-snap7, aiocoap, selenium, pysparkplug and asyncua (pinned in
# tests/peers/requirements.txt)
# in a Python venv.
# Later peers add their installs here, so this stays the one
# command.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi

apt_install() {
    local sudo=""
    if [ "$(id -u)" != "0" ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: need root (or sudo) to install: $*" >&2; exit 1
        fi
    fi
    echo "== installing test peers: $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v socat >/dev/null 2>&1 || need+=(socat)
# systemd-analyze checks the shipped unit (verify, security exposure).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
# The web UI in a real browser (tests/tests/web_ui_browser.rs), headless.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ "${#need[@]}" -gt 0 ]; then
    apt_install "${need[@]}"
fi

# Python peers (pymodbus), pinned, in tests/.venv.
venv=tests/.venv
req=tests/peers/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
    echo "== creating $venv with $(tr '\n' ' ' < "$req")"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$venv/.requirements"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Unit, property, golden, CLI and end-to-end tests of every crate.
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# The minimal build (no ONNX runtime, two drivers) compiles and says why models
# are refused.
cargo test -p edge-agent --no-default-features --features sim,host --lib --locked "$@" 2>&1 | tee -a "$log" || status=$?

# One closing line for the whole suite (cargo's last line is a doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
