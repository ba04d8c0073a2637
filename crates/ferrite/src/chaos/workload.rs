//! The clients: each runs operations on a few keys, through the etcd API
//! (put, get, compare-and-put in a transaction) and Ferrite's own
//! (register add with exactly-once sessions, register get), and records
//! every call and return for the linearizability check. A write whose
//! answer never came is recorded with an unknown outcome; a failed read is
//! dropped (it changed nothing).

use std::sync::Arc;
use std::time::Instant;

use ferrite_checker::linearizable::{Op, Operation, Outcome};
use ferrite_client::{Client, ClientOptions};
use tokio::sync::Mutex;

use super::Rng;

/// Checker keys: KV keys are `0..keys`, registers `REGISTER_BASE + k`.
pub const REGISTER_BASE: u64 = 1000;

pub fn kv_key(k: u64) -> Vec<u8> {
    format!("chaos/k{k}").into_bytes()
}

pub fn register_name(k: u64) -> String {
    format!("chaos-r{k}")
}

/// What the clients did, shared by all of them.
#[derive(Default)]
pub struct History {
    pub ops: Vec<Operation>,
    pub unknown: u64,
    pub failed_reads: u64,
}

pub struct Recorder {
    pub start: Instant,
    pub history: Mutex<History>,
}

impl Recorder {
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub async fn record(&self, op: Operation) {
        let mut h = self.history.lock().await;
        if op.outcome == Outcome::Unknown {
            h.unknown += 1;
        }
        h.ops.push(op);
    }

    pub async fn failed_read(&self) {
        self.history.lock().await.failed_reads += 1;
    }
}

fn parse(value: &[u8]) -> i64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(i64::MIN)
}

/// Runs one client until `until`.
pub async fn client(
    id: u64,
    endpoints: Vec<String>,
    keys: u64,
    seed: u64,
    until: Instant,
    rec: Arc<Recorder>,
    options: ClientOptions,
) {
    let Ok(mut c) = Client::with_options(endpoints, options) else {
        return;
    };
    let mut rng = Rng::new(seed);
    let mut counter = 0i64;
    // The last value this client saw per KV key: what its CAS expects.
    let mut seen = vec![0i64; keys as usize];
    while Instant::now() < until {
        let k = rng.below(keys);
        let call = rec.now();
        let (key, op, outcome) = match rng.below(100) {
            0..=29 => {
                counter += 1;
                let v = (id as i64) * 1_000_000_000 + counter;
                let r = c.put(&kv_key(k), v.to_string().as_bytes()).await;
                (k, Op::Put(v), r.map(|_| Outcome::Done))
            }
            30..=54 => match c.get(&kv_key(k)).await {
                Ok(kv) => {
                    let v = kv.map_or(0, |kv| parse(&kv.value));
                    seen[k as usize] = v;
                    (k, Op::Get, Ok(Outcome::Value(v)))
                }
                Err(_) => {
                    rec.failed_read().await;
                    continue;
                }
            },
            55..=69 => {
                counter += 1;
                let new = (id as i64) * 1_000_000_000 + counter;
                let expected = seen[k as usize];
                let r = c
                    .compare_and_put(
                        &kv_key(k),
                        expected.to_string().as_bytes(),
                        new.to_string().as_bytes(),
                    )
                    .await;
                if matches!(r, Ok(true)) {
                    seen[k as usize] = new;
                }
                (k, Op::Cas { expected, new }, r.map(Outcome::Cas))
            }
            70..=87 => {
                let r = c.register_add(&register_name(k), 1).await;
                (REGISTER_BASE + k, Op::Add(1), r.map(Outcome::Value))
            }
            _ => match c.register_get(&register_name(k)).await {
                Ok(v) => (REGISTER_BASE + k, Op::Get, Ok(Outcome::Value(v))),
                Err(_) => {
                    rec.failed_read().await;
                    continue;
                }
            },
        };
        let ret = rec.now();
        // Any failure of a write (timed out, outcome unknown, or even
        // refused) leaves open whether it took effect.
        let outcome = outcome.unwrap_or(Outcome::Unknown);
        rec.record(Operation {
            client: id,
            key,
            op,
            call,
            ret,
            outcome,
        })
        .await;
    }
}

/// Reads every key once more, after the faults healed: the reads that make
/// a lost acknowledged write visible to the checker.
pub async fn final_reads(
    id: u64,
    endpoints: Vec<String>,
    keys: u64,
    rec: &Recorder,
    options: ClientOptions,
) -> anyhow::Result<()> {
    let mut c = Client::with_options(endpoints, options)?;
    for k in 0..keys {
        let call = rec.now();
        let v = c.get(&kv_key(k)).await?.map_or(0, |kv| parse(&kv.value));
        let ret = rec.now();
        rec.record(Operation {
            client: id,
            key: k,
            op: Op::Get,
            call,
            ret,
            outcome: Outcome::Value(v),
        })
        .await;
        let call = rec.now();
        let v = c.register_get(&register_name(k)).await?;
        let ret = rec.now();
        rec.record(Operation {
            client: id,
            key: REGISTER_BASE + k,
            op: Op::Get,
            call,
            ret,
            outcome: Outcome::Value(v),
        })
        .await;
    }
    Ok(())
}
