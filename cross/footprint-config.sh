# The budget scenario, shared by footprint.sh (native or qemu-user) and
# footprint-vm.sh (an emulated ARM machine): 1,000 Modbus tags, a simulated pump with
# two zoo models bound, the gateway's health and a log driver (4 drivers, 1,000+
# tags, 2 models) with the web UI on. Sourced; it sets an EXIT trap that stops the responder and
# removes $work.

# A scratch directory, and the Modbus responder's and OPC UA server's pids once
# started.
work="$(mktemp -d)"
responder=""
opcua_server=""
footprint_cleanup() {
    [ -z "$responder" ] || kill "$responder" 2>/dev/null || true
    [ -z "$opcua_server" ] || kill "$opcua_server" 2>/dev/null || true
    rm -rf "$work"
}
trap footprint_cleanup EXIT

# Starts cross/modbus_responder.py on 127.0.0.1 (a free port); sets $responder and
# $port.
start_responder() {
    local port_file="$work/port"
    python3 cross/modbus_responder.py 0 > "$port_file" &
    responder=$!
    for _ in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
    port=$(head -1 "$port_file")
}

# Starts the asyncua test server (tests/peers/opcua_server.py, from the test venv
# that ./tests/run.sh makes) on 127.0.0.1 with 1,000 items changing every second;
# sets $opcua_server and $opcua_port. Its commands come on stdin: a FIFO this shell
# holds open (fd 7) until it exits.
start_opcua_server() {
    opcua_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkfifo "$work/opcua.in"
    exec 7<>"$work/opcua.in"
    tests/.venv/bin/python tests/peers/opcua_server.py "$opcua_port" --items 1000 --period 1000 \
        > "$work/opcua.out" 2>/dev/null < "$work/opcua.in" &
    opcua_server=$!
    for _ in $(seq 100); do grep -q READY "$work/opcua.out" 2>/dev/null && break; sleep 0.2; done
}

# Prints the configuration.
#
#   budget_config <dir> <zoo dir> <modbus host> <modbus port> > budget.toml
#   budget_config <dir> <zoo dir> <opc.tcp endpoint> - opcua > budget-opcua.toml
#
# <dir> is where the agent keeps its journal, control socket and watched log, as
# the agent will see it.
budget_config() {
    local dir="$1" zoo="$2" host="$3" port="$4"
    cat <<EOF
[agent]
id = "footprint"
control_socket = "$dir/control.sock"

[alerts]
console = false

[journal]
dir = "$dir/journal"

# The web UI on (its history is sized for every signal at start), on a port
# nobody else uses in CI.
[ui]
listen = "127.0.0.1:0"

[models]
dir = "$zoo"

EOF
    if [ "${5:-modbus}" = opcua ]; then
        # The same 1,000 tags from an OPC UA server (tests/peers/opcua_server.py
        # --items 1000): "$host" is then the endpoint.
        printf '[[drivers]]\nname = "skid"\nkind = "opcua"\nendpoint = "%s"\n' "$host"
        for i in $(seq 0 999); do
            printf '[[drivers.tags]]\nname = "skid.r%d"\nnode = "ns=2;s=Bench.%d"\n' "$i" "$i"
        done
    else
        printf '[[drivers]]\nname = "skid"\nkind = "modbus"\nhost = "%s"\nport = %s\npoll = "1s"\n' "$host" "$port"
        for i in $(seq 0 999); do
            printf '[[drivers.tags]]\nname = "skid.r%d"\narea = "holding"\naddress = %d\n' "$i" "$i"
        done
    fi
    cat <<EOF

[[drivers]]
name = "plant"
kind = "sim"
tick = "100ms"

[[drivers.machines]]
name = "pump"
rpm = 1480
sample_rate_hz = 1.0
vibration_rate_hz = 256.0
nominal_temp_c = 55.0
nominal_current_a = 12.0
nominal_pressure_bar = 6.0

[[drivers]]
name = "host"
kind = "host"

[[drivers]]
name = "plclog"
kind = "log"
paths = ["$dir/plc.log"]

[[drivers.rules]]
name = "timeout"
regex = 'timeout after (?P<ms>\\d+)ms'

[[assets]]
name = "pump"

[[assets.signals]]
signal = "pump.temperature"
window = { size = "60s", hop = "10s" }

[[assets.signals]]
signal = "pump.vibration"
window = { size = 512, hop = 512 }
bands = [
  { name = "shaft", lo_hz = 0.0, hi_hz = 60.0 },
  { name = "bearing", lo_hz = 60.0, hi_hz = 128.0 },
]

[[assets.signals]]
signal = "pump.current"
window = { size = "60s", hop = "10s" }

[[assets.signals]]
signal = "pump.pressure"
window = { size = "60s", hop = "10s" }

[[assets.models]]
name = "wear"
manifest = "bearing_rf/manifest.toml"
roles = { vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }

[[assets.models]]
name = "anomaly"
manifest = "pump_iforest/manifest.toml"
roles = { vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }
EOF
}
