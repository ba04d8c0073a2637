//! Block clients: one volume, one 4 KiB block per client that writes it
//! (a block device has one writer per block: a filesystem never writes a
//! block from two hosts without coordination), read by every block client,
//! each over NBD to a member of its choice, switching member when its
//! connection fails or an answer takes too long. A write fills the block
//! with one 64-bit value, so a read that finds two values saw a torn write.
//! For the checker a block is a register: writes are puts, reads gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_checker::linearizable::{Op, Operation, Outcome};

use super::nbd_client::NbdClient;
use super::workload::Recorder;
use super::Rng;

pub const VOLUME: &str = "chaos-vol";
pub const BLOCK: u64 = 4096;
/// Checker keys of blocks: `BLOCK_BASE + block`.
pub const BLOCK_BASE: u64 = 2000;
/// Longer than an election, shorter than the server's own retries: a member
/// cut off from the others is left for another.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
const CONNECT_WITHIN: Duration = Duration::from_secs(1);

/// What a read of a block means: its value, 0 if never written, or
/// `i64::MIN` (which no write puts) if torn.
fn decode(block: &[u8]) -> i64 {
    let mut words = block
        .chunks_exact(8)
        .map(|w| i64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    let first = words.next().unwrap_or(0);
    if words.all(|w| w == first) {
        first
    } else {
        i64::MIN
    }
}

fn encode(value: i64) -> Vec<u8> {
    (0..BLOCK / 8).flat_map(|_| value.to_le_bytes()).collect()
}

struct Connection {
    members: Vec<SocketAddr>,
    next: usize,
    nbd: Option<NbdClient>,
}

impl Connection {
    /// The current connection, or a new one to the next member that takes it.
    async fn get(&mut self) -> Option<&mut NbdClient> {
        if self.nbd.is_none() {
            for _ in 0..self.members.len() {
                let addr = self.members[self.next % self.members.len()];
                self.next += 1;
                let attempt =
                    tokio::time::timeout(CONNECT_WITHIN, NbdClient::connect(addr, VOLUME));
                if let Ok(Ok(c)) = attempt.await {
                    self.nbd = Some(c);
                    break;
                }
            }
        }
        self.nbd.as_mut()
    }
}

/// Runs block client `me` (it writes block `me`; `blocks` in all) until `until`.
pub async fn client(
    me: u64,
    blocks: u64,
    members: Vec<SocketAddr>,
    seed: u64,
    until: Instant,
    rec: Arc<Recorder>,
) {
    let mut rng = Rng::new(seed);
    let start = rng.below(members.len() as u64) as usize;
    let mut conn = Connection {
        members,
        next: start,
        nbd: None,
    };
    let id = 100 + me;
    let mut counter = 0i64;
    while Instant::now() < until {
        let write = rng.below(2) == 0;
        let block = if write { me } else { rng.below(blocks) };
        let Some(nbd) = conn.get().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let call = rec.now();
        let (op, outcome) = if write {
            counter += 1;
            let value = ((id as i64) << 32) | counter;
            let done =
                tokio::time::timeout(ANSWER_WITHIN, nbd.write(block * BLOCK, &encode(value))).await;
            let outcome = match done {
                Ok(Ok(())) => Outcome::Done,
                // Abandoned (the connection is dropped below): it may
                // still take effect.
                _ => Outcome::Unknown,
            };
            (Op::Put(value), outcome)
        } else {
            let done =
                tokio::time::timeout(ANSWER_WITHIN, nbd.read(block * BLOCK, BLOCK as u32)).await;
            match done {
                Ok(Ok(data)) => (Op::Get, Outcome::Value(decode(&data))),
                _ => {
                    conn.nbd = None;
                    rec.failed_read().await;
                    continue;
                }
            }
        };
        if outcome == Outcome::Unknown {
            conn.nbd = None;
        }
        let ret = rec.now();
        rec.record(Operation {
            client: id,
            key: BLOCK_BASE + block,
            op,
            call,
            ret,
            outcome,
        })
        .await;
    }
}

/// Reads every block once more after the faults healed.
pub async fn final_reads(
    blocks: u64,
    members: Vec<SocketAddr>,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let mut conn = Connection {
        members,
        next: 0,
        nbd: None,
    };
    for block in 0..blocks {
        let mut read = None;
        for _ in 0..10 {
            let Some(nbd) = conn.get().await else {
                continue;
            };
            let call = rec.now();
            match tokio::time::timeout(ANSWER_WITHIN, nbd.read(block * BLOCK, BLOCK as u32)).await {
                Ok(Ok(data)) => {
                    read = Some((call, decode(&data)));
                    break;
                }
                _ => conn.nbd = None,
            }
        }
        let (call, value) =
            read.ok_or_else(|| anyhow::anyhow!("block {block} unreadable after healing"))?;
        rec.record(Operation {
            client: 99,
            key: BLOCK_BASE + block,
            op: Op::Get,
            call,
            ret: rec.now(),
            outcome: Outcome::Value(value),
        })
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_decode_to_their_value_zero_or_torn() {
        assert_eq!(decode(&encode(42)), 42);
        assert_eq!(decode(&encode(-7)), -7);
        assert_eq!(decode(&vec![0; BLOCK as usize]), 0);
        let mut torn = encode(5);
        torn[100] ^= 1;
        assert_eq!(decode(&torn), i64::MIN);
    }
}
