//! The faults, drawn from the seed: kill -9 (a random member or the
//! leader) and restart, pause with SIGSTOP and resume, network partitions
//! through each member's transport fault switch (isolated leader,
//! majority/minority, a bridge, one-way), and a slow disk. One fault at a
//! time, held for a while, then healed; at most a minority is ever down,
//! so the cluster must stay available.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cluster::Cluster;
use super::Rng;

pub const KINDS: [&str; 8] = [
    "kill",
    "kill-leader",
    "pause",
    "isolate-leader",
    "partition",
    "bridge",
    "one-way",
    "slow-disk",
];

/// What is broken now, to heal it.
#[derive(Default)]
pub struct Damage {
    killed: Vec<usize>,
    paused: Vec<usize>,
    faulted: Vec<usize>,
}

/// Breaks something; returns a description.
pub async fn strike(c: &mut Cluster, rng: &mut Rng, kinds: &[&str], damage: &mut Damage) -> String {
    let n = c.nodes.len();
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    let leader = c.leader().await;
    let random = rng.below(n as u64) as usize;
    let target = match kind {
        "kill-leader" | "isolate-leader" => leader.unwrap_or(random),
        _ if rng.below(2) == 0 => leader.unwrap_or(random),
        _ => random,
    };
    let name = c.nodes[target].name.clone();
    let mut shuffled: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let names = |ix: &[usize]| -> String {
        ix.iter()
            .map(|&i| c.nodes[i].name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    match kind {
        "kill" | "kill-leader" => {
            c.kill(target).await;
            damage.killed.push(target);
            format!("kill -9 {name}")
        }
        "pause" => {
            c.pause(target);
            damage.paused.push(target);
            format!("SIGSTOP {name}")
        }
        "isolate-leader" => {
            let _ = c.fault(target, "isolate").await;
            damage.faulted.push(target);
            format!("isolate {name}")
        }
        "partition" => {
            let minority = &shuffled[..(n - 1) / 2];
            let majority = &shuffled[(n - 1) / 2..];
            cut(c, minority, majority, damage).await;
            format!("partition {} | {}", names(minority), names(majority))
        }
        "bridge" => {
            // Two halves that only the bridge member connects.
            let bridge = shuffled[0];
            let rest = &shuffled[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            cut(c, a, b, damage).await;
            format!(
                "bridge {} between {} and {}",
                c.nodes[bridge].name,
                names(a),
                names(b)
            )
        }
        "one-way" => {
            // The target's messages to everyone are lost; it still hears them.
            let others: Vec<usize> = (0..n).filter(|&i| i != target).collect();
            let _ = c
                .fault(target, &format!("drop?to={}", names(&others)))
                .await;
            damage.faulted.push(target);
            format!("one-way: {name} cannot send")
        }
        _ => {
            let _ = c.fault(target, "slow-disk?ms=200").await;
            damage.faulted.push(target);
            format!("slow disk on {name} (+200 ms per fdatasync)")
        }
    }
}

/// Drops all traffic between groups `a` and `b`, both ways.
async fn cut(c: &Cluster, a: &[usize], b: &[usize], damage: &mut Damage) {
    let names = |ix: &[usize]| -> String {
        ix.iter()
            .map(|&i| c.nodes[i].name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut rules: BTreeMap<usize, String> = BTreeMap::new();
    for &i in a {
        rules.insert(i, names(b));
    }
    for &i in b {
        rules.insert(i, names(a));
    }
    for (i, peers) in rules {
        let _ = c.fault(i, &format!("drop?to={peers}&from={peers}")).await;
        damage.faulted.push(i);
    }
}

/// Undoes everything: restarts the killed, resumes the paused, heals links
/// and disks.
pub async fn heal(c: &mut Cluster, damage: &mut Damage) -> anyhow::Result<()> {
    for i in std::mem::take(&mut damage.paused) {
        c.resume(i);
    }
    for i in std::mem::take(&mut damage.killed) {
        c.spawn(i)?;
    }
    for i in std::mem::take(&mut damage.faulted) {
        // A member that cannot be reached is retried at the next heal.
        if c.fault(i, "heal").await.is_err() {
            damage.faulted.push(i);
        }
    }
    Ok(())
}

/// How long a fault is held, and the calm after it.
pub fn durations(rng: &mut Rng) -> (Duration, Duration) {
    (
        Duration::from_millis(1000 + rng.below(3000)),
        Duration::from_millis(500 + rng.below(1500)),
    )
}
