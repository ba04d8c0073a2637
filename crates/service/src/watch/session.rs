//! The task behind one client watch stream: it owns a `WatchStream`, a
//! reader of the event stream, at most one history read in flight, and a
//! progress timer, and moves what they produce to the client.
//!
//! Backpressure: replies go out through a bounded channel. When the client
//! does not read, sending waits, nothing else is taken in, and the event
//! stream's reader falls behind until it lags; the watches then catch up
//! from history once the client reads again. So a slow client costs the
//! bounded channel and nothing more.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ferrite_state::{ChangesRequest, ChangesResponse, Op, Principal, Reply};
use tokio::sync::{broadcast, mpsc};

use crate::context::Context;
use ferrite_state::watch::{WatchCommand, WatchReply, WatchStream};

#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// etcd's progress report interval (10 minutes by default).
    pub progress_interval: Duration,
}

impl Default for WatchLimits {
    fn default() -> WatchLimits {
        WatchLimits {
            progress_interval: Duration::from_secs(600),
        }
    }
}

/// Live entries taken from the event stream per turn, at most.
const ENTRIES_PER_TURN_MAX: usize = 256;
/// Events merged into one reply, at most.
const EVENTS_PER_REPLY_MAX: usize = 1000;

/// Merges each watch's consecutive event replies into one (events of
/// several revisions in revision order, each revision whole, as etcd's
/// catch-up replies carry them); leaves created, canceled, progress and
/// fragmented replies as they are.
pub fn coalesce(replies: Vec<WatchReply>) -> Vec<WatchReply> {
    let mut c = Coalescer::default();
    for r in replies {
        c.push(r);
    }
    c.out
}

/// `coalesce`, a reply at a time, reusing its memory from turn to turn.
#[derive(Default)]
struct Coalescer {
    out: Vec<WatchReply>,
    /// Per watch, the index in `out` of its last reply, if it can grow.
    open: std::collections::HashMap<i64, usize>,
}

impl Coalescer {
    fn push(&mut self, r: WatchReply) {
        let plain =
            !r.created && !r.canceled && !r.fragment && !r.events.is_empty() && r.watch_id >= 0;
        if plain {
            if let Some(&i) = self.open.get(&r.watch_id) {
                let last = &mut self.out[i];
                if last.events.len() + r.events.len() <= EVENTS_PER_REPLY_MAX {
                    last.revision = last.revision.max(r.revision);
                    last.events.append(r.events);
                    return;
                }
            }
            self.open.insert(r.watch_id, self.out.len());
        } else {
            self.open.remove(&r.watch_id);
        }
        self.out.push(r);
    }

    /// The merged replies, in order; empties the coalescer.
    fn drain(&mut self) -> std::vec::Drain<'_, WatchReply> {
        self.open.clear();
        self.out.drain(..)
    }
}

type Read = Pin<Box<dyn Future<Output = (i64, Result<ChangesResponse, String>)> + Send>>;

/// Serves one watch stream for `who` until the client closes it,
/// `replies` is dropped, or `stop` fires.
pub async fn run(
    ctx: Context,
    limits: WatchLimits,
    who: Principal,
    mut commands: mpsc::Receiver<WatchCommand>,
    replies: mpsc::Sender<WatchReply>,
    stop: impl Future<Output = ()>,
) {
    let mut live = ctx.events.subscribe();
    let mut stream = WatchStream::with_auth(ctx.events.revision(), who, ctx.auth.current());
    let mut reading: Option<Read> = None;
    let mut progress = tokio::time::interval(limits.progress_interval);
    progress.reset();
    let metrics = &ctx.watch_metrics;
    metrics
        .streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Reused from turn to turn: one live entry's replies, and the turn's.
    let mut entry_out: Vec<WatchReply> = Vec::new();
    let mut out = Coalescer::default();
    tokio::pin!(stop);
    loop {
        if reading.is_none() {
            if let Some((id, req)) = stream.next_read() {
                let reader = stream.read_principal();
                reading = Some(Box::pin(read_changes(ctx.clone(), reader, id, req)));
            }
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    let before = stream.len();
                    for r in stream.command(cmd, ctx.events.revision()) {
                        out.push(r);
                    }
                    metrics.adjust_watchers(before, stream.len());
                }
                None => break,
            },
            (id, result) = async { reading.as_mut().expect("guarded").await }, if reading.is_some() => {
                reading = None;
                let before = stream.len();
                for r in stream.on_read(id, result) {
                    out.push(r);
                }
                if stream.needs_auth() {
                    // The store's auth moved past what the stream has seen.
                    for r in stream.on_auth(ctx.auth.current()) {
                        out.push(r);
                    }
                }
                metrics.adjust_watchers(before, stream.len());
            }
            entry = live.recv() => match entry {
                Ok(p) => {
                    // Take what else is queued too, and send each watch one
                    // reply for all of it: under load, fewer and larger
                    // messages.
                    let before = stream.len();
                    live_entry(&mut stream, &ctx, &p, &mut entry_out);
                    for r in entry_out.drain(..) {
                        out.push(r);
                    }
                    for _ in 1..ENTRIES_PER_TURN_MAX {
                        match live.try_recv() {
                            Ok(p) => {
                                live_entry(&mut stream, &ctx, &p, &mut entry_out);
                                for r in entry_out.drain(..) {
                                    out.push(r);
                                }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                stream.on_lagged();
                                // Auth changes may be among what was missed.
                                for r in stream.on_auth(ctx.auth.current()) {
                                    out.push(r);
                                }
                                metrics.lagged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    metrics.adjust_watchers(before, stream.len());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    stream.on_lagged();
                    metrics.lagged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Auth changes may be among what was missed.
                    let before = stream.len();
                    for r in stream.on_auth(ctx.auth.current()) {
                        out.push(r);
                    }
                    metrics.adjust_watchers(before, stream.len());
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = progress.tick() => {
                for r in stream.on_progress_tick() {
                    out.push(r);
                }
            }
        }
        let events: u64 = out.out.iter().map(|r| r.events.len() as u64).sum();
        metrics
            .events_sent
            .fetch_add(events, std::sync::atomic::Ordering::Relaxed);
        for reply in out.drain() {
            if replies.send(reply).await.is_err() {
                metrics.adjust_watchers(stream.len(), 0);
                metrics
                    .streams
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }
    metrics.adjust_watchers(stream.len(), 0);
    metrics
        .streams
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// One entry of the event stream; after a snapshot replaced the state,
/// the auth store may have changed too.
fn live_entry(
    stream: &mut WatchStream,
    ctx: &Context,
    p: &ferrite_state::Published,
    out: &mut Vec<WatchReply>,
) {
    stream.on_live_into(p, out);
    if p.restored {
        out.extend(stream.on_auth(ctx.auth.current()));
    }
}

/// A history read on this member (serializable: this member's applied
/// state, like the live stream it continues).
async fn read_changes(
    ctx: Context,
    who: Principal,
    id: i64,
    req: ChangesRequest,
) -> (i64, Result<ChangesResponse, String>) {
    let result = match ctx.read(Op::Changes(req), &who, true).await {
        Ok(Reply::Changes(c)) => Ok(c),
        Ok(Reply::Error(e)) => Err(e.to_string()),
        Ok(other) => Err(format!("unexpected reply to a history read: {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    (id, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_state::KvEvent;

    fn events(id: i64, revs: &[i64]) -> WatchReply {
        WatchReply {
            watch_id: id,
            revision: *revs.last().unwrap_or(&0),
            events: revs
                .iter()
                .map(|r| KvEvent {
                    revision: *r,
                    key: bytes::Bytes::from_static(b"k"),
                    prev: None,
                    kv: None,
                })
                .collect(),
            ..WatchReply::default()
        }
    }

    #[test]
    fn each_watch_gets_one_reply_in_order_and_markers_stay_apart() {
        let cancel = WatchReply {
            watch_id: 1,
            canceled: true,
            ..WatchReply::default()
        };
        let out = coalesce(vec![
            events(0, &[5]),
            events(1, &[5]),
            events(0, &[6, 6]),
            cancel.clone(),
            events(0, &[7]),
        ]);
        let revs = |r: &WatchReply| r.events.iter().map(|e| e.revision).collect::<Vec<_>>();
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].watch_id, revs(&out[0])), (0, vec![5, 6, 6, 7]));
        assert_eq!(out[0].revision, 7);
        assert_eq!((out[1].watch_id, revs(&out[1])), (1, vec![5]));
        assert_eq!(out[2], cancel);
    }
}
