#!/usr/bin/env python3
"""Runs deploy/systemd's command line for real: three members on loopback.

Usage: deploy/check_unit_run.py FERRITE_BIN   (deploy/check.sh runs it when
FERRITE_BIN is set).

The unit's ExecStart is expanded the way systemd does (`${VAR}` is one word,
`$VAR` splits on whitespace) from ferrite.env, once per member, with the
example host names mapped to `localhost` and free ports, `0.0.0.0`
listeners moved to 127.0.0.1, and ferrite.toml copied with a scratch data_dir and
loopback HTTP/NBD addresses. Then: a leader within 30 s, GET /health on a
client port, SIGTERM to the leader (it must exit 0 within the unit's
TimeoutStopSec, having handed leadership over), and a leader again among
the other two. Everything listens on 127.0.0.1 and is stopped at the end.

FERRITE_CHECK_LEGACY_FLAGS=1 translates the --*-urls flags to the older
--listen-peer / --listen-client, for a binary that predates them.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.join(HERE, "systemd", "ferrite.service")
ENV = os.path.join(HERE, "systemd", "ferrite.env")
TOML = os.path.join(HERE, "systemd", "ferrite.toml")


def unit_value(key):
    """The value of `key` in the unit's [Service] section, continuation lines joined."""
    text = open(UNIT).read().replace("\\\n", " ")
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith(key + "="):
            return line[len(key) + 1:]
    raise SystemExit(f"{key}= not found in {UNIT}")


def env_file():
    values = {}
    for line in open(ENV):
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            values[k] = v
    return values


def expand(command, env):
    """systemd's ExecStart expansion: ${VAR} is one word, $VAR splits."""
    argv = []
    for word in shlex.split(command):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda g: env.get(g.group(1), ""), word))
    return argv


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def legacy(argv):
    """--listen-peer-urls http://H:P -> --listen-peer H:P, and so on."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--listen-peer-urls", "--listen-client-urls"):
            out += [a.replace("-urls", ""), argv[i + 1].split(",")[0].split("://")[-1]]
            i += 2
        elif a in ("--initial-advertise-peer-urls", "--advertise-client-urls"):
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def status(binary, endpoints):
    r = subprocess.run([binary, "status", "--endpoints", endpoints], capture_output=True, text=True, timeout=20)
    m = re.search(r"^leader: (\S+)", r.stdout, re.M)
    return (m.group(1) if r.returncode == 0 and m else None), r.stdout + r.stderr


def wait_leader(binary, endpoints, within, procs):
    deadline = time.monotonic() + within
    out = ""
    while time.monotonic() < deadline:
        dead = [i + 1 for i, p in enumerate(procs) if p is not None and p.poll() is not None]
        if dead:
            raise SystemExit(f"member(s) {dead} exited at start (see the log tails below)")
        leader, out = status(binary, endpoints)
        if leader:
            return leader, out
        time.sleep(0.5)
    return None, out


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    stop_timeout = float(unit_value("TimeoutStopSec").rstrip("s"))
    template = env_file()
    n = 3
    ports = [{k: free_port() for k in ("client", "peer", "http", "nbd")} for _ in range(n)]

    # The example host names become `localhost` (a name each member
    # resolves, as on real hosts), or 127.0.0.1 for a legacy binary, which
    # takes IP addresses only.
    legacy_flags = os.environ.get("FERRITE_CHECK_LEGACY_FLAGS") == "1"
    host_name = "127.0.0.1" if legacy_flags else "localhost"

    def localize(value, i):
        # This member's listeners, then every example host name.
        value = value.replace("0.0.0.0:2380", f"127.0.0.1:{ports[i]['peer']}")
        value = value.replace("0.0.0.0:2379", f"127.0.0.1:{ports[i]['client']}")
        for j in range(n):
            host = f"ferrite-{j + 1}.example.net"
            value = value.replace(f"{host}:2380", f"{host_name}:{ports[j]['peer']}")
            value = value.replace(f"{host}:2379", f"{host_name}:{ports[j]['client']}")
        return value

    scratch = tempfile.mkdtemp(prefix="ferrite-unit-check-")
    procs = []
    ok = False
    try:
        for i in range(n):
            env = dict(template)
            env["FERRITE_NAME"] = f"n{i + 1}"
            for k in ("FERRITE_ADVERTISE_PEER_URLS", "FERRITE_ADVERTISE_CLIENT_URLS"):
                env[k] = env[k].replace("ferrite-1.example.net", f"ferrite-{i + 1}.example.net")
            env = {k: localize(v, i) for k, v in env.items()}
            toml = open(TOML).read()
            toml = toml.replace("/var/lib/ferrite/data", os.path.join(scratch, f"n{i + 1}"))
            toml = toml.replace("0.0.0.0:8080", f"127.0.0.1:{ports[i]['http']}")
            toml = toml.replace("0.0.0.0:10809", f"127.0.0.1:{ports[i]['nbd']}")
            toml_path = os.path.join(scratch, f"n{i + 1}.toml")
            open(toml_path, "w").write(toml)
            argv = expand(unit_value("ExecStart"), env)
            assert argv[0] == "/usr/local/bin/ferrite", argv
            argv[0] = binary
            argv[argv.index("--config") + 1] = toml_path
            if legacy_flags:
                argv = legacy(argv)
            if i == 0:
                print("n1:", " ".join(argv[1:]))
            for a in argv:
                assert "example.net" not in a and "0.0.0.0" not in a, a
            log = open(os.path.join(scratch, f"n{i + 1}.log"), "w")
            penv = {"PATH": os.environ.get("PATH", ""), "FERRITE_LOG": env.get("FERRITE_LOG", "info")}
            procs.append(subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=penv))

        endpoints = ",".join(f"127.0.0.1:{p['client']}" for p in ports)
        leader, out = wait_leader(binary, endpoints, 30, procs)
        if not leader:
            raise SystemExit(f"no leader within 30 s:\n{out}")
        print(f"leader: {leader}")

        url = f"http://127.0.0.1:{ports[0]['client']}/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = r.read().decode()
                print(f"GET {url}: {r.status} {body.strip()}")
                if '"health":"true"' not in body.replace(" ", ""):
                    raise SystemExit("/health does not say healthy")
        except (urllib.error.URLError, OSError) as e:
            why = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else str(getattr(e, "reason", e))
            if os.environ.get("FERRITE_CHECK_LEGACY_FLAGS") != "1":
                raise SystemExit(f"GET {url}: {why} (the Kubernetes probes need /health and /version there)")
            # A binary before the client port's HTTP endpoints: /healthz on the HTTP port.
            url = f"http://127.0.0.1:{ports[0]['http']}/healthz"
            print(f"no /health on the client port ({why}); legacy build: GET {url}")
            with urllib.request.urlopen(url, timeout=5) as r:
                print(f"GET {url}: {r.status} {r.read().decode().strip()}")

        li = int(leader[1:]) - 1
        started = time.monotonic()
        procs[li].send_signal(signal.SIGTERM)
        try:
            code = procs[li].wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"the leader took longer than TimeoutStopSec={stop_timeout:.0f}s to stop")
        took = time.monotonic() - started
        print(f"SIGTERM to the leader {leader}: exited {code} after {took:.2f}s (TimeoutStopSec {stop_timeout:.0f}s)")
        if code != 0:
            raise SystemExit("a graceful stop must exit 0 (Restart=on-failure would restart it)")
        log = open(os.path.join(scratch, f"{leader}.log")).read()
        if "leadership transferred" not in log:
            raise SystemExit(f"the leader's log does not show a leadership transfer:\n{log[-2000:]}")
        rest = ",".join(f"127.0.0.1:{p['client']}" for j, p in enumerate(ports) if j != li)
        new, out = wait_leader(binary, rest, 15, [p for j, p in enumerate(procs) if j != li])
        if not new or new == leader:
            raise SystemExit(f"no new leader among the other two:\n{out}")
        print(f"new leader: {new}")
        ok = True
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if not ok:
            for f in sorted(os.listdir(scratch)):
                if f.endswith(".log"):
                    print(f"--- {f} (tail)")
                    print(open(os.path.join(scratch, f)).read()[-1500:])
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
