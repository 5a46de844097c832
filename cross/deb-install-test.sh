#!/usr/bin/env bash
# Installs edge-agent Debian packages into a throw-away Debian chroot and checks
# what a gateway gets from them:
#   * apt resolves the package's dependencies (libc6:armhf for the glibc build);
#   * postinst creates the `edge-agent` system user (no login shell);
#   * the config is a conffile, mode 0640 root:edge-agent, and the unit is enabled;
#   * `edge-agent check-config` passes on the shipped config, run as the service
#     user (under qemu-user for ARM packages, as on the gateway's own CPU);
#   * reinstalling keeps a locally edited config;
#   * purge removes the config, the unit, its enablement and the user.
#
#   cross/deb-install-test.sh cross/out/edge-agent_*_arm64.deb [more.deb ...]
#
# Needs root (chroot). The chroot is made once with debootstrap (minbase, the
# host's Debian release, about 200 MB and a minute) in target/deb-root and reused;
# nothing outside it is touched. DEB_MIRROR overrides the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE.deb..." >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: the install test needs root (it uses chroot); run it with sudo" >&2
    exit 1
fi

root="target/deb-root"
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
mirror="${DEB_MIRROR:-http://deb.debian.org/debian}"

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ! command -v qemu-aarch64-static >/dev/null 2>&1 || ! command -v qemu-arm-static >/dev/null 2>&1; then
    need+=(qemu-user-static)
fi
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$root/usr/bin/dpkg" ]; then
    echo "== debootstrap $suite (minbase) into $root"
    rm -rf "$root"
    debootstrap --variant=minbase --include=adduser "$suite" "$root" "$mirror" \
        > target/deb-root.log 2>&1 || {
        tail -20 target/deb-root.log >&2
        echo "error: debootstrap failed (log: target/deb-root.log)" >&2
        exit 1
    }
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
host_arch="$(dpkg --print-architecture)"
in_root() { chroot "$root" "$@"; }
apt_in_root() {
    in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Options::=--force-confold "$@"
}

fail() {
    echo "error: $pkg: $*" >&2
    exit 1
}

for pkg in "$@"; do
    [ -f "$pkg" ] || { echo "error: no such package: $pkg" >&2; exit 1; }
    arch="$(dpkg-deb --field "$pkg" Architecture)"
    version="$(dpkg-deb --field "$pkg" Version)"
    echo "== install test: $(basename "$pkg") in a $suite chroot"
    run=()
    case "$arch" in
        "$host_arch") ;;
        arm64) run=(/usr/bin/qemu-aarch64-static) ;;
        armhf) run=(/usr/bin/qemu-arm-static) ;;
        *) fail "no emulator for architecture $arch" ;;
    esac
    if [ "${#run[@]}" -gt 0 ]; then
        cp "$(command -v "$(basename "${run[0]}")")" "$root${run[0]}"
        in_root dpkg --add-architecture "$arch"
    fi
    in_root dpkg --purge edge-agent >/dev/null 2>&1 || true
    cp "$pkg" "$root/tmp/edge-agent.deb"
    apt_in_root update >/dev/null
    if ! apt_in_root install -y --no-install-recommends /tmp/edge-agent.deb \
            > "$root/tmp/install.log" 2>&1; then
        cat "$root/tmp/install.log" >&2
        fail "apt-get install failed"
    fi

    # (Values go through variables: `cmd | grep -q` under pipefail can fail on SIGPIPE.)
    user="$(in_root getent passwd edge-agent || true)"
    [[ "$user" == *:/usr/sbin/nologin ]] \
        || fail "postinst did not create the edge-agent system user"
    mode="$(in_root stat -c '%a %U %G' /etc/edge-agent/edge-agent.toml)"
    [ "$mode" = "640 root edge-agent" ] \
        || fail "/etc/edge-agent/edge-agent.toml is '$mode', expected '640 root edge-agent'"
    grep -qx /etc/edge-agent/edge-agent.toml "$root/var/lib/dpkg/info/edge-agent.conffiles" \
        || fail "the config is not a conffile"
    [ -f "$root/lib/systemd/system/edge-agent.service" ] || fail "no unit file"
    [ -L "$root/etc/systemd/system/multi-user.target.wants/edge-agent.service" ] \
        || fail "the unit is not enabled"
    got="$(in_root "${run[@]}" /usr/bin/edge-agent --version)"
    [[ "$got" == "edge-agent ${version%-*}"* ]] || fail "--version says '$got'"
    check="$(in_root setpriv --reuid=edge-agent --regid=edge-agent --init-groups \
        "${run[@]}" /usr/bin/edge-agent check-config /etc/edge-agent/edge-agent.toml 2>&1)" \
        || fail "check-config as the service user failed: $check"
    echo "   installed: user, conffile 0640, unit enabled; as edge-agent: $check"

    # An operator's edit survives a reinstall (upgrade to the same version).
    echo "# edited on the gateway" >> "$root/etc/edge-agent/edge-agent.toml"
    apt_in_root install -y --reinstall /tmp/edge-agent.deb > "$root/tmp/install.log" 2>&1 \
        || { cat "$root/tmp/install.log" >&2; fail "reinstall failed"; }
    [ "$(tail -n 1 "$root/etc/edge-agent/edge-agent.toml")" = "# edited on the gateway" ] \
        || fail "a reinstall overwrote the edited config"

    in_root dpkg --purge edge-agent > "$root/tmp/purge.log" 2>&1 \
        || { cat "$root/tmp/purge.log" >&2; fail "purge failed"; }
    ! in_root getent passwd edge-agent >/dev/null || fail "purge left the edge-agent user"
    for gone in etc/edge-agent lib/systemd/system/edge-agent.service \
                etc/systemd/system/multi-user.target.wants/edge-agent.service usr/bin/edge-agent; do
        [ ! -e "$root/$gone" ] && [ ! -L "$root/$gone" ] || fail "purge left /$gone"
    done
    rm -f "$root/tmp/edge-agent.deb"
    echo "   reinstall kept the edited config; purge removed config, unit and user"
done
