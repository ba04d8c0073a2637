//! Members on several hosts: a 3-member cluster whose members each run in
//! their own network namespace with their own IP address, joined by a
//! bridge that lives in a namespace of its own (nothing here touches the
//! host's network). Members know each other by host name, resolved through
//! a per-namespace hosts file (`ip netns exec` mounts
//! `/etc/netns/<name>/hosts` over `/etc/hosts`).
//!
//! m1 listens on a specific IP address, 10.250.0.11, which is the second
//! address of its interface (the kernel would pick the first, 10.250.0.21,
//! as the source of an unbound connection): its peer connections must
//! leave from 10.250.0.11. m2 and m3 listen on 0.0.0.0 and advertise their
//! names. The test writes through each member, checks the member list
//! shows the advertised URLs, checks where peer connections come from
//! (`ss`), cuts m3 off with iptables inside its namespace (the others carry
//! on), heals it (it catches up), then moves m3 to a new IP address behind
//! the same name (the others find it again by resolving the name anew).
//!
//! It needs root and `ip netns`; without them it says "skipped" and passes.
//! `./test.sh` runs as root and installs iproute2 and iptables.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
const DOMAIN: &str = "ferrite.test";
const PEER_PORT: u16 = 2380;
const CLIENT_PORT: u16 = 2379;

/// The namespaces, processes and files of one run; all removed on drop,
/// whatever happened.
struct Net {
    bridge: String,
    members: Vec<String>,
    children: Vec<Option<Child>>,
    hosts_dirs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output();
    match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `ip ARGS`, panicking with its output if it fails.
fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        text(&out)
    );
}

fn host(i: usize) -> String {
    format!("{}.{DOMAIN}", NAMES[i])
}

/// Whether this process may make network namespaces (root, `ip netns`).
fn can_make_namespaces() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return false;
    }
    let probe = format!("fmh{}probe", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    }
    made && Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("ss")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

impl Net {
    /// The bridge namespace, three member namespaces with a veth pair each
    /// into the bridge, and their addresses (`ips[i]` first: the address
    /// the kernel picks as source unless told otherwise).
    fn new(ips: &[Vec<&str>]) -> Net {
        let pid = std::process::id();
        let mut net = Net {
            bridge: format!("fmh{pid}br"),
            members: (1..=ips.len()).map(|i| format!("fmh{pid}m{i}")).collect(),
            children: Vec::new(),
            hosts_dirs: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let br = net.bridge.clone();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, addrs) in ips.iter().enumerate() {
            let ns = net.members[i].clone();
            ip(&["netns", "add", &ns]);
            net.hosts_dirs
                .push(PathBuf::from(format!("/etc/netns/{ns}")));
            let v = format!("v{i}");
            // Made from inside the bridge namespace: one end stays there,
            // the other goes straight into the member's.
            ip(&[
                "-n", &br, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["-n", &br, "link", "set", &v, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &v, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            for a in addrs {
                ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            }
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// Every member's hosts file: the names at these addresses (rewritten
    /// in place, so that the file `ip netns exec` mounted sees it).
    fn write_hosts(&self, addrs: &[&str]) {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (i, a) in addrs.iter().enumerate() {
            hosts.push_str(&format!("{a} {}\n", host(i)));
        }
        for dir in &self.hosts_dirs {
            std::fs::create_dir_all(dir).expect("create /etc/netns/<name>");
            std::fs::write(dir.join("hosts"), &hosts).expect("write the hosts file");
        }
    }

    fn exec(&self, i: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.members[i]]);
        c
    }

    /// `ferrite server` for member `i` in its namespace.
    fn start(&mut self, i: usize, listen_ip: &str) {
        let cluster: Vec<String> = (0..NAMES.len())
            .map(|k| format!("{}=http://{}:{PEER_PORT}", NAMES[k], host(k)))
            .collect();
        let log = std::fs::File::create(self.log_path(i)).expect("log file");
        let child = self
            .exec(i)
            .arg(BIN)
            .arg("server")
            .args(["--name", NAMES[i]])
            .arg("--data-dir")
            .arg(self.dir.path().join(NAMES[i]))
            .args(["--initial-cluster", &cluster.join(",")])
            .args([
                "--listen-peer-urls",
                &format!("http://{listen_ip}:{PEER_PORT}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}:{PEER_PORT}", host(i)),
            ])
            .args([
                "--listen-client-urls",
                &format!("http://{listen_ip}:{CLIENT_PORT}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://{}:{CLIENT_PORT}", host(i)),
            ])
            .args(["--listen-http", "127.0.0.1:8080"])
            .args(["--listen-nbd", "127.0.0.1:10809"])
            .args(["--heartbeat-ms", "50", "--election-ms", "500"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start ferrite server in its namespace");
        self.children.push(Some(child));
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", NAMES[i]))
    }

    /// etcdctl inside member `i`'s namespace, talking to member `i` by name.
    fn etcdctl(&self, i: usize, args: &[&str]) -> (bool, String) {
        let endpoint = format!("{}:{CLIENT_PORT}", host(i));
        let out = run(self
            .exec(i)
            .arg("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint])
            .args(["--dial-timeout", "2s", "--command-timeout", "3s"])
            .args(args));
        (out.status.success(), text(&out))
    }

    /// Runs etcdctl until it succeeds; its output.
    fn etcdctl_until(&self, i: usize, args: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (ok, out) = self.etcdctl(i, args);
            if ok {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl {} via {} failed for {within:?}: {out}\n{}",
                args.join(" "),
                NAMES[i],
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until member `i` itself (a serializable read of its own
    /// state) has `key` = `value`.
    fn wait_for_value(&self, i: usize, key: &str, value: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (ok, out) = self.etcdctl(i, &["get", key, "--consistency=s", "--print-value-only"]);
            if ok && out.trim() == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not read {key}={value} within {within:?} (last: {out})\n{}",
                NAMES[i],
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Member `i`'s established TCP connections: (local, remote).
    fn connections(&self, i: usize) -> Vec<(String, String)> {
        let out = run(self.exec(i).args(["ss", "-tnH", "state", "established"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // Recv-Q Send-Q Local Peer (the state column is left out
                // when filtering by state).
                match cols.as_slice() {
                    [_, _, local, peer, ..] => Some((local.to_string(), peer.to_string())),
                    _ => None,
                }
            })
            .collect()
    }

    fn iptables(&self, i: usize, args: &[&str]) {
        let out = run(self.exec(i).arg("iptables").args(args));
        assert!(
            out.status.success(),
            "iptables {}: {}",
            args.join(" "),
            text(&out)
        );
    }

    fn logs(&self) -> String {
        (0..NAMES.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("---- {} ----\n{}", NAMES[i], tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace deletes its interfaces, veth pairs and
        // firewall rules with it.
        for ns in self.members.iter().chain([&self.bridge]) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        for dir in &self.hosts_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Leave /etc/netns as found when nothing else uses it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

#[test]
fn three_hosts_survive_a_member_cut_off_and_a_member_moved() {
    if !can_make_namespaces() {
        println!("skipped: needs root and ip netns (with iptables and ss)");
        return;
    }
    let started = Instant::now();
    // m1 has two addresses: 10.250.0.21 first (the kernel's choice of
    // source), 10.250.0.11 the one it listens on and is known by.
    let mut net = Net::new(&[
        vec!["10.250.0.21", "10.250.0.11"],
        vec!["10.250.0.12"],
        vec!["10.250.0.13"],
    ]);
    net.write_hosts(&["10.250.0.11", "10.250.0.12", "10.250.0.13"]);
    net.start(0, "10.250.0.11");
    net.start(1, "0.0.0.0");
    net.start(2, "0.0.0.0");

    // A write through each member, read back through the next.
    for (i, name) in NAMES.iter().enumerate() {
        let key = format!("from-{name}");
        net.etcdctl_until(
            i,
            &["put", &key, &format!("hello {i}")],
            Duration::from_secs(20),
        );
    }
    for (i, name) in NAMES.iter().enumerate() {
        let key = format!("from-{name}");
        net.wait_for_value(
            (i + 1) % 3,
            &key,
            &format!("hello {i}"),
            Duration::from_secs(5),
        );
    }

    // The member list shows the advertised URLs (names, with scheme), and
    // never the 0.0.0.0 members listen on.
    let list = net.etcdctl_until(0, &["member", "list"], Duration::from_secs(5));
    println!("member list:\n{list}");
    for (i, name) in NAMES.iter().enumerate() {
        let peer = format!("http://{}:{PEER_PORT}", host(i));
        let client = format!("http://{}:{CLIENT_PORT}", host(i));
        assert!(
            list.contains(&format!("started, {name}, {peer}, {client}")),
            "{list}"
        );
    }
    assert!(!list.contains("0.0.0.0"), "{list}");

    // Peer connections leave from each member's own address: m1's from the
    // address it listens on (bound), not its interface's first address;
    // and its peers see them come from there.
    let peer_port = format!(":{PEER_PORT}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m1_out: Vec<_> = net
            .connections(0)
            .into_iter()
            .filter(|(_, remote)| remote.ends_with(&peer_port))
            .collect();
        // What the others' peer ports see coming from m1's namespace.
        let seen: Vec<_> = (1..3)
            .flat_map(|i| net.connections(i))
            .filter(|(local, remote)| {
                local.ends_with(&peer_port)
                    && (remote.starts_with("10.250.0.11:") || remote.starts_with("10.250.0.21:"))
            })
            .collect();
        // A follower connects to the leader at least; the leader to both.
        if !m1_out.is_empty() && !seen.is_empty() {
            println!("m1's peer connections (local, remote): {m1_out:?}");
            println!("m2's and m3's peer ports see from m1: {seen:?}");
            assert!(
                m1_out.iter().all(|(l, _)| l.starts_with("10.250.0.11:")),
                "m1's peer connections must leave from 10.250.0.11: {m1_out:?}"
            );
            assert!(
                seen.iter().all(|(_, r)| r.starts_with("10.250.0.11:")),
                "{seen:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m1's peer connections: {m1_out:?}; the others see {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // m2 and m3 listen on 0.0.0.0: the kernel picks their one address.
    for (i, own) in [(1, "10.250.0.12:"), (2, "10.250.0.13:")] {
        let out: Vec<_> = net
            .connections(i)
            .into_iter()
            .filter(|(_, r)| r.ends_with(&peer_port))
            .collect();
        assert!(
            out.iter().all(|(l, _)| l.starts_with(own)),
            "{}: {out:?}",
            NAMES[i]
        );
    }

    net.etcdctl_until(0, &["put", "latest", "before-cut"], Duration::from_secs(5));
    net.wait_for_value(2, "latest", "before-cut", Duration::from_secs(5));

    // Cut m3 off: everything but loopback dropped, both ways, in its
    // namespace. The other two carry on.
    net.iptables(2, &["-A", "INPUT", "!", "-i", "lo", "-j", "DROP"]);
    net.iptables(2, &["-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP"]);
    println!("m3 cut off");
    for k in 0..10 {
        let value = format!("while-cut-{k}");
        net.etcdctl_until(k % 2, &["put", "latest", &value], Duration::from_secs(10));
    }
    net.wait_for_value(1, "latest", "while-cut-9", Duration::from_secs(5));
    let (ok, out) = net.etcdctl(2, &["get", "latest"]);
    assert!(!ok, "m3 is cut off, yet served a linearizable read: {out}");
    println!(
        "m3 refuses a linearizable read while cut off: {}",
        out.trim()
    );
    let (_, stale) = net.etcdctl(
        2,
        &["get", "latest", "--consistency=s", "--print-value-only"],
    );
    println!("m3's own (stale) value meanwhile: {:?}", stale.trim());
    assert_eq!(
        stale.trim(),
        "before-cut",
        "m3 is cut off, yet has later writes"
    );

    // Healed, m3 catches up.
    net.iptables(2, &["-F", "INPUT"]);
    net.iptables(2, &["-F", "OUTPUT"]);
    let healed = Instant::now();
    net.wait_for_value(2, "latest", "while-cut-9", Duration::from_secs(20));
    println!(
        "m3 healed: reads latest=while-cut-9 after {:?}",
        healed.elapsed()
    );

    // m3 moves to a new address behind the same name: the others'
    // connections to the old one die, they resolve the name again and
    // reach it without a restart.
    // (Deleted first: deleting an interface's first address of a subnet
    // deletes the others in it too.)
    ip(&[
        "-n",
        &net.members[2],
        "addr",
        "del",
        "10.250.0.13/24",
        "dev",
        "eth0",
    ]);
    ip(&[
        "-n",
        &net.members[2],
        "addr",
        "add",
        "10.250.0.33/24",
        "dev",
        "eth0",
    ]);
    net.write_hosts(&["10.250.0.11", "10.250.0.12", "10.250.0.33"]);
    let moved = Instant::now();
    net.etcdctl_until(0, &["put", "latest", "after-move"], Duration::from_secs(10));
    net.wait_for_value(2, "latest", "after-move", Duration::from_secs(25));
    println!(
        "m3 moved to 10.250.0.33: reads latest=after-move after {:?}",
        moved.elapsed()
    );
    net.etcdctl_until(2, &["put", "from-moved-m3", "yes"], Duration::from_secs(10));
    net.wait_for_value(0, "from-moved-m3", "yes", Duration::from_secs(5));
    let seen: Vec<_> = net
        .connections(0)
        .into_iter()
        .filter(|(_, r)| r.starts_with("10.250.0.33:"))
        .collect();
    println!("m1's connections to m3's new address: {seen:?}");
    println!("multihost run took {:?}", started.elapsed());
}
