//! The replicated state machine: applies committed entries in log order to
//! the KV store, the registers and the session table, and answers local
//! reads. Everything a replica's state depends on is here and in the
//! snapshot; nothing depends on time or on the host.

use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{AuthStore, Principal};
use crate::command::{Command, Op};
use crate::error::{ApplyError, DecodeError, StateError};
use crate::event::Event;
use crate::kv::{KvStore, RangeRequest, RangeResponse};
use crate::registers::Registers;
use crate::reply::Reply;
use crate::session::{Admit, SessionLimits, Sessions};
use crate::snapshot;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub(crate) kv: KvStore,
    pub(crate) registers: Registers,
    pub(crate) sessions: Sessions,
    pub(crate) members: crate::members::Members,
    pub(crate) volumes: crate::volumes::Volumes,
    /// Users, roles and permissions; shared with the event stream (each
    /// change publishes the new store), copied on write.
    pub(crate) auth: Arc<AuthStore>,
    /// The raised alarms (`alarms.rs`): they change what applies.
    pub(crate) alarms: crate::alarms::Alarms,
    /// Test-only breakage (`AlarmCanary::None` in production); not part
    /// of snapshots.
    pub(crate) alarm_canary: crate::alarms::AlarmCanary,
    /// The index of the last entry applied (0: none).
    /// Invariant: every session's `last_used <= applied_index`.
    pub(crate) applied_index: u64,
}

/// What applying one entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The reply for the client that proposed the entry. `Err` when the
    /// entry is undecodable or a stale duplicate: there is no reply to give,
    /// and nothing was applied.
    pub reply: Result<Reply, ApplyError>,
    /// Every change the entry made, in order; empty for reads, refused
    /// requests and retries answered from the session table.
    pub events: Vec<Event>,
}

impl StateMachine {
    /// The empty machine: what an empty (bootstrap) snapshot restores.
    pub fn new() -> StateMachine {
        StateMachine::default()
    }

    /// An empty machine with other session bounds (tests use small ones).
    /// All replicas must use the same; snapshots carry them.
    pub fn with_session_limits(limits: SessionLimits) -> StateMachine {
        StateMachine {
            sessions: Sessions::new(limits),
            ..StateMachine::default()
        }
    }

    /// Applies the committed entry at `index` whose data is `data`.
    ///
    /// Panics if `index` is not above `applied_index()`: entries must be
    /// applied in log order, once, and a violation is the caller's bug.
    /// Undecodable data is not a bug here: it yields `ApplyError::Decode`,
    /// deterministically on every replica.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Applied {
        self.advance(index);
        match Command::decode(data) {
            Ok(cmd) => self.apply_command(index, &cmd),
            Err(e) => Applied {
                reply: Err(ApplyError::Decode(e)),
                events: Vec::new(),
            },
        }
    }

    /// Marks `index` applied for an entry that carries no command (a Raft
    /// no-op or configuration change). Sessions still age by it.
    pub fn apply_noop(&mut self, index: u64) {
        self.advance(index);
    }

    /// A local read (after ReadIndex, or serializable).
    pub fn read_range(&self, req: &RangeRequest) -> Result<RangeResponse, StateError> {
        self.kv.range(req)
    }

    /// Answers a read-only command from the state as it is, after checking
    /// that its principal may (a refusal is a `Reply::Error`): ranges,
    /// registers, the member and volume tables (lists filtered to what the
    /// principal may read), leases, history, auth reads. Volume bytes are
    /// not here (`StateError::LocalReadOnly`): the node reads them from its
    /// block store after [`StateMachine::authorize`].
    pub fn query(&self, cmd: &Command) -> Reply {
        if let Err(e) = self.authorize(&cmd.principal, &cmd.op) {
            return Reply::Error(e);
        }
        let who = &cmd.principal;
        match &cmd.op {
            Op::RegisterGet { name } => Reply::Value(self.registers.get(name)),
            Op::RegisterList { limit } => Reply::Registers(self.registers_for(who, *limit)),
            Op::MemberList => Reply::Members(self.members.list()),
            Op::VolumeList => Reply::Volumes(self.volumes_for(who)),
            Op::Auth(req) => self.auth.answer(req).map_or_else(Reply::Error, Reply::Auth),
            Op::Alarm(req) if req.action == crate::alarms::AlarmAction::Get => {
                Reply::Alarms(self.alarms.clone().execute(req))
            }
            op => self.read(op),
        }
    }

    /// Whether `who` may run `op` now (see `auth/authorize.rs`).
    pub fn authorize(&self, who: &Principal, op: &Op) -> Result<(), StateError> {
        self.auth.authorize(who, op, &self.kv)
    }

    /// The auth store as it is now (a shared, immutable copy).
    pub fn auth(&self) -> &Arc<AuthStore> {
        &self.auth
    }

    /// Answers a read-only op from the state as it is, unchecked (the
    /// member's own reads): lease lookups, history reads and ranges.
    pub fn read(&self, op: &Op) -> Reply {
        let result = match op {
            Op::LeaseGet { id, keys } => self
                .kv
                .leases()
                .info(*id, *keys)
                .map(Reply::Lease)
                .ok_or(StateError::LeaseNotFound),
            Op::LeaseList => Ok(Reply::Leases(
                self.kv.leases().iter().map(|(id, _)| id).collect(),
            )),
            Op::Changes(c) => self.kv.changes(c).map(Reply::Changes),
            Op::Range(r) => self.kv.range(r).map(Reply::Range),
            Op::Hash => Ok(Reply::Hash {
                hash: self.hash(),
                revision: self.revision(),
            }),
            Op::HashKv { revision } => {
                self.kv
                    .hash_kv(*revision)
                    .map(|(hash, hash_revision)| Reply::HashKv {
                        hash,
                        compact_revision: self.kv.compact_revision(),
                        hash_revision,
                        revision: self.kv.revision(),
                    })
            }
            _ => Err(StateError::LocalReadOnly),
        };
        result.unwrap_or_else(Reply::Error)
    }

    /// Every lease as `(id, ttl, remaining)`: what a lessor restarts from.
    pub fn lease_records(&self) -> Vec<(i64, i64, i64)> {
        self.kv
            .leases()
            .iter()
            .map(|(id, l)| (id, l.ttl, l.remaining))
            .collect()
    }

    /// A local read of a register; 0 if it was never written.
    pub fn read_register(&self, name: &str) -> i64 {
        self.registers.get(name)
    }

    /// The first `limit` registers in name order, with their values.
    pub fn list_registers(&self, limit: u64) -> Vec<(String, i64)> {
        self.registers_for(&Principal::System, limit)
    }

    /// The first `limit` registers `who` may read, in name order.
    fn registers_for(&self, who: &Principal, limit: u64) -> Vec<(String, i64)> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.registers
            .iter()
            .filter(|(n, _)| self.auth.may_read_register(who, n))
            .take(limit)
            .map(|(n, v)| (n.to_string(), v))
            .collect()
    }

    /// The volumes `who` may read, in name order.
    fn volumes_for(&self, who: &Principal) -> Vec<crate::volumes::VolumeInfo> {
        let mut list = self.volumes.list();
        list.retain(|v| self.auth.may_read_volume(who, &v.name));
        list
    }

    /// The raised alarms.
    pub fn alarms(&self) -> &crate::alarms::Alarms {
        &self.alarms
    }

    /// Breaks the machine's alarm refusals on purpose (the simulator's
    /// canary); `AlarmCanary::None` restores the real behaviour.
    pub fn set_alarm_canary(&mut self, canary: crate::alarms::AlarmCanary) {
        self.alarm_canary = canary;
    }

    /// etcd's `Hash`: a CRC-32 of the whole state as a snapshot encodes it
    /// (the applied index and sessions included, so members agree only at
    /// the same applied index).
    pub fn hash(&self) -> u32 {
        crate::crc32::crc32(&self.snapshot())
    }

    /// The accounted bytes of the whole state (see `space.rs`): what the
    /// space quota measures.
    pub fn space_in_use(&self) -> u64 {
        use crate::space::*;
        let count = |n: usize, each: u64| (n as u64).saturating_mul(each);
        [
            self.kv.bytes(),
            count(self.kv.leases().len(), LEASE_BYTES),
            count(self.registers.len(), REGISTER_BYTES),
            count(self.volumes.len(), VOLUME_BYTES),
            count(self.members.by_id.len(), MEMBER_BYTES),
            count(
                self.auth.users().count() + self.auth.roles().count(),
                AUTH_ENTRY_BYTES,
            ),
            count(self.alarms.len(), ALARM_BYTES),
            count(self.sessions.len(), SESSION_BYTES),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }

    /// Gives the spare capacity of the key histories back to the
    /// allocator (a defragmentation); returns the version slots released.
    /// Changes no state: every member may do it when it likes.
    pub fn defragment(&mut self) -> u64 {
        self.kv.shrink() as u64
    }

    /// Test-only divergence (the corruption check's fault injection):
    /// changes the newest value of `key` in this member's history without a
    /// new revision, as a damaged disk or a bug would. Returns whether the
    /// key existed. Never called by the replica.
    pub fn corrupt_value(&mut self, key: &[u8]) -> bool {
        self.kv.corrupt_value(key)
    }

    /// The KV store's revision (1 when empty).
    pub fn revision(&self) -> i64 {
        self.kv.revision()
    }

    pub fn compact_revision(&self) -> i64 {
        self.kv.compact_revision()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The highest sequence number applied for `client`; 0 if the client
    /// has no session (never seen, expired or evicted).
    pub fn session_seq(&self, client: u64) -> u64 {
        self.sessions.seq(client)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session_limits(&self) -> SessionLimits {
        self.sessions.limits()
    }

    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    pub fn registers(&self) -> &Registers {
        &self.registers
    }

    pub fn members(&self) -> &crate::members::Members {
        &self.members
    }

    /// The volume table; the bytes are in the node's `BlockStore`.
    pub fn volumes(&self) -> &crate::volumes::Volumes {
        &self.volumes
    }

    /// Everything (KV history, revisions, registers, sessions, applied
    /// index) in a versioned, checksummed encoding.
    pub fn snapshot(&self) -> Bytes {
        snapshot::encode(self)
    }

    /// The machine a `snapshot` describes; empty data is the empty machine.
    /// Refuses damaged or inconsistent snapshots with an error.
    pub fn restore(data: &[u8]) -> Result<StateMachine, DecodeError> {
        snapshot::decode(data)
    }

    /// Asserts the invariants; for tests and the simulator.
    pub fn check_invariants(&self) {
        if let Err(what) = self.validate() {
            panic!("state machine invariant broken: {what}");
        }
    }

    fn advance(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "apply out of order: index={index} applied_index={}",
            self.applied_index
        );
        self.applied_index = index;
        self.sessions.expire(index);
    }

    fn apply_command(&mut self, index: u64, cmd: &Command) -> Applied {
        let mut events = Vec::new();
        let Some((client, seq)) = cmd.session else {
            let reply = self.execute(&cmd.principal, &cmd.op, &mut events);
            return Applied {
                reply: Ok(reply),
                events,
            };
        };
        let reply = match self.sessions.admit(client, seq, index) {
            Admit::Retry(reply) => Ok(reply),
            Admit::Stale { applied } => Err(ApplyError::StaleSequence {
                client,
                seq,
                applied,
            }),
            // A request its principal may not make was not applied: its
            // refusal is not remembered, so that the client's retry with
            // fresh credentials (etcd's clients authenticate again on an
            // old auth revision) is judged anew, not answered the refusal.
            Admit::Fresh if self.authorize(&cmd.principal, &cmd.op).is_err() => {
                Ok(self.execute(&cmd.principal, &cmd.op, &mut events))
            }
            Admit::Fresh => {
                let reply = self.execute(&cmd.principal, &cmd.op, &mut events);
                self.sessions.record(client, seq, reply.clone(), index);
                Ok(reply)
            }
        };
        Applied { reply, events }
    }

    fn execute(&mut self, who: &Principal, op: &Op, events: &mut Vec<Event>) -> Reply {
        if let Err(e) = self.authorize(who, op) {
            return Reply::Error(e);
        }
        if let Err(e) = self.check_alarms(op) {
            return Reply::Error(e);
        }
        let result = match op {
            Op::Put(p) => self.kv.put(p, events).map(Reply::Put),
            Op::DeleteRange(d) => self.kv.delete_range(d, events).map(Reply::DeleteRange),
            Op::Txn(t) => self.kv.txn(t, events).map(Reply::Txn),
            Op::Compact(c) => self.kv.compact(c).map(Reply::Compact),
            Op::Range(r) => self.kv.range(r).map(Reply::Range),
            Op::RegisterGet { name } => Ok(Reply::Value(self.registers.get(name))),
            Op::RegisterSet { name, value } => Ok(Reply::Set {
                previous: self.registers.set(name, *value, events),
            }),
            Op::RegisterAdd { name, delta } => {
                self.registers.add(name, *delta, events).map(Reply::Value)
            }
            Op::RegisterCas {
                name,
                expected,
                new,
            } => {
                let (swapped, current) = self
                    .registers
                    .compare_and_set(name, *expected, *new, events);
                Ok(Reply::Cas { swapped, current })
            }
            Op::RegisterList { limit } => Ok(Reply::Registers(self.registers_for(who, *limit))),
            Op::MemberPublish(m) => {
                self.members.publish(m.clone());
                Ok(Reply::Members(self.members.list()))
            }
            Op::MemberForget { id } => {
                self.members.forget(*id);
                Ok(Reply::Members(self.members.list()))
            }
            Op::MemberList => Ok(Reply::Members(self.members.list())),
            Op::VolumeCreate { name, size } => self
                .volumes
                .create(self.applied_index, name, *size, events)
                .map(Reply::Volume),
            Op::VolumeResize { name, size } => {
                self.volumes.resize(name, *size, events).map(Reply::Volume)
            }
            Op::VolumeDelete { name } => self.volumes.delete(name, events).map(Reply::Volume),
            Op::VolumeList => Ok(Reply::Volumes(self.volumes_for(who))),
            Op::VolumeWrite { name, offset, data } => self
                .volumes
                .write(name, *offset, data, events)
                .map(|()| Reply::Done),
            Op::VolumeZero { name, offset, len } => self
                .volumes
                .zero(name, *offset, *len, events)
                .map(|()| Reply::Done),
            // The bytes are not in this machine but in the block store: the
            // node serves volume reads locally after ReadIndex.
            Op::VolumeRead { .. } => Err(StateError::LocalReadOnly),
            Op::LeaseGrant { id, ttl } => self
                .kv
                .lease_grant(*id, *ttl, events)
                .map(|(id, ttl)| Reply::LeaseGranted { id, ttl }),
            Op::LeaseRevoke { id } => self
                .kv
                .lease_revoke(*id, events)
                .map(|revision| Reply::LeaseRevoked { revision }),
            Op::LeaseCheckpoint { checkpoints } => {
                self.kv.lease_checkpoint(checkpoints, events);
                Ok(Reply::Done)
            }
            Op::LeaseGet { .. } | Op::LeaseList | Op::Changes(_) => Ok(self.read(op)),
            Op::Auth(req) => self.apply_auth(req, events).map(Reply::Auth),
            Op::Alarm(req) => Ok(Reply::Alarms(self.alarms.execute(req))),
            // Member-local: answered (or carried out) by the member itself.
            Op::Hash | Op::HashKv { .. } | Op::Defragment => Err(StateError::LocalReadOnly),
        };
        result.unwrap_or_else(Reply::Error)
    }

    /// What the raised alarms refuse (see `alarms.rs`): CORRUPT the KV and
    /// lease requests and register and volume writes, NOSPACE what would
    /// grow the state.
    fn check_alarms(&self, op: &Op) -> Result<(), StateError> {
        if self.alarms.is_empty() {
            return Ok(());
        }
        use crate::alarms::AlarmType;
        if self.alarms.is_raised(AlarmType::Corrupt) {
            let refused = matches!(
                op,
                Op::Put(_)
                    | Op::DeleteRange(_)
                    | Op::Txn(_)
                    | Op::Compact(_)
                    | Op::Range(_)
                    | Op::LeaseGrant { .. }
                    | Op::LeaseRevoke { .. }
                    | Op::RegisterSet { .. }
                    | Op::RegisterAdd { .. }
                    | Op::RegisterCas { .. }
                    | Op::VolumeCreate { .. }
                    | Op::VolumeResize { .. }
                    | Op::VolumeDelete { .. }
                    | Op::VolumeWrite { .. }
                    | Op::VolumeZero { .. }
            );
            if refused {
                return Err(StateError::Corrupt);
            }
        }
        if self.alarms.is_raised(AlarmType::NoSpace) {
            let grows = match op {
                Op::RegisterSet { name, .. }
                | Op::RegisterAdd { name, .. }
                | Op::RegisterCas { name, .. } => !self.registers.contains(name),
                Op::VolumeResize { name, size } => {
                    self.volumes.get(name).is_some_and(|v| *size > v.size)
                }
                op => crate::space::cost(op) > 0,
            };
            if grows && !self.alarm_canary.lets_through(op) {
                return Err(StateError::NoSpace);
            }
        }
        Ok(())
    }

    /// Applies an auth request; a change publishes the new store.
    fn apply_auth(
        &mut self,
        req: &crate::auth::AuthRequest,
        events: &mut Vec<Event>,
    ) -> Result<crate::auth::AuthReply, StateError> {
        let before = self.auth.changes();
        if req.is_read() {
            return self.auth.answer(req);
        }
        let reply = Arc::make_mut(&mut self.auth).execute(req)?;
        if self.auth.changes() != before {
            events.push(Event::Auth(self.auth.clone()));
        }
        Ok(reply)
    }

    /// The invariants, as a check that can fail: a restored snapshot must
    /// pass it before it is used, so that no later apply can trip on it.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        let kv = &self.kv;
        if kv.revision < 1 {
            return Err("revision below 1");
        }
        if kv.compact_revision < 0 || kv.compact_revision > kv.revision {
            return Err("compact revision outside 0..=revision");
        }
        for (key, history) in &kv.keys {
            if key.is_empty() {
                return Err("empty key");
            }
            let versions = history.versions();
            if versions.is_empty() {
                return Err("key without versions");
            }
            if versions
                .windows(2)
                .any(|w| w[0].mod_revision > w[1].mod_revision)
            {
                return Err("history out of revision order");
            }
            let mut compacted = 0;
            for v in versions {
                if v.mod_revision < 1 || v.mod_revision > kv.revision {
                    return Err("version revision outside 1..=revision");
                }
                if let Some(p) = &v.put {
                    if p.create_revision < 1 || p.create_revision > v.mod_revision {
                        return Err("create revision outside 1..=mod revision");
                    }
                    if p.version < 1 || p.version > v.mod_revision {
                        return Err("version outside 1..=mod revision");
                    }
                }
                if v.mod_revision <= kv.compact_revision {
                    compacted += 1;
                    if v.put.is_none() {
                        return Err("tombstone at or below the compact revision");
                    }
                }
            }
            if compacted > 1 {
                return Err("several versions at or below the compact revision");
            }
            if let Some(live) = history.live_at(key, kv.revision) {
                let attached = live.lease == 0
                    || kv
                        .leases
                        .get(live.lease)
                        .is_some_and(|l| l.keys.contains(key));
                if !attached {
                    return Err("a live key names a lease that does not hold it");
                }
            }
        }
        for (id, lease) in kv.leases.iter() {
            if id <= 0 || lease.ttl < 1 || lease.remaining < 0 || lease.remaining > lease.ttl {
                return Err("lease id or TTL out of bounds");
            }
            for key in &lease.keys {
                let holds = kv
                    .keys
                    .get(key)
                    .and_then(|h| h.live_at(key, kv.revision))
                    .is_some_and(|live| live.lease == id);
                if !holds {
                    return Err("a lease holds a key that does not name it");
                }
            }
        }
        if kv.bytes != kv.accounted_bytes() {
            return Err("accounted bytes differ from the key space");
        }
        self.auth.validate()?;
        let limits = self.sessions.limits();
        if limits.idle_entries_max == 0 || limits.sessions_max == 0 {
            return Err("zero session limits");
        }
        if self.sessions.len() > limits.sessions_max {
            return Err("more sessions than the limit");
        }
        if self
            .sessions
            .iter()
            .any(|(_, s)| s.last_used > self.applied_index)
        {
            return Err("session used after the applied index");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
