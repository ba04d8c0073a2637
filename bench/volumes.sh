#!/usr/bin/env bash
# Block volume benchmark, one command: fio over NBD against a 3-member
# Ferrite cluster and against qemu-nbd serving a local file (unreplicated,
# --cache=none), in the same run, on the same machine. Every write is
# followed by a flush (fio --fsync=1) on both, so both are durable before
# fio counts them: on Ferrite a write is on a majority's disks before its
# reply and a flush is free; on qemu-nbd the flush is an fdatasync.
#
#   bench/volumes.sh [--runtime SECONDS]     (default 10 s per workload)
#
# Prints IOPS, MB/s, p50/p99 completion latency and the Ferrite/qemu-nbd
# ratio per workload, then average latencies of 100 synchronous requests
# (aligned and unaligned reads and writes, and mixes of 10..90% writes).
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=10
while [ $# -gt 0 ]; do
    case "$1" in
        --runtime) runtime="$2"; shift 2 ;;
        *) echo "usage: $0 [--runtime SECONDS]" >&2; exit 2 ;;
    esac
done

missing=()
command -v fio >/dev/null || missing+=(fio)
command -v qemu-nbd >/dev/null || missing+=(qemu-utils)
command -v nbdinfo >/dev/null || missing+=(libnbd-bin)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --locked -p ferrite
ferrite=$PWD/target/release/ferrite

# On the same file system as the repository's target directory (a real
# disk, not a tmpfs), so both sides pay for real fdatasyncs.
work=$(mktemp -d "$PWD/target/bench-volumes.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Three members on ports of their own (not `ferrite up`'s, so a running
# local cluster is left alone): member k listens on 4(k+1)xxx.
cluster="b1=127.0.0.1:42380,b2=127.0.0.1:43380,b3=127.0.0.1:44380"
endpoints="127.0.0.1:42379,127.0.0.1:43379,127.0.0.1:44379"
for k in 1 2 3; do
    p=$((k + 1))
    "$ferrite" server --name "b$k" --data-dir "$work/b$k" --initial-cluster "$cluster" \
        --listen-client "127.0.0.1:4${p}379" --listen-http "127.0.0.1:4${p}080" \
        --listen-nbd "127.0.0.1:4${p}809" >"$work/b$k.log" 2>&1 &
    pids+=($!)
done
leader=""
for _ in $(seq 1 100); do
    if out=$("$ferrite" status --endpoints "$endpoints" 2>/dev/null); then
        leader=$(sed -n 's/^leader: b//p' <<<"$out")
        [ -n "$leader" ] && break
    fi
    sleep 0.2
done
[ -n "$leader" ] || { echo "no leader; logs in $work" >&2; exit 1; }
"$ferrite" volume create bench --size 1GiB --endpoints "$endpoints" >/dev/null
ferrite_uri="nbd://127.0.0.1:4$((leader + 1))809/bench"

# qemu-nbd on a preallocated local file of the same size.
qemu-img create -q -f raw -o preallocation=full "$work/local.raw" 1G
qemu-nbd --persistent --shared=8 --cache=none --aio=native -f raw -x bench \
    -b 127.0.0.1 -p 45809 "$work/local.raw" >"$work/qemu-nbd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do nbdinfo --size nbd://127.0.0.1:45809/bench >/dev/null 2>&1 && break; sleep 0.1; done
qemu_uri="nbd://127.0.0.1:45809/bench"

# Fill both so that reads read data, not holes.
fio --name=fill --ioengine=nbd --uri="$ferrite_uri" --rw=write --bs=1M --iodepth=16 --size=1G \
    --output=/dev/null
fio --name=fill --ioengine=nbd --uri="$qemu_uri" --rw=write --bs=1M --iodepth=16 --size=1G \
    --output=/dev/null

summary() { # fio JSON on stdin -> "iops mbs p50_us p99_us" of the read or write side
    /usr/bin/python3 -c '
import json, sys
side = sys.argv[1]
text = sys.stdin.read()  # fio prints "connected to NBD server" before the JSON
job = json.loads(text[text.index("{"):])["jobs"][0][side]
pct = job["clat_ns"].get("percentile", {})
print("%.0f %.1f %.0f %.0f" % (job["iops"], job["bw_bytes"] / 1e6,
      pct.get("50.000000", 0) / 1e3, pct.get("99.000000", 0) / 1e3))
' "$1"
}

fio_run() { # uri rw bs depth [extra fio args...]
    local uri=$1 rw=$2 bs=$3 depth=$4
    shift 4
    fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$depth" \
        --size=1G --time_based --runtime="$runtime" --ramp_time=1 --randrepeat=0 \
        --output-format=json "$@"
}

echo
echo "== fio over NBD: Ferrite (3 members, leader $leader) vs qemu-nbd --cache=none on a local file; ${runtime}s each"
printf "%-26s %10s %9s %9s %9s   %10s %9s %9s %9s   %7s\n" workload "F iops" "F MB/s" "F p50us" "F p99us" \
    "Q iops" "Q MB/s" "Q p50us" "Q p99us" "F/Q"
while read -r label rw bs depth side extra; do
    f=$(fio_run "$ferrite_uri" "$rw" "$bs" "$depth" $extra | summary "$side")
    q=$(fio_run "$qemu_uri" "$rw" "$bs" "$depth" $extra | summary "$side")
    read -r fi fm f50 f99 <<<"$f"
    read -r qi qm q50 q99 <<<"$q"
    ratio=$(/usr/bin/python3 -c "print('%.2f' % ($fi / max($qi, 1)))")
    printf "%-26s %10s %9s %9s %9s   %10s %9s %9s %9s   %7s\n" "$label" "$fi" "$fm" "$f50" "$f99" "$qi" "$qm" "$q50" "$q99" "$ratio"
done <<'WORKLOADS'
4k-randwrite-qd1 randwrite 4k 1 write --fsync=1
4k-randwrite-qd32 randwrite 4k 32 write --fsync=1
4k-randread-qd1 randread 4k 1 read
4k-randread-qd32 randread 4k 32 read
1m-seqwrite-qd8 write 1M 8 write --fsync=1
WORKLOADS

lat() { # uri rw bs [extra] -> average completion latency in µs of 100 requests at QD 1
    local uri=$1 rw=$2 bs=$3
    shift 3
    fio --name=lat --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth=1 --size=64M \
        --number_ios=100 --randrepeat=0 --output-format=json "$@" |
        /usr/bin/python3 -c '
import json, sys
text = sys.stdin.read()
j = json.loads(text[text.index("{"):])["jobs"][0]
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
ns = j["read"]["clat_ns"]["mean"] * j["read"]["total_ios"] + j["write"]["clat_ns"]["mean"] * j["write"]["total_ios"]
print("%.0f" % (ns / max(ios, 1) / 1e3))'
}

echo
echo "== average latency of 100 synchronous requests (µs, QD 1; writes with a flush each)"
printf "%-28s %10s %10s %7s\n" request Ferrite qemu-nbd "F/Q"
while read -r label rw bs extra; do
    f=$(lat "$ferrite_uri" "$rw" "$bs" $extra)
    q=$(lat "$qemu_uri" "$rw" "$bs" $extra)
    printf "%-28s %10s %10s %7s\n" "$label" "$f" "$q" "$(/usr/bin/python3 -c "print('%.2f' % ($f / max($q, 1)))")"
done <<'REQUESTS'
4k-read-aligned randread 4k
4k-write-aligned randwrite 4k --fsync=1
3000B-read-unaligned randread 3000 --blockalign=1
3000B-write-unaligned randwrite 3000 --blockalign=1 --fsync=1
mix-10%-writes randrw 4k --rwmixwrite=10 --fsync=1
mix-30%-writes randrw 4k --rwmixwrite=30 --fsync=1
mix-50%-writes randrw 4k --rwmixwrite=50 --fsync=1
mix-70%-writes randrw 4k --rwmixwrite=70 --fsync=1
mix-90%-writes randrw 4k --rwmixwrite=90 --fsync=1
REQUESTS
