//! A batch of changes that share one revision: a single put or delete, or
//! every write of a transaction. etcd's rules live here: the batch takes
//! revision `current + 1` for all its changes, bumps the store's revision
//! only if it changed something, and reads inside it see its own changes.

use bytes::Bytes;

use crate::event::{Event, KvEvent};
use crate::kv::key_range::KeySpan;
use crate::kv::{KeyValue, KvStore, Stored, Version};

/// Open changes to a store. Dropping it closes it as `finish` does, so no
/// path can leave versions above the store's revision.
pub(crate) struct Write<'s> {
    store: &'s mut KvStore,
    events: &'s mut Vec<Event>,
    wrote: bool,
    /// The next change's sub-revision.
    sub: u32,
}

impl<'s> Write<'s> {
    pub(crate) fn new(store: &'s mut KvStore, events: &'s mut Vec<Event>) -> Write<'s> {
        Write {
            store,
            events,
            wrote: false,
            sub: 0,
        }
    }

    /// The revision every change of this batch carries.
    pub(crate) fn revision(&self) -> i64 {
        self.store.revision.saturating_add(1)
    }

    /// The revision reads inside the batch see: the batch's own once it has
    /// changed something, as etcd's write transactions do.
    pub(crate) fn view_revision(&self) -> i64 {
        if self.wrote {
            self.revision()
        } else {
            self.store.revision
        }
    }

    pub(crate) fn store(&self) -> &KvStore {
        self.store
    }

    fn next_sub(&mut self) -> u32 {
        let sub = self.sub;
        self.sub = self.sub.saturating_add(1);
        sub
    }

    /// Puts `value` at `key`, attached to `lease` (0: none; the caller has
    /// checked that it exists); returns the previous value, if the key
    /// existed.
    pub(crate) fn put(&mut self, key: &Bytes, value: Bytes, lease: i64) -> Option<KeyValue> {
        let revision = self.revision();
        let prev = self.store.live_one(key, revision);
        let stored = Stored {
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version.saturating_add(1)),
            value,
            lease,
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision: stored.create_revision,
            mod_revision: revision,
            version: stored.version,
            value: stored.value.clone(),
            lease,
        };
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        self.store.leases.move_key(key, old_lease, lease);
        let sub = self.next_sub();
        self.store.bytes = self
            .store
            .bytes
            .saturating_add(crate::space::version_bytes(key.len(), stored.value.len()));
        self.store.history_mut(key).push(Version {
            mod_revision: revision,
            sub,
            put: Some(stored),
        });
        self.wrote = true;
        self.events.push(Event::Kv(KvEvent {
            revision,
            key: key.clone(),
            prev: prev.clone(),
            kv: Some(kv),
        }));
        prev
    }

    /// Deletes every existing key of `span`; returns what was deleted.
    pub(crate) fn delete(&mut self, span: KeySpan<'_>) -> Vec<KeyValue> {
        let revision = self.revision();
        let doomed: Vec<KeyValue> = self.store.live(span, revision).collect();
        for kv in &doomed {
            self.store.leases.move_key(&kv.key, kv.lease, 0);
            let sub = self.next_sub();
            self.store.bytes = self
                .store
                .bytes
                .saturating_add(crate::space::version_bytes(kv.key.len(), 0));
            self.store.history_mut(&kv.key).push(Version {
                mod_revision: revision,
                sub,
                put: None,
            });
            self.events.push(Event::Kv(KvEvent {
                revision,
                key: kv.key.clone(),
                prev: Some(kv.clone()),
                kv: None,
            }));
        }
        self.wrote |= !doomed.is_empty();
        doomed
    }

    /// Closes the batch; returns the store's revision after it.
    pub(crate) fn finish(mut self) -> i64 {
        self.close();
        self.store.revision
    }

    fn close(&mut self) {
        if self.wrote {
            self.store.revision = self.revision();
            self.wrote = false;
        }
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        self.close();
    }
}
