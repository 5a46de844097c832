#!/usr/bin/env bash
# Builds edge-agent for factory gateways and smoke-tests the binaries under qemu-user.
#
#   cross/build.sh                 # both targets, the gateway build, smoke tests
#   cross/build.sh aarch64         # one target (aarch64 | armv7)
#   PROFILE=release cross/build.sh       # everything at full speed, 16-17 MB instead of 11-12
#   PROFILE=fastrelease cross/build.sh   # quicker builds (no LTO) for local checks
#   SMOKE=0 cross/build.sh         # build only
#   FEATURES=sim,host,modbus cross/build.sh   # these features instead of the defaults
#   VARIANT=opcua cross/build.sh   # the OPC UA gateway package: every default feature
#                                  # plus `opcua`, its own budget (OPCUA_SIZE_BUDGET,
#                                  # 16 MB), out as cross/out/edge-agent-opcua-<arch>,
#                                  # and with DEB=1 the package edge-agent-opcua
#   FOOTPRINT=1 cross/build.sh     # also the footprint report (size, RSS, idle CPU)
#   DEB=1 cross/build.sh           # also a Debian package per target (cargo-deb),
#                                  # install-tested in a Debian chroot (as root;
#                                  # DEB_INSTALL_TEST=0 skips that, see deb-install-test.sh)
#
# Targets: aarch64-unknown-linux-musl (static) and armv7-unknown-linux-musleabihf
# (static). Where rustup cannot install a target's musl standard library (the mirror
# here has no armv7 musl), the script builds that standard library from rust-src
# (`-Zbuild-std`, allowed on the stable toolchain by RUSTC_BOOTSTRAP=1) and links with
# zig (PyPI's ziglang through cargo-zigbuild, in target/zig-venv), whose bundled
# musl and libunwind stand in for the ones rustup would have shipped. The binary is
# the same kind: static, musl. LIBC_ARMV7=gnu builds the glibc variant instead
# (armv7-unknown-linux-gnueabihf, dynamically linked against glibc ≥ 2.35: Debian 12
# / Raspberry Pi OS bookworm, Ubuntu 22.04).
#
# Installs what it needs: the rustup targets (or rust-src), Debian's cross compilers
# (ring and tract-linalg compile C and assembly), zig where needed, and
# qemu-user-static.
#
# Output: target/<triple>/<profile>/edge-agent, copied to cross/out/edge-agent-<arch>.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-small}"
smoke="${SMOKE:-1}"
footprint="${FOOTPRINT:-0}"
deb="${DEB:-0}"
# The gateway build (the small profile) must fit this, with every driver and the
# ONNX runtime: 12 MB, in bytes.
size_budget="${SIZE_BUDGET:-12000000}"
variant_name="${VARIANT:-}"
case "$variant_name" in
    "") ;;
    opcua)
        # The OPC UA stack (RSA, X.509, URL/IDNA, the OPC UA type system) adds about
        # 3.3 MB: more than the 12 MB gateway budget has left (see cross/README.md).
        FEATURES="sim,host,modbus,s7,mqtt,log,coap,replay,gpio,onnx,ui,opcua"
        size_budget="${OPCUA_SIZE_BUDGET:-16000000}"
        ;;
    *) echo "error: unknown VARIANT '$variant_name' (opcua)" >&2; exit 2 ;;
esac
suffix="${variant_name:+$variant_name-}"
arches=("$@")
[ "${#arches[@]}" -gt 0 ] || arches=(aarch64 armv7)

apt_install() {
    local sudo=""
    if [ "$(id -u)" != "0" ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: need root (or sudo) to install: $*" >&2; exit 1
        fi
    fi
    echo "== installing: $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

need=()
for arch in "${arches[@]}"; do
    case "$arch" in
        aarch64)
            command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
            [ "$smoke" = 0 ] || command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
            ;;
        armv7)
            command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
            [ "$smoke" = 0 ] || command -v qemu-arm-static >/dev/null 2>&1 || need+=(qemu-user-static)
            ;;
        *) echo "error: unknown target '$arch' (aarch64 | armv7)" >&2; exit 2 ;;
    esac
done
if [ "$deb" != 0 ]; then
    command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
fi
if [ "${#need[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    apt_install "${need[@]}"
fi

# The small profile rebuilds the standard library for size (see build).
[ "$profile" != small ] || rustup component add rust-src >/dev/null 2>&1

# Picks the triple for an arch: musl (LIBC_<ARCH>=gnu for glibc). Where rustup cannot
# install the musl standard library, it is built from source (see the top).
triple_for() {
    local arch="$1" musl gnu libc
    case "$arch" in
        aarch64) musl=aarch64-unknown-linux-musl; gnu=aarch64-unknown-linux-gnu; libc="${LIBC_AARCH64:-musl}" ;;
        armv7) musl=armv7-unknown-linux-musleabihf; gnu=armv7-unknown-linux-gnueabihf; libc="${LIBC_ARMV7:-musl}" ;;
    esac
    # Listed into a variable first: `rustup | grep -q` under pipefail can fail when
    # grep exits at the first match.
    local installed
    installed=$(rustup target list --installed)
    if [ "$libc" = gnu ]; then
        grep -qx "$gnu" <<<"$installed" || rustup target add "$gnu" >&2
        echo "$gnu"
    elif grep -qx "$musl" <<<"$installed" || rustup target add "$musl" >/dev/null 2>&1; then
        echo "$musl"
    else
        echo "note: rustup has no standard library for $musl here; building it from rust-src, linking with zig" >&2
        rustup component add rust-src >&2
        echo "$musl"
    fi
}

# zig and cargo-zigbuild from PyPI, in a venv of the project's own.
zig_venv=target/zig-venv
ensure_zig() {
    [ -x "$zig_venv/bin/cargo-zigbuild" ] && return
    echo "== installing zig and cargo-zigbuild (PyPI) into $zig_venv"
    python3 -m venv "$zig_venv"
    "$zig_venv/bin/pip" install -q "ziglang==0.17.1" "cargo-zigbuild==0.24.1"
}

out_dir=cross/out
mkdir -p "$out_dir"
smoke_cfg="$(mktemp --suffix=.toml)"
trap 'rm -f "$smoke_cfg"' EXIT

run_target() { # qemu wrapper for a triple
    case "$1" in
        aarch64-*-musl) echo "qemu-aarch64-static" ;;
        aarch64-*-gnu) echo "qemu-aarch64-static -L /usr/aarch64-linux-gnu" ;;
        armv7-*-musleabihf) echo "qemu-arm-static" ;;
        armv7-*-gnueabihf) echo "qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
    esac
}

build() { # triple, extra cargo args...
    local triple="$1"; shift
    local gcc
    case "$triple" in
        aarch64-*) gcc=aarch64-linux-gnu ;;
        armv7-*) gcc=arm-linux-gnueabihf ;;
    esac
    local up="${triple//-/_}"
    local UP="${up^^}"
    # The standard library is built from rust-src (RUSTC_BOOTSTRAP=1 allows
    # -Zbuild-std on the stable toolchain) where rustup has none for the triple, and
    # for the small profile, which builds it for size too: `optimize_for_size`, at
    # the profile's opt-level, without the backtrace symboliser (panics still unwind).
    local std=()
    if [ "$profile" = small ]; then
        std=(-Zbuild-std=std,panic_unwind -Zbuild-std-features=panic-unwind,optimize_for_size)
    fi
    if ! rustup target list --installed | grep -x "$triple" >/dev/null; then
        # zig links against its own musl and libunwind (not rustup's self-contained
        # objects, which do not exist here) and compiles ring's and tract's C and
        # assembly for the target.
        [ "${#std[@]}" -gt 0 ] || std=(-Zbuild-std=std,panic_unwind)
        ensure_zig
        env PATH="$PWD/$zig_venv/bin:$PATH" RUSTC_BOOTSTRAP=1 \
            RUSTFLAGS="${RUSTFLAGS:-} -C link-self-contained=no" \
            cargo zigbuild --locked --profile "$profile" --target "$triple" \
            "${std[@]}" -p edge-agent "$@"
        return
    fi
    env "CARGO_TARGET_${UP}_LINKER=${gcc}-gcc" \
        "CC_${up}=${gcc}-gcc" "AR_${up}=${gcc}-ar" "RUSTC_BOOTSTRAP=${std:+1}" \
        cargo build --locked --profile "$profile" --target "$triple" "${std[@]}" \
        -p edge-agent "$@"
}

debs=()
for arch in "${arches[@]}"; do
    triple="$(triple_for "$arch")"
    echo "== building $triple ($profile)"
    start=$(date +%s)
    if [ -n "${FEATURES:-}" ]; then
        build "$triple" --no-default-features --features "$FEATURES"
    else
        build "$triple"
    fi
    bin="target/$triple/$profile/edge-agent"
    cp "$bin" "$out_dir/edge-agent-$suffix$arch"
    echo "   built in $(( $(date +%s) - start )) s: $bin ($(stat -c %s "$bin") bytes)"
    file "$bin" 2>/dev/null | sed 's/^/   /' || true
    if [ "$profile" = small ]; then
        size=$(stat -c %s "$bin")
        if [ "$size" -gt "$size_budget" ]; then
            echo "error: $bin is $size bytes, over the gateway budget of $size_budget (SIZE_BUDGET)" >&2
            exit 1
        fi
        echo "   within the gateway budget: $size of $size_budget bytes"
    fi

    if [ "$smoke" != 0 ]; then
        # shellcheck disable=SC2046
        qemu=( $(run_target "$triple") )
        echo "== smoke test $triple under ${qemu[0]}"
        "${qemu[@]}" "$bin" --version
        "${qemu[@]}" "$bin" print-default-config > "$smoke_cfg.shipped"
        "${qemu[@]}" "$bin" check-config "$smoke_cfg.shipped"
        # The demo, compressed: 240x, bearing wear from the start over 40 min, the
        # stuck pressure sensor at 5 min. Emulated ARM keeps up with this (1200x
        # does not), and it reaches every expected alert in about 10 s.
        sed -e 's/^speed = 120.0/speed = 240.0/' -e 's/^start = "10m"/start = "0s"/' \
            -e 's/^duration = "4h"/duration = "40m"/' -e 's/^start = "20m"/start = "5m"/' \
            "$smoke_cfg.shipped" > "$smoke_cfg"
        if cmp -s "$smoke_cfg.shipped" "$smoke_cfg"; then
            echo "error: the demo config changed; update the smoke test's edits" >&2
            exit 1
        fi
        rm -f "$smoke_cfg.shipped"
        log="$out_dir/smoke-$arch.log"
        status=0
        # --foreground: signal only the agent (without it, timeout also signals its
        # process group, and the agent sees the stop request twice).
        timeout --foreground --preserve-status -s TERM 20 "${qemu[@]}" "$bin" run --config "$smoke_cfg" \
            --log-level warn > "$log" 2>&1 || status=$?
        if [ "$status" != 0 ]; then
            echo "error: the demo run under qemu exited with $status (expected a graceful stop, 0)" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        missing=0
        for want in "WARNING  RAISED  pump2/pressure-stuck" \
                    "PREFAULT RAISED  pump2/bearing-temperature-forecast" \
                    "WARNING  RAISED  pump2/bearing-vibration" \
                    "CRITICAL RAISED  pump2/bearing-temperature"; do
            if ! grep -qF "$want" "$log"; then
                echo "error: the 20 s demo run under qemu did not raise: $want" >&2
                missing=1
            fi
        done
        if [ "$missing" != 0 ]; then
            cat "$log" >&2
            exit 1
        fi
        echo "   demo alerts under qemu: $(grep -c RAISED "$log") raised, graceful stop"
    fi

    if [ "$deb" != 0 ]; then
        if ! cargo deb --version >/dev/null 2>&1; then
            echo "== installing cargo-deb"
            cargo install --locked cargo-deb --version "^2" >/dev/null
        fi
        echo "== Debian package for $triple"
        variant=()
        case "$triple" in *-gnu*) variant=(--variant gnu) ;; esac
        [ -z "$variant_name" ] || variant=(--variant "$variant_name")
        pkg=$(cargo deb -p edge-agent "${variant[@]}" --no-build --no-strip --target "$triple" \
            --profile "$profile" --output "$out_dir/" 2>&1 | tail -1)
        [ -f "$pkg" ] || { echo "error: cargo deb failed: $pkg" >&2; exit 1; }
        contents=$(dpkg-deb --contents "$pkg")
        for want in usr/bin/edge-agent etc/edge-agent/edge-agent.toml \
                    lib/systemd/system/edge-agent.service \
                    usr/share/doc/edge-agent/systemd/rtu.conf; do
            if ! grep -qE " (\./)?$want\$" <<<"$contents"; then
                echo "error: $pkg lacks $want" >&2
                echo "$contents" >&2
                exit 1
            fi
        done
        dpkg-deb --field "$pkg" Package Version Architecture Depends | sed 's/^/   /'
        # Listed into a variable first: `tar | grep -q` under pipefail fails when grep
        # exits at the first match and tar dies of SIGPIPE (it did, in CI).
        control=$(dpkg-deb --ctrl-tarfile "$pkg" | tar -tf -)
        grep -q conffiles <<<"$control" \
            || { echo "error: $pkg has no conffiles" >&2; exit 1; }
        echo "   $pkg ($(stat -c %s "$pkg") bytes)"
        debs+=("$pkg")
    fi

    if [ "$footprint" != 0 ]; then
        cross/footprint.sh "$arch" "$triple" "$bin"
        # The same target with less in it: every driver without the ONNX runtime,
        # and the minimal build (simulated devices + the gateway's own health).
        for variant in "sim,host,modbus,s7,mqtt,log,coap,gpio:every driver, no ONNX" \
                       "sim,host:minimal (sim + host, no ONNX)"; do
            if ! build "$triple" --no-default-features --features "${variant%%:*}" \
                    > "$out_dir/variant-$arch.log" 2>&1; then
                echo "error: the ${variant#*:} build failed" >&2
                tail -30 "$out_dir/variant-$arch.log" >&2
                exit 1
            fi
            awk -v n="$(stat -c %s "$bin")" -v what="${variant#*:}:" \
                'BEGIN { printf "   binary (stripped), %-36s %.2f MB\n", what, n / 1048576 }'
        done
        cp "$out_dir/edge-agent-$suffix$arch" "$bin"
    fi
done
if [ "${#debs[@]}" -gt 0 ] && [ "${DEB_INSTALL_TEST:-1}" != 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        cross/deb-install-test.sh "${debs[@]}"
    elif command -v sudo >/dev/null 2>&1; then
        sudo cross/deb-install-test.sh "${debs[@]}"
    else
        echo "error: the package install test needs root; rerun as root or with DEB_INSTALL_TEST=0" >&2
        exit 1
    fi
fi
echo "== done: $(ls "$out_dir"/edge-agent-* | tr '\n' ' ')"
