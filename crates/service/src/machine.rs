//! The bridge between the node, which routes opaque bytes, and
//! `ferrite-state`: commands in, encoded replies out. A reply is an envelope:
//! tag 0 and an encoded `Reply`, or tag 1 and the text of an `ApplyError`
//! (an undecodable entry, a stale duplicate), so that a reply forwarded from
//! the leader means the same on the follower that asked.
//!
//! Volume bytes live beside the machine in a `BlockStore`: applying an entry
//! replays its volume events there, and a snapshot makes the files durable
//! before the log under it may go. When the files are not valid for the
//! machine's state (a snapshot was installed from the leader, or a copy was
//! interrupted by a crash), they are copied from a peer before anything else
//! is applied or read (see `block_store.rs` for why a copy of changing files
//! is enough).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_node::{state_leases, LeaseChange, MachineError, MachineSnapshot};
use ferrite_raft::Index;
use ferrite_state::{BlockStore, Command, Event, Op, Reply, StateError, StateMachine};

use crate::auth::AuthView;
use crate::copy::PeerCopier;
use crate::events::EventStream;

/// What the volume service on this node needs to know about the machine:
/// where the files are, and whether they may be copied to a peer.
pub struct VolumeFiles {
    pub dir: std::path::PathBuf,
    /// False while the files are not valid for the applied state.
    pub ready: AtomicBool,
    /// The last index applied to the files.
    pub applied: AtomicU64,
}

pub struct Replicated {
    sm: StateMachine,
    events: EventStream,
    /// The applied auth store, for the front ends.
    auth: AuthView,
    /// Lease changes applied since the node last took them (for its lessor).
    lease_changes: Vec<LeaseChange>,
    store: BlockStore,
    files: Arc<VolumeFiles>,
    copier: PeerCopier,
    /// The files must be copied from a peer before the next apply or read.
    stale: bool,
    /// Where point-in-time captures go (`snapshot.rs`).
    captures: Arc<crate::snapshot::Captures>,
    /// The member's db size and quota, and test-only faults.
    maintenance: Arc<crate::maintenance::Maintenance>,
}

impl Replicated {
    pub fn open(
        dir: &Path,
        copier: PeerCopier,
        events: EventStream,
        auth: AuthView,
        maintenance: Arc<crate::maintenance::Maintenance>,
    ) -> Result<Replicated, String> {
        let store = BlockStore::open(dir).map_err(|e| e.to_string())?;
        let files = Arc::new(VolumeFiles {
            dir: dir.to_path_buf(),
            ready: AtomicBool::new(false),
            applied: AtomicU64::new(0),
        });
        let sm = StateMachine::new();
        auth.set(sm.auth().clone());
        Ok(Replicated {
            sm,
            events,
            auth,
            lease_changes: Vec::new(),
            store,
            files,
            copier,
            stale: true,
            captures: Arc::default(),
            maintenance,
        })
    }

    pub fn files(&self) -> Arc<VolumeFiles> {
        self.files.clone()
    }

    /// Where this machine leaves point-in-time captures (for `Context`).
    pub fn captures(&self) -> Arc<crate::snapshot::Captures> {
        self.captures.clone()
    }

    /// Copies the volume files from a peer if they are stale.
    fn ensure_files(&mut self) -> Result<(), String> {
        if !self.stale {
            return Ok(());
        }
        let applied = self.sm.applied_index();
        let volumes = self.sm.volumes().list();
        let members = self.sm.members().list();
        self.copier
            .copy_all(&members, &volumes, applied, &mut self.store)?;
        self.stale = false;
        self.files.applied.store(applied, Ordering::Release);
        self.files.ready.store(true, Ordering::Release);
        Ok(())
    }

    fn restored(&mut self, data: &[u8]) -> Result<(), String> {
        self.sm = StateMachine::restore(data).map_err(|e| e.to_string())?;
        self.auth.set(self.sm.auth().clone());
        self.events
            .publish_restore(self.sm.applied_index(), self.sm.revision());
        self.lease_changes = vec![state_leases::lease_reset(&self.sm)];
        self.files.ready.store(false, Ordering::Release);
        self.maintenance.reset(self.sm.space_in_use());
        Ok(())
    }

    /// Test-only divergence (`/v1/fault/corrupt`): flips a key's newest
    /// value in this member's state, as a damaged disk would.
    fn inject_faults(&mut self) {
        if let Some(key) = self.maintenance.take_corruption() {
            let found = self.sm.corrupt_value(&key);
            tracing::warn!(
                key = %String::from_utf8_lossy(&key),
                found,
                "fault injection: value changed in this member's state only"
            );
        }
    }

    /// Defragmentation: release the spare capacity of the key histories
    /// (the binary's allocator, mimalloc, returns freed pages to the
    /// operating system on its own) and reset the db size to what is in
    /// use.
    fn defragment(&mut self) -> Reply {
        let released = self.sm.defragment();
        let in_use = self.sm.space_in_use();
        self.maintenance.reset(in_use);
        Reply::Defragmented { released, in_use }
    }

    fn read_volume(&mut self, name: &str, offset: u64, len: u64) -> Result<Reply, String> {
        if len > ferrite_state::limits::VOLUME_READ_BYTES_MAX {
            return Ok(Reply::Error(StateError::VolumeRange {
                offset,
                len,
                size: ferrite_state::limits::VOLUME_READ_BYTES_MAX,
            }));
        }
        let id = match self.sm.volumes().range(name, offset, len) {
            Ok(v) => v.id,
            Err(e) => return Ok(Reply::Error(e)),
        };
        let data = self
            .store
            .read(id, offset, len as usize)
            .map_err(|e| e.to_string())?;
        Ok(Reply::Data(data))
    }
}

/// Decodes what `apply` or `query` returned.
pub fn open_envelope(data: &[u8]) -> Result<Reply, String> {
    match data.split_first() {
        Some((0, rest)) => Reply::decode(rest).map_err(|e| format!("undecodable reply: {e}")),
        Some((1, rest)) => Err(String::from_utf8_lossy(rest).into_owned()),
        _ => Err("empty reply".to_string()),
    }
}

fn seal(reply: Result<Reply, String>) -> Bytes {
    let mut b = BytesMut::new();
    match reply {
        Ok(r) => {
            b.put_u8(0);
            b.put_slice(&r.encode());
        }
        Err(e) => {
            b.put_u8(1);
            b.put_slice(e.as_bytes());
        }
    }
    b.freeze()
}

impl ferrite_node::StateMachine for Replicated {
    fn apply(&mut self, index: Index, command: &[u8]) -> Result<Bytes, MachineError> {
        self.ensure_files().map_err(MachineError::Storage)?;
        self.inject_faults();
        let applied = self.sm.apply(index.0, command);
        self.maintenance.observe(self.sm.space_in_use());
        for event in &applied.events {
            match event {
                Event::Volume(v) => self
                    .store
                    .apply(v)
                    .map_err(|e| MachineError::Storage(e.to_string()))?,
                // Before the event is published: a watch stream that sees
                // it finds the view at least as new.
                Event::Auth(store) => self.auth.set(store.clone()),
                _ => {}
            }
        }
        self.files.applied.store(index.0, Ordering::Release);
        self.events
            .publish(index.0, self.sm.revision(), &applied.events);
        self.lease_changes
            .extend(state_leases::lease_changes(&applied.events));
        Ok(seal(applied.reply.map_err(|e| e.to_string())))
    }

    fn apply_empty(&mut self, index: Index) {
        self.sm.apply_noop(index.0);
        if !self.stale {
            self.files.applied.store(index.0, Ordering::Release);
        }
    }

    /// Read-only commands only: a range, a register, the member table, the
    /// volume table, volume bytes, leases, history, auth reads, alarms,
    /// hashes (and the member-local defragmentation); each checked
    /// against its principal's permissions by the state machine.
    fn query(&mut self, query: &[u8]) -> Bytes {
        if let Some(token) = crate::snapshot::parse_query(query) {
            self.captures.put(token, self.sm.clone());
            return seal(Ok(Reply::Done));
        }
        if let Err(e) = self.ensure_files() {
            return seal(Err(format!("volume files unavailable: {e}")));
        }
        self.inject_faults();
        let reply = match Command::decode(query) {
            Ok(cmd) => match &cmd.op {
                Op::VolumeRead { name, offset, len } => {
                    match self.sm.authorize(&cmd.principal, &cmd.op) {
                        Ok(()) => self.read_volume(name, *offset, *len),
                        Err(e) => Ok(Reply::Error(e)),
                    }
                }
                Op::Range(_)
                | Op::RegisterGet { .. }
                | Op::RegisterList { .. }
                | Op::MemberList
                | Op::VolumeList
                | Op::LeaseGet { .. }
                | Op::LeaseList
                | Op::Changes(_) => Ok(self.sm.query(&cmd)),
                Op::Auth(req) if req.is_read() => Ok(self.sm.query(&cmd)),
                Op::Alarm(req) if req.action == ferrite_state::AlarmAction::Get => {
                    Ok(self.sm.query(&cmd))
                }
                Op::Hash | Op::HashKv { .. } => Ok(self.sm.query(&cmd)),
                Op::Defragment => match self.sm.authorize(&cmd.principal, &cmd.op) {
                    Ok(()) => Ok(self.defragment()),
                    Err(e) => Ok(Reply::Error(e)),
                },
                _ => Err("not a read-only request".to_string()),
            },
            Err(e) => Err(format!("undecodable query: {e}")),
        };
        seal(reply)
    }

    fn applied(&self) -> Index {
        Index(self.sm.applied_index())
    }

    fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    /// Captures the state (a clone: keys and values are shared, not copied)
    /// and leaves the encoding and the sync of the volume files to the
    /// snapshot thread: with a large state or many writes since the last
    /// snapshot either takes long, and applying goes on meanwhile.
    fn snapshot(&mut self) -> Result<MachineSnapshot, MachineError> {
        self.ensure_files().map_err(MachineError::Storage)?;
        let sync = self.store.sync_later(self.sm.applied_index());
        let sm = self.sm.clone();
        Ok(MachineSnapshot {
            finish: Box::new(move || {
                let data = sm.snapshot();
                sync().map_err(|e| MachineError::Storage(e.to_string()))?;
                Ok(data)
            }),
        })
    }

    /// The files are valid for the snapshot if they were synced at or after
    /// its index; if not (a copy from a peer was interrupted, or the node
    /// never synced them and replays its whole log), they are replaced on
    /// first use.
    fn recover(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.restored(data).map_err(MachineError::Restore)?;
        let index = self.sm.applied_index();
        self.stale = self.store.valid_from().is_none_or(|v| v < index);
        if !self.stale {
            self.files.applied.store(index, Ordering::Release);
            self.files.ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn install(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.restored(data).map_err(MachineError::Restore)?;
        self.stale = true;
        self.ensure_files().map_err(MachineError::Storage)
    }
}
