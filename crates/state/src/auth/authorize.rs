//! Which permission each request needs (etcd's `authApplierV3` and the
//! checks of its API layer), checked against the store as it is when the
//! request applies or is answered.

use crate::auth::{register_key, volume_key, Access, AuthRequest, AuthStore, Principal};
use crate::command::Op;
use crate::error::StateError;
use crate::kv::{KvStore, RequestOp, TxnRequest};

impl AuthStore {
    /// Whether `who` may run `op` now. Lists are not refused for a limited
    /// user but filtered (see `StateMachine`); they need a known user.
    pub fn authorize(&self, who: &Principal, op: &Op, kv: &KvStore) -> Result<(), StateError> {
        if matches!(who, Principal::System) || !self.enabled {
            return Ok(());
        }
        match op {
            Op::Put(p) => {
                self.check(who, Access::Write, &p.key, &[])?;
                // A user may not attach keys to a lease it could not revoke.
                self.check_lease_keys(who, p.lease, kv)?;
                if p.prev_kv {
                    self.check(who, Access::Read, &p.key, &[])?;
                }
                Ok(())
            }
            Op::DeleteRange(d) => {
                self.check(who, Access::Write, &d.key, &d.range_end)?;
                if d.prev_kv {
                    self.check(who, Access::Read, &d.key, &d.range_end)?;
                }
                Ok(())
            }
            Op::Txn(t) => self.check_txn(who, t),
            Op::Range(r) => self.check(who, Access::Read, &r.key, &r.range_end),
            Op::Changes(c) => self.check(who, Access::Read, &c.key, &c.range_end),
            Op::Compact(_) | Op::LeaseCheckpoint { .. } => self.check_admin(who),
            Op::MemberPublish(_) | Op::MemberForget { .. } => self.check_admin(who),
            Op::MemberList => Ok(()),
            Op::RegisterGet { name } => self.check(who, Access::Read, &register_key(name), &[]),
            Op::RegisterSet { name, .. }
            | Op::RegisterAdd { name, .. }
            | Op::RegisterCas { name, .. } => {
                self.check(who, Access::Write, &register_key(name), &[])
            }
            Op::VolumeRead { name, .. } => self.check(who, Access::Read, &volume_key(name), &[]),
            Op::VolumeCreate { name, .. }
            | Op::VolumeResize { name, .. }
            | Op::VolumeDelete { name }
            | Op::VolumeWrite { name, .. }
            | Op::VolumeZero { name, .. } => self.check(who, Access::Write, &volume_key(name), &[]),
            Op::RegisterList { .. } | Op::VolumeList | Op::LeaseGrant { .. } | Op::LeaseList => {
                self.check_user(who)
            }
            Op::LeaseRevoke { id } => {
                self.check_user(who)?;
                self.check_lease_keys(who, *id, kv)
            }
            // etcd 3.4/3.5: the keys of a lease are shown only to a user
            // who may read every one of them.
            Op::LeaseGet { id, keys } => {
                self.check_user(who)?;
                if *keys {
                    if let Some(lease) = kv.leases().get(*id) {
                        for key in &lease.keys {
                            self.check(who, Access::Read, key, &[])?;
                        }
                    }
                }
                Ok(())
            }
            Op::Auth(req) => self.check_auth_request(who, req),
            // etcd's maintenance requests are for admins.
            Op::Alarm(_) | Op::Hash | Op::HashKv { .. } | Op::Defragment => self.check_admin(who),
        }
    }

    /// etcd's `checkLeasePuts`: write on every key attached to the lease.
    fn check_lease_keys(
        &self,
        who: &Principal,
        lease: i64,
        kv: &KvStore,
    ) -> Result<(), StateError> {
        if lease == 0 || self.check_admin(who).is_ok() {
            return Ok(());
        }
        if let Some(lease) = kv.leases().get(lease) {
            for key in &lease.keys {
                self.check(who, Access::Write, key, &[])?;
            }
        }
        Ok(())
    }

    /// etcd's `checkTxnAuth`: read on every compared key, and what each op
    /// of both branches needs, nested transactions included.
    fn check_txn(&self, who: &Principal, t: &TxnRequest) -> Result<(), StateError> {
        for c in &t.compare {
            self.check(who, Access::Read, &c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => self.check(who, Access::Read, &r.key, &r.range_end)?,
                RequestOp::Put(p) => {
                    self.check(who, Access::Write, &p.key, &[])?;
                    if p.prev_kv {
                        self.check(who, Access::Read, &p.key, &[])?;
                    }
                }
                RequestOp::DeleteRange(d) => {
                    if d.prev_kv {
                        self.check(who, Access::Read, &d.key, &d.range_end)?;
                    }
                    self.check(who, Access::Write, &d.key, &d.range_end)?;
                }
                RequestOp::Txn(inner) => self.check_txn(who, inner)?,
            }
        }
        Ok(())
    }

    /// Auth management is for admins; a user may read its own record and
    /// the roles it holds (etcd's `UserGet` and `RoleGet`); anyone may ask
    /// whether auth is enabled.
    fn check_auth_request(&self, who: &Principal, req: &AuthRequest) -> Result<(), StateError> {
        match req {
            AuthRequest::Status => Ok(()),
            AuthRequest::UserGet { name } => match self.check_admin(who) {
                Err(_) if who.name() == Some(name.as_str()) => Ok(()),
                other => other,
            },
            AuthRequest::RoleGet { name } => match self.check_admin(who) {
                Err(_) if who.name().is_some_and(|u| self.has_role(u, name)) => Ok(()),
                other => other,
            },
            _ => self.check_admin(who),
        }
    }

    /// Whether `who` may read register or volume `name` (what lists show).
    pub fn may_read_register(&self, who: &Principal, name: &str) -> bool {
        self.check(who, Access::Read, &register_key(name), &[])
            .is_ok()
    }

    pub fn may_read_volume(&self, who: &Principal, name: &str) -> bool {
        self.check(who, Access::Read, &volume_key(name), &[])
            .is_ok()
    }
}
