#!/usr/bin/env bash
# RSS of an ARM build on an emulated ARM machine.
#
#   cross/footprint-vm.sh aarch64 [binary]    # default binary: cross/out/edge-agent-<arch>
#   cross/footprint-vm.sh armv7 [binary]
#
# Under qemu-user (cross/footprint.sh) the RSS is the emulator's: it includes qemu
# itself and its translated code, and qemu does not pass madvise hints on, so the
# agent's start-up trim does nothing there. This boots a whole machine instead, under
# software emulation with 2 cores and 512 MiB: for aarch64, qemu-system-aarch64 with
# Cortex-A53s and Debian 12's arm64 cloud kernel; for armv7, qemu-system-arm with
# Cortex-A15s and Debian 12's armmp-lpae kernel. Busybox is the userland, the binary
# sits on an ext4 disk (a glibc build gets the cross toolchain's glibc in the guest's
# /lib). The RSS read from the guest's /proc is the agent's own, as on a gateway.
#
# It runs the built-in demo and the budget scenario (cross/footprint-config.sh:
# 1,000 Modbus tags, 4 drivers, 2 zoo models; budget 16 MB) for SECONDS_RUN
# (default 60) each and reports RSS at 25 s (before the start-up trim) and at the end.
# Exits 1 if the budget scenario ends above 16 MB (BUDGET_KIB to change).
# The Modbus responder (cross/modbus_responder.py) runs on the host's 127.0.0.1; the
# guest reaches it through qemu's user network with `restrict=on` (no other route
# out) and one guest forward, 10.0.2.100:502 -> 127.0.0.1:<port>.
#
# SMAPS=1 also lists each run's largest anonymous mappings. OPCUA=1 (a binary with
# the `opcua` feature, e.g. cross/out/edge-agent-opcua-aarch64) also runs the budget
# scenario with its 1,000 tags from an OPC UA server (tests/peers/opcua_server.py in
# the test venv, on the host; the guest reaches it as 10.0.2.101:4840).
#
# CPU figures are meaningless under emulation and are not reported. Needs root for
# apt (it adds the arm64/armhf architecture to download the kernel and busybox .debs;
# it installs nothing of them). Takes about 2.5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/footprint-config.sh
. cross/footprint-config.sh

arch="${1:?usage: cross/footprint-vm.sh aarch64|armv7 [binary]}"
bin="${2:-cross/out/edge-agent-$arch}"
secs="${SECONDS_RUN:-60}"
budget_kib="${BUDGET_KIB:-16384}"
case "$arch" in
    aarch64)
        debarch=arm64; kmeta=linux-image-cloud-arm64; qemu=qemu-system-aarch64
        machine=(-M virt -cpu cortex-a53); elf="ARM aarch64"; gnu=aarch64-linux-gnu
        modules="virtio_mmio virtio_blk virtio_net" ;;
    armv7)
        debarch=armhf; kmeta=linux-image-armmp-lpae; qemu=qemu-system-arm
        machine=(-M virt,highmem=off -cpu cortex-a15); elf="ARM, EABI5"; gnu=arm-linux-gnueabihf
        modules="virtio_mmio virtio_blk virtio_net crc32c_generic ext4" ;;
    *) echo "error: unknown arch $arch (aarch64 or armv7)" >&2; exit 2 ;;
esac
cache="target/vm/$arch"

if [ ! -x "$bin" ]; then
    echo "error: no binary at $bin; build it first: cross/build.sh $arch" >&2
    exit 2
fi
case "$(file -b "$bin")" in
    *"$elf"*) ;;
    *) echo "error: $bin is not an $arch binary: $(file -b "$bin")" >&2; exit 2 ;;
esac
if [ "$secs" -le 30 ]; then
    echo "error: SECONDS_RUN must be more than 30 (the start-up trim runs at 30 s)" >&2
    exit 2
fi

need=()
command -v "$qemu" >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v file >/dev/null 2>&1 || need+=(file)
command -v strings >/dev/null 2>&1 || need+=(binutils)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Kernel and busybox from Debian's archive, cached.
mkdir -p "$cache"
if ! ls "$cache"/kernel/boot/vmlinuz-* >/dev/null 2>&1 || [ ! -x "$cache/busybox/bin/busybox" ]; then
    if ! dpkg --print-foreign-architectures | grep -x "$debarch" >/dev/null; then
        dpkg --add-architecture "$debarch"
    fi
    # A mirror mid-sync fails one index now and then; what resolves below is enough.
    apt-get update -qq || echo "warning: apt-get update reported errors; trying anyway" >&2
    kpkg=$(apt-cache depends "$kmeta:$debarch" \
        | awk '/Depends: linux-image-[0-9]/ { sub(/:.*$/, "", $2); print $2; exit }')
    [ -n "$kpkg" ] || { echo "error: cannot resolve $kmeta:$debarch" >&2; exit 1; }
    rm -rf "$cache/debs" "$cache/kernel" "$cache/busybox"
    mkdir -p "$cache/debs"
    (cd "$cache/debs" && apt-get download -q "$kpkg:$debarch" "busybox-static:$debarch" 2>/dev/null)
    dpkg-deb -x "$cache"/debs/linux-image-*.deb "$cache/kernel"
    dpkg-deb -x "$cache"/debs/busybox-static_*.deb "$cache/busybox"
fi
kernel=$(ls "$cache"/kernel/boot/vmlinuz-* | head -1)
kver=${kernel##*/vmlinuz-}
mods="$cache/kernel/lib/modules/$kver/kernel"

# initramfs: busybox, the modules for virtio and ext4 (those the kernel does not have
# built in), a glibc build's C library, and an init that mounts the disk, runs the
# measurements and powers off.
root="$work/initramfs"
mkdir -p "$root"/{bin,lib/modules,proc,sys,dev,mnt,tmp}
cp "$cache/busybox/bin/busybox" "$root/bin/"
# Load order from each module's `depends=` (the .deb ships no modules.dep).
order=""
add_module() {
    local m="$1" f dep
    case " $order " in *" $m "*) return ;; esac
    if grep -q "/$m\.ko\$" "$mods/../modules.builtin"; then return; fi
    f=$(find "$mods" -name "$m.ko" | head -1)
    [ -n "$f" ] || { echo "error: no $m.ko in $kver" >&2; exit 1; }
    for dep in $(strings -a "$f" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "$dep"
    done
    cp "$f" "$root/lib/modules/"
    order="$order $m"
}
for m in $modules; do add_module "$m"; done
interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
if [ -n "$interp" ]; then
    mkdir -p "$root/$(dirname "$interp")"
    cp -L "/usr/$gnu/lib/$(basename "$interp")" "$root/$interp"
    for lib in $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
        cp -L "/usr/$gnu/lib/$lib" "$root/$(dirname "$interp")/"
    done
fi
cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $order; do insmod /lib/modules/\$m.ko || echo "FOOTPRINT-ERROR insmod \$m"; done
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.5; done
mount -t ext4 /dev/vda /mnt || echo "FOOTPRINT-ERROR mount"
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
sh /mnt/run.sh
sync
umount /mnt
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initramfs.gz"

# The disk: the binary, the zoo, the configurations and the guest's measuring script.
disk="$work/disk"
mkdir -p "$disk/work"
cp "$bin" "$disk/edge-agent"
cp -r models/zoo "$disk/zoo"
touch "$disk/work/plc.log"
budget_config /mnt/work /mnt/zoo 10.0.2.100 502 > "$disk/work/budget.toml"
opcua="${OPCUA:-0}"
runs=2
if [ "$opcua" != 0 ]; then
    budget_config /mnt/work /mnt/zoo "opc.tcp://10.0.2.101:4840/edge-test" - opcua \
        > "$disk/work/budget-opcua.toml"
    runs=3
fi
cat > "$disk/run.sh" <<EOF
secs=$secs
smaps=${SMAPS:-0}
cd /mnt
# name config: runs the agent for \$secs s; prints RSS and anonymous RSS (KiB) at the
# end, RSS at 25 s, and the exit code of the graceful stop.
measure() {
    ./edge-agent run --config "\$2" --log-level warn > "work/\$1.log" 2>&1 &
    pid=\$!
    sleep 25
    early=\$(awk '/^VmRSS/ {print \$2}' /proc/\$pid/status)
    early_anon=\$(awk '/^RssAnon/ {print \$2}' /proc/\$pid/status)
    sleep \$((secs - 25))
    rss=\$(awk '/^VmRSS/ {print \$2}' /proc/\$pid/status)
    anon=\$(awk '/^RssAnon/ {print \$2}' /proc/\$pid/status)
    [ -z "\${3:-}" ] || ./edge-agent status --socket "\$3" | sed 's/^/STATUS /'
    if [ "\$smaps" = 1 ]; then
        # The largest anonymous mappings (KiB), to see where the heap went.
        awk '/^[0-9a-f]+-[0-9a-f]+ / { m = \$1 " " \$6 } /^Anonymous:/ { if (\$2 > 0) print \$2, m }' \
            /proc/\$pid/smaps | sort -rn | head -12 | sed "s/^/SMAPS \$1 /"
    fi
    kill -TERM \$pid
    wait \$pid
    echo "FOOTPRINT \$1 \$rss \$anon \$early \$? \$early_anon"
    tail -5 "work/\$1.log" | sed "s/^/LOG \$1 /"
}
echo "VERSION \$(./edge-agent --version)"
./edge-agent print-default-config > work/demo.toml
measure demo work/demo.toml
./edge-agent check-config work/budget.toml > /dev/null || echo "FOOTPRINT-ERROR budget config"
measure budget work/budget.toml /mnt/work/control.sock
if [ -f work/budget-opcua.toml ]; then
    ./edge-agent check-config work/budget-opcua.toml > /dev/null || echo "FOOTPRINT-ERROR opcua config"
    measure budget-opcua work/budget-opcua.toml /mnt/work/control.sock
fi
EOF
# Room for the journal: the binary, the zoo and 64 MiB.
size_mb=$(( $(du -sm "$disk" | cut -f1) + 64 ))
truncate -s "${size_mb}M" "$work/disk.img"
mkfs.ext4 -q -F -d "$disk" "$work/disk.img"

start_responder
netdev="user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:502-tcp:127.0.0.1:$port"
if [ "$opcua" != 0 ]; then
    start_opcua_server
    # A `cmd:` forward opens a connection to the server for every guest connection
    # (a `tcp:` one connects once, at start): OPC UA opens two (GetEndpoints, then
    # the session).
    netdev="$netdev,guestfwd=tcp:10.0.2.101:4840-cmd:socat - TCP:127.0.0.1:$opcua_port"
fi

echo "booting $kver under $qemu (about $(( secs * 2 + 30 )) s)" >&2
timeout $(( secs * runs + 600 )) "$qemu" "${machine[@]}" -smp 2 -m 512 \
    -nographic -no-reboot -kernel "$kernel" -initrd "$work/initramfs.gz" \
    -append "console=ttyAMA0 quiet panic=-1" \
    -drive "file=$work/disk.img,if=none,id=d0,format=raw" -device virtio-blk-device,drive=d0 \
    -netdev "$netdev" \
    -device virtio-net-device,netdev=n0 < /dev/null > "$work/console.log" 2>&1 || true
tr -d '\r' < "$work/console.log" > "$work/console.txt"

if grep -q "FOOTPRINT-ERROR" "$work/console.txt" || [ "$(grep -c '^FOOTPRINT ' "$work/console.txt")" != "$runs" ]; then
    echo "error: the guest run failed; its console:" >&2
    cat "$work/console.txt" >&2
    exit 1
fi
grep -E '^(STATUS|LOG|SMAPS) ' "$work/console.txt" >&2 || true
failed=""
mb() { awk -v a="$1" 'BEGIN { printf "%.2f", a / 1024 }'; }
echo "== footprint $arch on $qemu (${machine[3]} x2, 512 MiB, Linux $kver)"
echo "   $(grep '^VERSION ' "$work/console.txt" | cut -d' ' -f2-)"
while read -r _ name rss anon early rc early_anon; do
    case "$name" in
        demo) what="demo" ;;
        budget) what="1000 tags/4 drivers/2 models (budget 16 MB)" ;;
        budget-opcua) what="the same with the tags from OPC UA (budget 16 MB)" ;;
    esac
    echo "   RSS, $what after ${secs} s: $(mb "$rss") MB ($(mb "$early") MB at 25 s, before the start-up trim), anonymous $(mb "$anon") MB ($(mb "$early_anon") at 25 s); stop exit code $rc"
    [ "$rc" = 0 ] || failed="$name stopped with exit code $rc"
    if [ "${name%-opcua}" = budget ] && [ "$rss" -gt "$budget_kib" ]; then
        failed="the budget scenario uses $(mb "$rss") MB, over $(mb "$budget_kib") MB"
    fi
done < <(grep '^FOOTPRINT ' "$work/console.txt")
if [ -n "$failed" ]; then
    echo "error: $failed" >&2
    exit 1
fi
