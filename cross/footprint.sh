#!/usr/bin/env bash
# Footprint report of one built edge-agent binary.
#
#   cross/footprint.sh <arch> <triple> <binary>     # called by FOOTPRINT=1 cross/build.sh
#   cross/footprint.sh x86_64 native target/release/edge-agent
#   OPCUA=1 cross/footprint.sh x86_64 native <a binary with the opcua feature>
#
# Reports:
# * the stripped binary size (the release profile strips symbols);
# * RSS after SECONDS (default 60) of the built-in demo (2 simulated pumps at 120x,
#   the gateway's own health);
# * RSS after SECONDS of the budget scenario: 1,000 Modbus tags against a local
#   responder (cross/modbus_responder.py), a simulated pump with 2 models bound,
#   host health and a log driver: 4 drivers, 1,000+ tags, 2 models. Budget 16 MB;
# * idle CPU: CPU seconds per wall second of an agent with only the host driver.
# Each RSS comes with its anonymous part (RssAnon: heap and stacks); the rest is
# file-backed, mostly the pages of binary text the run has touched. The agent pages
# its start-up code out 30 s after start; with SECONDS_RUN > 30 the report also
# gives the RSS at 25 s, before that.
#
# Under qemu-user the RSS is qemu's, which includes the emulator itself (a few MB):
# an upper bound for the real ARM process.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/footprint-config.sh
. cross/footprint-config.sh

arch="$1"; triple="$2"; bin="$3"
secs="${SECONDS_RUN:-60}"
case "$triple" in
    aarch64-*-musl) qemu=(qemu-aarch64-static) ;;
    aarch64-*-gnu) qemu=(qemu-aarch64-static -L /usr/aarch64-linux-gnu) ;;
    armv7-*-musleabihf) qemu=(qemu-arm-static) ;;
    armv7-*-gnueabihf) qemu=(qemu-arm-static -L /usr/arm-linux-gnueabihf) ;;
    *) qemu=() ;;
esac

# Runs the agent with a config for $secs seconds; prints "rss_kib cpu_s".
measure() {
    local cfg="$1"
    "${qemu[@]}" "$bin" run --config "$cfg" --log-level warn > "$work/out.log" 2>&1 &
    local pid=$!
    # The agent pages its start-up code out 30 s after start (agent/src/memory.rs):
    # RSS at 25 s is what it would be without that.
    local early=0 rss anon cpu
    if [ "$secs" -gt 30 ]; then
        sleep 25
        early=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        sleep $(( secs - 25 ))
    else
        sleep "$secs"
    fi
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    # Anonymous memory (heap, stacks): what the agent allocates. The rest of RSS
    # is file-backed, mostly binary text paged in; clean and reclaimable.
    anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
    # utime + stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat")
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$rss $cpu $anon $early"
}

size=$(stat -c %s "$bin")

"${qemu[@]}" "$bin" print-default-config > "$work/demo.toml"
read -r demo_rss demo_cpu demo_anon demo_early < <(measure "$work/demo.toml")

# Budget scenario.
start_responder
touch "$work/plc.log"
budget_config "$work" "$(pwd)/models/zoo" 127.0.0.1 "$port" > "$work/budget.toml"
"${qemu[@]}" "$bin" check-config "$work/budget.toml" >/dev/null
read -r budget_rss budget_cpu budget_anon budget_early < <(measure "$work/budget.toml")
kill "$responder" 2>/dev/null || true
responder=""

# The same scenario with the 1,000 tags from an OPC UA server (OPCUA=1, a binary
# with the `opcua` feature, and the test venv's asyncua: ./tests/run.sh makes it).
opcua_rss=""
if [ "${OPCUA:-0}" != 0 ]; then
    start_opcua_server
    budget_config "$work" "$(pwd)/models/zoo" "opc.tcp://127.0.0.1:$opcua_port/edge-test" - opcua \
        > "$work/budget-opcua.toml"
    "${qemu[@]}" "$bin" check-config "$work/budget-opcua.toml" >/dev/null
    read -r opcua_rss opcua_cpu opcua_anon opcua_early < <(measure "$work/budget-opcua.toml")
    kill "$opcua_server" 2>/dev/null || true
    opcua_server=""
fi

cat > "$work/idle.toml" <<EOF
[agent]
id = "idle"
control_socket = ""

[[drivers]]
name = "host"
kind = "host"
EOF
read -r idle_rss idle_cpu idle_anon _ < <(measure "$work/idle.toml")

div() { awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN { printf "%.*f", p, a / b }'; }
emu=""
[ "${#qemu[@]}" -eq 0 ] || emu=" (under ${qemu[0]}: RSS includes the emulator)"
echo "== footprint $arch ($triple)$emu"
echo "   binary (stripped):                              $(div "$size" 1048576) MB"
early() { [ "$1" = 0 ] || echo " ($(div "$1" 1024) MB at 25 s, before the start-up trim)"; }
echo "   RSS, demo after ${secs} s:                       $(div "$demo_rss" 1024) MB$(early "$demo_early"), anonymous $(div "$demo_anon" 1024) MB (CPU ${demo_cpu} s)"
echo "   RSS, 1000 tags/4 drivers/2 models after ${secs} s: $(div "$budget_rss" 1024) MB$(early "$budget_early"), anonymous $(div "$budget_anon" 1024) MB (CPU ${budget_cpu} s; budget 16 MB)"
[ -z "$opcua_rss" ] || echo "   RSS, the same with the tags from OPC UA:        $(div "$opcua_rss" 1024) MB$(early "$opcua_early"), anonymous $(div "$opcua_anon" 1024) MB (CPU ${opcua_cpu} s)"
echo "   idle CPU (host driver only):                    $(div "$idle_cpu" "$secs" 4) CPU s per s (RSS $(div "$idle_rss" 1024) MB, anonymous $(div "$idle_anon" 1024) MB)"
