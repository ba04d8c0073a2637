//! `ferrite-sim bench`: how fast the consensus core itself is. A 3-node
//! cluster in memory, driven by the core alone: messages are delivered and
//! writes made durable at once, so what is measured is the core's own cost
//! per committed entry, with 1, 64 and 1024 proposals outstanding.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrite_raft::{Config, DurableState, Message, NodeId, Raft, Role};

const ENTRY_BYTES: usize = 128;

pub fn main(mut args: impl Iterator<Item = String>) -> ExitCode {
    let mut seconds = 2.0f64;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--seconds", Some(v)) => match v.parse() {
                Ok(s) if s > 0.0 => seconds = s,
                _ => {
                    eprintln!("bad --seconds {v:?}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: ferrite-sim bench [--seconds S]");
                return ExitCode::from(2);
            }
        }
    }
    println!("3-node in-memory cluster, core only, {ENTRY_BYTES}-byte entries, {seconds}s per row");
    println!(
        "{:>12} {:>16} {:>18} {:>14}",
        "outstanding", "entries/s", "cpu us/entry", "entries"
    );
    for outstanding in [1usize, 64, 1024] {
        match run(outstanding, Duration::from_secs_f64(seconds)) {
            Ok(r) => println!(
                "{:>12} {:>16.0} {:>18.3} {:>14}",
                outstanding,
                r.entries as f64 / r.wall.as_secs_f64(),
                r.cpu.as_secs_f64() * 1e6 / r.entries.max(1) as f64,
                r.entries
            ),
            Err(e) => {
                eprintln!("bench failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

pub struct BenchResult {
    pub entries: u64,
    pub wall: Duration,
    pub cpu: Duration,
}

/// A cluster whose network and disks are instantaneous.
struct Cluster {
    nodes: Vec<Raft>,
    wire: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Result<Cluster, String> {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let mut nodes = Vec::new();
        for id in ids {
            let mut cfg = Config::new(id);
            cfg.uncommitted_bytes_max = 1 << 30;
            nodes.push(Raft::new(cfg, DurableState::bootstrap(ids), 7).map_err(|e| e.to_string())?);
        }
        Ok(Cluster {
            nodes,
            wire: VecDeque::new(),
        })
    }

    /// Executes every node's output until nothing is left to do. Returns the
    /// entries the leader (node 1) applied.
    fn settle(&mut self) -> Result<u64, String> {
        let mut applied = 0;
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                let out = self.nodes[i].take_output();
                if out.is_empty() {
                    continue;
                }
                busy = true;
                self.wire.extend(out.send);
                self.wire.extend(out.send_after_persist);
                if let Some((index, term)) = out.persist.last() {
                    self.nodes[i].on_persisted(index, term);
                }
                if let Some(last) = out.apply.last() {
                    self.nodes[i].on_applied(last.index);
                    if i == 0 {
                        applied += out.apply.len() as u64;
                    }
                }
            }
            while let Some(msg) = self.wire.pop_front() {
                busy = true;
                let to = (msg.to.0 - 1) as usize;
                self.nodes[to].step(msg).map_err(|e| e.to_string())?;
            }
            if !busy {
                return Ok(applied);
            }
        }
    }
}

pub fn run(outstanding: usize, duration: Duration) -> Result<BenchResult, String> {
    let mut c = Cluster::new()?;
    for _ in 0..100 {
        if c.nodes[0].role() == Role::Leader {
            break;
        }
        c.nodes[0].tick();
        c.settle()?;
    }
    if c.nodes[0].role() != Role::Leader {
        return Err("node 1 did not become leader".into());
    }
    c.settle()?;
    let payload = Bytes::from(vec![7u8; ENTRY_BYTES]);
    let (wall_start, cpu_start) = (Instant::now(), cpu_time());
    let mut in_flight = 0usize;
    let mut entries = 0u64;
    while wall_start.elapsed() < duration {
        while in_flight < outstanding {
            c.nodes[0]
                .propose(payload.clone())
                .map_err(|e| e.to_string())?;
            in_flight += 1;
        }
        let applied = c.settle()?;
        entries += applied;
        in_flight = in_flight.saturating_sub(applied as usize);
    }
    Ok(BenchResult {
        entries,
        wall: wall_start.elapsed(),
        cpu: cpu_time().saturating_sub(cpu_start),
    })
}

/// CPU time of this thread, from the kernel's scheduler statistics.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .map_or(Duration::ZERO, Duration::from_nanos)
}
