//! Simulated clients: each runs one operation at a time (put, get,
//! compare-and-set, add on a few keys) against a member of its choice,
//! followers included (their replicas forward to the leader). Clients with a
//! session retry with the same sequence number, so a retried write is
//! applied once. Clients without one (as plain etcd clients) retry only
//! what was definitely not applied; a write whose outcome is unknown is
//! recorded as unknown and left. Every operation is recorded, from its first
//! call to its final answer, for the linearizability check.

use std::collections::BTreeMap;

use ferrite_node::NodeError;
use ferrite_raft::NodeId;
use ferrite_state::{Command, Reply, StateError};

use crate::check::linearizable::{Key, Op, Operation, Outcome};
use crate::check::Violation;
use crate::world::{Event, World};

/// How a request failed, as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    /// Definitely not applied: may be sent again (to `leader`, if known).
    NotApplied { leader: Option<NodeId> },
    /// May have been applied.
    Unknown,
}

impl Failed {
    pub fn from_node(e: &NodeError) -> Failed {
        match e {
            NodeError::NotLeader { leader } => Failed::NotApplied { leader: *leader },
            e if e.not_applied() => Failed::NotApplied { leader: None },
            _ => Failed::Unknown,
        }
    }
}

/// The ferrite-state register that holds the simulator's key `key`.
pub fn register_name(key: Key) -> String {
    format!("k{key}")
}

/// The register operation a client write becomes.
fn register_op(key: Key, op: Op) -> ferrite_state::Op {
    let name = register_name(key);
    match op {
        Op::Put(value) => ferrite_state::Op::RegisterSet { name, value },
        Op::Cas { expected, new } => ferrite_state::Op::RegisterCas {
            name,
            expected,
            new,
        },
        Op::Add(delta) => ferrite_state::Op::RegisterAdd { name, delta },
        Op::Get => ferrite_state::Op::RegisterGet { name },
    }
}

pub struct Client {
    pub id: u64,
    /// Writes carry a session (client id, sequence number).
    pub session: bool,
    pub seq: u64,
    pub target: NodeId,
    pub current: Option<Pending>,
    pub last_seen: BTreeMap<Key, i64>,
    /// Sequence number of the latest write acknowledged to this client.
    pub acked_write: u64,
}

pub struct Pending {
    pub seq: u64,
    pub key: Key,
    pub op: Op,
    pub attempt: u32,
    /// Index of this operation in the history.
    pub history: usize,
    pub is_final: bool,
}

pub struct ClientRequest {
    pub client: usize,
    pub seq: u64,
    pub attempt: u32,
    pub node: NodeId,
    pub key: Key,
    pub op: Op,
}

pub struct ClientResponse {
    pub client: usize,
    pub seq: u64,
    pub attempt: u32,
    pub result: Result<Reply, Failed>,
}

impl Client {
    pub fn new(id: u64, target: NodeId, session: bool) -> Client {
        Client {
            id,
            session,
            seq: 0,
            target,
            current: None,
            last_seen: BTreeMap::new(),
            acked_write: 0,
        }
    }
}

const RETRY_BACKOFF: u64 = 20_000;
const RETRY_BACKOFF_MAX: u64 = 1_000_000;

impl World {
    pub(crate) fn on_client_next(&mut self, c: usize) {
        if self.healing.is_some() || self.clients[c].current.is_some() {
            return;
        }
        let key = self.prng.below(self.opts.keys);
        let client = &self.clients[c];
        let unique = (client.id * 1_000_000 + client.seq + 1) as i64;
        let seen = client.last_seen.get(&key).copied().unwrap_or(0);
        let op = match self.prng.below(10) {
            0..=2 => Op::Get,
            3..=5 => Op::Put(unique),
            6..=7 => {
                let expected = match self.prng.below(3) {
                    0 => 0,
                    1 => seen,
                    _ => self.prng.below(3) as i64,
                };
                Op::Cas {
                    expected,
                    new: unique,
                }
            }
            _ => Op::Add(self.prng.range(1, 3) as i64),
        };
        self.begin(c, key, op, false);
    }

    pub(crate) fn start_final_read(&mut self) {
        let k = self.final_reads.unwrap_or(0);
        if k < self.opts.keys {
            self.begin(0, k, Op::Get, true);
        }
    }

    fn begin(&mut self, c: usize, key: Key, op: Op, is_final: bool) {
        let client = &mut self.clients[c];
        client.seq += 1;
        self.history.push(Operation {
            client: client.id,
            key,
            op,
            call: self.now,
            ret: self.now,
            outcome: Outcome::Unknown,
        });
        client.current = Some(Pending {
            seq: client.seq,
            key,
            op,
            attempt: 0,
            history: self.history.len() - 1,
            is_final,
        });
        self.send_request(c, 0);
    }

    fn send_request(&mut self, c: usize, delay: u64) {
        let client = &self.clients[c];
        let Some(p) = &client.current else { return };
        let req = ClientRequest {
            client: c,
            seq: p.seq,
            attempt: p.attempt,
            node: client.target,
            key: p.key,
            op: p.op,
        };
        let (seq, attempt) = (p.seq, p.attempt);
        if !self.prng.chance(self.drop_per_million) {
            let at = delay + self.latency();
            self.schedule(at, Event::Request(req));
        }
        let timeout = delay + self.opts.client_timeout;
        self.schedule(
            timeout,
            Event::ClientTimeout {
                client: c,
                seq,
                attempt,
            },
        );
    }

    pub(crate) fn on_request(&mut self, req: ClientRequest) {
        let id = req.node;
        let client = &self.clients[req.client];
        let (client_id, session) = (client.id, client.session);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(running) = node.running.as_mut() else {
            return;
        };
        let request = match req.op {
            Op::Get if self.opts.stale_reads => {
                let value = running
                    .applier
                    .machine()
                    .sm
                    .read_register(&register_name(req.key));
                self.respond(req.client, req.seq, req.attempt, Ok(Reply::Value(value)));
                return;
            }
            Op::Get => {
                let query = Command::new(register_op(req.key, Op::Get)).encode();
                running.replica.read(query, true)
            }
            op => {
                let op = register_op(req.key, op);
                let cmd = if session {
                    Command::with_session(client_id, req.seq, op)
                } else {
                    Command::new(op)
                };
                running.replica.propose(cmd.encode())
            }
        };
        node.requests.insert(
            request,
            crate::node::Asker::Register {
                client: req.client,
                seq: req.seq,
                attempt: req.attempt,
            },
        );
        self.log(|| {
            format!(
                "request client {client_id} seq {} at {id}: {request:?}",
                req.seq
            )
        });
        self.touched.insert(id);
        self.drive(id);
    }

    pub(crate) fn respond(
        &mut self,
        client: usize,
        seq: u64,
        attempt: u32,
        result: Result<Reply, Failed>,
    ) {
        if self.prng.chance(self.drop_per_million) {
            return;
        }
        let at = self.latency();
        self.schedule(
            at,
            Event::Response(ClientResponse {
                client,
                seq,
                attempt,
                result,
            }),
        );
    }

    pub(crate) fn on_response(&mut self, resp: ClientResponse) {
        let c = resp.client;
        let Some(p) = &self.clients[c].current else {
            return;
        };
        if p.seq != resp.seq {
            return;
        }
        // A failure of an earlier attempt says nothing about the one in
        // flight: retrying on it would fork a second chain of attempts
        // (and every fork another), burying a slow cluster in retries.
        if resp.result.is_err() && resp.attempt != p.attempt {
            return;
        }
        match resp.result {
            Ok(Reply::Error(StateError::NoSpace)) if p.op != Op::Get => {
                // Refused while NOSPACE was raised (the register did not
                // exist yet): definitely not applied, so not in the history
                // the checker judges. The client moves on.
                self.stats.puts_refused_nospace += 1;
                self.refused.insert(p.history);
                self.clients[c].current = None;
                let think = self.prng.below(20_000);
                self.schedule(think, Event::ClientNext { client: c });
            }
            Ok(reply) => {
                let outcome = match (p.op, reply) {
                    (Op::Get, Reply::Value(v)) | (Op::Add(_), Reply::Value(v)) => Outcome::Value(v),
                    (Op::Put(_), Reply::Set { .. }) => Outcome::Done,
                    (Op::Cas { .. }, Reply::Cas { swapped, .. }) => Outcome::Cas(swapped),
                    (op, reply) => {
                        self.fail(Violation::new(
                            "reply",
                            format!("{op:?} answered with {reply:?}"),
                        ));
                        return;
                    }
                };
                let (h, key, is_final, seq, op) = (p.history, p.key, p.is_final, p.seq, p.op);
                self.history[h].ret = self.now;
                self.history[h].outcome = outcome;
                let client = &mut self.clients[c];
                client.current = None;
                if op != Op::Get {
                    client.acked_write = seq;
                }
                if let Outcome::Value(v) = outcome {
                    client.last_seen.insert(key, v);
                }
                if is_final {
                    self.final_reads = Some(self.final_reads.unwrap_or(0) + 1);
                    self.start_final_read();
                } else {
                    let think = self.prng.below(20_000);
                    self.schedule(think, Event::ClientNext { client: c });
                }
            }
            Err(Failed::NotApplied { leader }) => self.retry(c, leader, RETRY_BACKOFF),
            Err(Failed::Unknown) => self.unknown(c),
        }
    }

    pub(crate) fn on_client_timeout(&mut self, c: usize, seq: u64, attempt: u32) {
        let Some(p) = &self.clients[c].current else {
            return;
        };
        if p.seq == seq && p.attempt == attempt {
            self.unknown(c);
        }
    }

    /// No answer, or "unknown": a read or a write in a session is sent
    /// again (the session makes it apply once); a write without one may
    /// have been applied, so it stays unknown in the history and the client
    /// moves on, as a plain etcd client's caller must.
    fn unknown(&mut self, c: usize) {
        let Some(p) = &self.clients[c].current else {
            return;
        };
        if p.op == Op::Get || self.clients[c].session {
            self.retry(c, None, RETRY_BACKOFF);
            return;
        }
        self.clients[c].current = None;
        let think = self.prng.below(20_000);
        self.schedule(think, Event::ClientNext { client: c });
    }

    /// Sends the current operation again after `delay`, doubled with every
    /// attempt up to `RETRY_BACKOFF_MAX` (as real clients back off), so
    /// that a slow cluster is not buried in retries.
    fn retry(&mut self, c: usize, hint: Option<NodeId>, delay: u64) {
        let attempt = self.clients[c].current.as_ref().map_or(0, |p| p.attempt);
        let delay = delay
            .saturating_mul(1 << attempt.min(10))
            .min(RETRY_BACKOFF_MAX);
        let target = match hint {
            Some(leader) => leader,
            None => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                self.prng
                    .pick(&ids)
                    .copied()
                    .unwrap_or(self.clients[c].target)
            }
        };
        let client = &mut self.clients[c];
        client.target = target;
        if let Some(p) = client.current.as_mut() {
            p.attempt += 1;
        }
        self.send_request(c, delay);
    }
}
