#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then checks
# formatting and lints, runs every test (including the CI slice of the
# cluster simulation), a seed sweep of the simulator in release mode, and a
# short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")"

need_component() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "==> installing rust component $2"
        rustup component add "$2"
    fi
}
need_component fmt rustfmt
need_component clippy clippy

# Debian packages the tests use: protoc (the etcd-client crate, our
# compatibility tests' client, compiles etcd's .proto files with it),
# etcdctl and etcd (the real etcd command-line client and server), and the
# block clients the volume tests drive: nbdinfo/nbdcopy/nbdfuse, nbdsh,
# qemu-img, fio, and fusermount3, mkfs.ext4/e2fsck, losetup for a file
# system on a volume.
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
# etcd itself: tests compare against it, and the TLS and auth client tests
# run against it (with its --client-cert-auth and JWT tokens).
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v nbdcopy >/dev/null 2>&1 || missing+=(libnbd-bin)
command -v nbdfuse >/dev/null 2>&1 || missing+=(libnbd-bin)
[ -f /usr/lib/python3/dist-packages/nbd.py ] || missing+=(python3-libnbd)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
# A C++ compiler: cargo-fuzz builds libFuzzer from source.
command -v c++ >/dev/null 2>&1 || missing+=(g++)
# Python's venv, for the python-etcd3 client test (pip installs etcd3 there).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# Debian's etcd3gw, a client of etcd's JSON gateway (the gateway test).
[ -f /usr/lib/python3/dist-packages/etcd3gw/client.py ] || missing+=(python3-etcd3gw)
# Network namespaces, veth pairs and a bridge (ip), their connections (ss)
# and firewall rules (iptables) for the multi-host test (multihost.rs).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# Headless Chromium and its WebDriver for the dashboard tests.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')

echo "==> simulation sweep (release)"
cargo build --release --locked -p ferrite-sim
./target/release/ferrite-sim --seeds 0..10000 --steps 5000

# A short slice of every fuzz target, from the committed corpora (on stable:
# fuzz/run installs cargo-fuzz if it is missing and builds without a
# sanitizer). A crash fails the suite; its input is under fuzz/work/.
echo "==> fuzzing (CI slice: 15 s per target, two at a time)"
fuzz/run -j 2 15

echo "tests: ${passed} passed, ${failed} failed"
