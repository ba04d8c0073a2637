//! etcd's locks and elections (`v3lock`, `v3election`), built exactly as
//! etcd builds them from its client-side `concurrency` recipes: on leases,
//! transactions and watches, so that a client using either the services or
//! its own recipes against the same names sees the same keys.
//!
//! A contender writes `NAME/LEASE_HEX` (bound to its lease) if it is not
//! there yet; its key's create revision is its place in line. It holds the
//! lock, or leads, once every key under `NAME/` created before its own is
//! gone: it waits for the deletion of the newest older one, then looks
//! again (etcd's `waitDeletes`). A contender whose lease expires loses its
//! key, and so its place, through the lease.
//!
//! Fencing: the lock key's create revision (`LockResponse`'s header
//! revision when it was acquired, and `LeaderKey::rev`) only grows from
//! holder to holder. Pass it to whatever the lock protects and have that
//! refuse requests carrying a smaller one (or compare it in a transaction,
//! `create_revision(key) == rev`, as `Proclaim` and `Resign` do): a holder
//! that was paused past its lease's expiry is then refused instead of
//! acting on a lock it no longer holds.
//!
//! Every call is made as the caller's principal: each transaction, range
//! and watch underneath is checked against its permissions on the keys
//! under `NAME/`, as etcd's would be.

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_state::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, Op, Principal, PutRequest,
    RangeRequest, Reply, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
use tokio::sync::mpsc;

use crate::context::Context;
use crate::error::ServiceError;
use crate::watch::{self, WatchCommand, WatchCreate, WatchLimits, WatchReply};

/// What went wrong, as etcd's concurrency package says it.
#[derive(Debug, thiserror::Error)]
pub enum ConcurrencyError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("etcdserver: {0}")]
    State(#[from] ferrite_state::StateError),
    #[error("election: not leader")]
    NotLeader,
    #[error("election: no leader")]
    NoLeader,
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// A held lock or leadership: the key, its create revision (the fencing
/// token) and the lease that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub name: Bytes,
    pub key: Bytes,
    pub revision: i64,
    pub lease: i64,
    /// The store's revision when it was acquired.
    pub header_revision: i64,
}

fn prefix(name: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(name.len() + 1);
    b.put_slice(name);
    b.put_u8(b'/');
    b.freeze()
}

/// `NAME/` followed by the lease id in lower-case hex, as etcd's sessions
/// name their keys.
pub fn contender_key(name: &[u8], lease: i64) -> Bytes {
    let mut b = BytesMut::from(&prefix(name)[..]);
    b.put_slice(format!("{lease:x}").as_bytes());
    b.freeze()
}

/// The end of the range of every key starting with `p` (etcd's
/// `GetPrefixRangeEnd`).
pub fn prefix_end(p: &[u8]) -> Bytes {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

fn create_revision_is(key: &Bytes, revision: i64) -> Compare {
    Compare {
        key: key.clone(),
        range_end: Bytes::new(),
        result: CompareResult::Equal,
        target: CompareTarget::Create(revision),
    }
}

fn get(key: &Bytes) -> RangeRequest {
    RangeRequest {
        key: key.clone(),
        ..RangeRequest::default()
    }
}

/// The first-created key under `NAME/` (etcd's `WithFirstCreate`).
fn first_created(name: &[u8]) -> RangeRequest {
    let p = prefix(name);
    RangeRequest {
        range_end: prefix_end(&p),
        key: p,
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::default()
    }
}

async fn txn(
    ctx: &Context,
    who: &Principal,
    t: TxnRequest,
) -> Result<TxnResponse, ConcurrencyError> {
    match ctx.write(Op::Txn(t), None, who).await? {
        Reply::Txn(r) => Ok(r),
        Reply::Error(e) => Err(e.into()),
        other => Err(ConcurrencyError::Unexpected(format!("{other:?}"))),
    }
}

async fn range(
    ctx: &Context,
    who: &Principal,
    r: RangeRequest,
) -> Result<(Vec<KeyValue>, i64), ConcurrencyError> {
    match ctx.read(Op::Range(r), who, false).await? {
        Reply::Range(r) => Ok((r.kvs, r.revision)),
        Reply::Error(e) => Err(e.into()),
        other => Err(ConcurrencyError::Unexpected(format!("{other:?}"))),
    }
}

fn range_kvs(r: Option<&ResponseOp>) -> Vec<KeyValue> {
    match r {
        Some(ResponseOp::Range(r)) => r.kvs.clone(),
        _ => Vec::new(),
    }
}

/// Writes this contender's key (with `value`) unless it is there; returns
/// its create revision, the store's revision, and whether the key was
/// already there with another value.
async fn enter(
    ctx: &Context,
    who: &Principal,
    key: &Bytes,
    lease: i64,
    value: Bytes,
) -> Result<(i64, i64, Option<Bytes>), ConcurrencyError> {
    let put = PutRequest {
        key: key.clone(),
        value,
        lease,
        ..PutRequest::default()
    };
    let t = TxnRequest {
        compare: vec![create_revision_is(key, 0)],
        success: vec![RequestOp::Put(put)],
        failure: vec![RequestOp::Range(get(key))],
    };
    let resp = txn(ctx, who, t).await?;
    if resp.succeeded {
        return Ok((resp.revision, resp.revision, None));
    }
    let mine = range_kvs(resp.responses.first());
    let kv = mine
        .first()
        .ok_or_else(|| ConcurrencyError::Unexpected("contender key vanished".into()))?;
    Ok((kv.create_revision, resp.revision, Some(kv.value.clone())))
}

/// Waits until no key under `NAME/` created at or before `max_create` is
/// left (etcd's `waitDeletes`); returns the store's revision then.
async fn wait_deletes(
    ctx: &Context,
    who: &Principal,
    name: &[u8],
    max_create: i64,
) -> Result<i64, ConcurrencyError> {
    let p = prefix(name);
    loop {
        let older = RangeRequest {
            range_end: prefix_end(&p),
            key: p.clone(),
            limit: 1,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Create,
            max_create_revision: max_create,
            ..RangeRequest::default()
        };
        let (kvs, revision) = range(ctx, who, older).await?;
        let Some(kv) = kvs.into_iter().next() else {
            return Ok(revision);
        };
        wait_delete(ctx, who, &kv.key, revision + 1).await?;
    }
}

/// A watch session with the one watch `create`, run by the caller: the
/// session future and its replies.
fn one_watch(
    ctx: &Context,
    who: &Principal,
    create: WatchCreate,
) -> (
    impl std::future::Future<Output = ()> + use<>,
    mpsc::Receiver<WatchReply>,
) {
    let (cmd_tx, cmd_rx) = mpsc::channel(1);
    let (reply_tx, reply_rx) = mpsc::channel(16);
    // Room for one: this send cannot fail or wait.
    let _ = cmd_tx.try_send(WatchCommand::Create(create));
    let session = watch::run(
        ctx.clone(),
        WatchLimits::default(),
        who.clone(),
        cmd_rx,
        reply_tx,
        std::future::pending(),
    );
    // The session ends when its command channel closes: keep it open.
    let session = async move {
        let _keep = cmd_tx;
        session.await
    };
    (session, reply_rx)
}

/// Watches `key` from `from` until it is deleted.
async fn wait_delete(
    ctx: &Context,
    who: &Principal,
    key: &Bytes,
    from: i64,
) -> Result<(), ConcurrencyError> {
    let create = WatchCreate {
        key: key.clone(),
        start_revision: from,
        no_put: true,
        ..WatchCreate::default()
    };
    let (session, mut reply_rx) = one_watch(ctx, who, create);
    tokio::pin!(session);
    loop {
        tokio::select! {
            () = &mut session => {
                return Err(ConcurrencyError::Unexpected("watch ended".into()));
            }
            reply = reply_rx.recv() => {
                let Some(reply) = reply else {
                    return Err(ConcurrencyError::Unexpected("watch ended".into()));
                };
                if reply.canceled {
                    // Compacted past `from`: look again from now.
                    return Ok(());
                }
                if reply.events.iter().any(|e| e.kv.is_none()) {
                    return Ok(());
                }
            }
        }
    }
}

/// Deletes the contender key if it was left behind by a canceled wait.
struct Abandon {
    ctx: Option<Context>,
    who: Principal,
    key: Bytes,
}

impl Abandon {
    fn disarm(mut self) {
        self.ctx = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            let key = self.key.clone();
            let who = self.who.clone();
            tokio::spawn(async move {
                let _ = delete(&ctx, &who, &key).await;
            });
        }
    }
}

async fn delete(ctx: &Context, who: &Principal, key: &Bytes) -> Result<i64, ConcurrencyError> {
    let op = Op::DeleteRange(DeleteRangeRequest {
        key: key.clone(),
        ..DeleteRangeRequest::default()
    });
    match ctx.write(op, None, who).await? {
        Reply::DeleteRange(r) => Ok(r.revision),
        Reply::Error(e) => Err(e.into()),
        other => Err(ConcurrencyError::Unexpected(format!("{other:?}"))),
    }
}

/// etcd's `Lock`: blocks until `name` is held with `lease`. If the caller
/// goes away while waiting, its key is deleted, as etcd's mutex does.
pub async fn lock(
    ctx: &Context,
    who: &Principal,
    name: &[u8],
    lease: i64,
) -> Result<Held, ConcurrencyError> {
    acquire(ctx, who, name, lease, Bytes::new()).await
}

async fn acquire(
    ctx: &Context,
    who: &Principal,
    name: &[u8],
    lease: i64,
    value: Bytes,
) -> Result<Held, ConcurrencyError> {
    let key = contender_key(name, lease);
    let (revision, _, _) = enter(ctx, who, &key, lease, value).await?;
    let guard = Abandon {
        ctx: Some(ctx.clone()),
        who: who.clone(),
        key: key.clone(),
    };
    let header_revision = wait_deletes(ctx, who, name, revision - 1).await?;
    guard.disarm();
    Ok(Held {
        name: Bytes::copy_from_slice(name),
        key,
        revision,
        lease,
        header_revision,
    })
}

/// etcd's `Unlock`: deletes the key a `Lock` returned.
pub async fn unlock(ctx: &Context, who: &Principal, key: &Bytes) -> Result<i64, ConcurrencyError> {
    delete(ctx, who, key).await
}

/// etcd's `Campaign`: waits to lead election `name` with `value`.
pub async fn campaign(
    ctx: &Context,
    who: &Principal,
    name: &[u8],
    lease: i64,
    value: Bytes,
) -> Result<Held, ConcurrencyError> {
    let key = contender_key(name, lease);
    let (_, _, existing) = enter(ctx, who, &key, lease, value.clone()).await?;
    if existing.is_some_and(|v| v != value) {
        // Already campaigning with this lease: proclaim the new value.
        let put = PutRequest {
            key: key.clone(),
            value: value.clone(),
            lease,
            ..PutRequest::default()
        };
        match ctx.write(Op::Put(put), None, who).await? {
            Reply::Put(_) => {}
            Reply::Error(e) => return Err(e.into()),
            other => return Err(ConcurrencyError::Unexpected(format!("{other:?}"))),
        }
    }
    acquire(ctx, who, name, lease, value).await
}

/// etcd's `Proclaim`: a new value, only while `leader` still leads.
pub async fn proclaim(
    ctx: &Context,
    who: &Principal,
    leader: &Held,
    value: Bytes,
) -> Result<i64, ConcurrencyError> {
    let put = PutRequest {
        key: leader.key.clone(),
        value,
        lease: leader.lease,
        ..PutRequest::default()
    };
    let t = TxnRequest {
        compare: vec![create_revision_is(&leader.key, leader.revision)],
        success: vec![RequestOp::Put(put)],
        failure: vec![],
    };
    let resp = txn(ctx, who, t).await?;
    if !resp.succeeded {
        return Err(ConcurrencyError::NotLeader);
    }
    Ok(resp.revision)
}

/// etcd's `Resign`: gives leadership up if `leader` still has it.
pub async fn resign(
    ctx: &Context,
    who: &Principal,
    leader: &Held,
) -> Result<i64, ConcurrencyError> {
    let t = TxnRequest {
        compare: vec![create_revision_is(&leader.key, leader.revision)],
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: leader.key.clone(),
            ..DeleteRangeRequest::default()
        })],
        failure: vec![],
    };
    Ok(txn(ctx, who, t).await?.revision)
}

/// etcd's `Leader`: the current leader's key and value.
pub async fn leader(
    ctx: &Context,
    who: &Principal,
    name: &[u8],
) -> Result<(KeyValue, i64), ConcurrencyError> {
    let (kvs, revision) = range(ctx, who, first_created(name)).await?;
    kvs.into_iter()
        .next()
        .map(|kv| (kv, revision))
        .ok_or(ConcurrencyError::NoLeader)
}

/// etcd's `Observe`: sends the leader (key and value) every time it or
/// its value changes, until `out` is closed.
pub async fn observe(
    ctx: &Context,
    who: &Principal,
    name: &[u8],
    out: mpsc::Sender<(KeyValue, i64)>,
) -> Result<(), ConcurrencyError> {
    let p = prefix(name);
    let create = WatchCreate {
        range_end: prefix_end(&p),
        key: p,
        ..WatchCreate::default()
    };
    let (session, mut reply_rx) = one_watch(ctx, who, create);
    tokio::pin!(session);
    let mut last: Option<KeyValue> = None;
    loop {
        // After every change under the prefix, look at who leads now.
        if let Ok((kv, revision)) = leader(ctx, who, name).await {
            let changed = last
                .as_ref()
                .is_none_or(|l| l.key != kv.key || l.mod_revision != kv.mod_revision);
            if changed {
                last = Some(kv.clone());
                if out.send((kv, revision)).await.is_err() {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            () = &mut session => return Ok(()),
            () = out.closed() => return Ok(()),
            reply = reply_rx.recv() => {
                if reply.is_none() {
                    return Ok(());
                }
            }
        }
    }
}
