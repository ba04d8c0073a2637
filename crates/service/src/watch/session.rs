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

use ferrite_state::{ChangesRequest, ChangesResponse, Op, Reply};
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

type Read = Pin<Box<dyn Future<Output = (i64, Result<ChangesResponse, String>)> + Send>>;

/// Serves one watch stream until the client closes it, `replies` is
/// dropped, or `stop` fires.
pub async fn run(
    ctx: Context,
    limits: WatchLimits,
    mut commands: mpsc::Receiver<WatchCommand>,
    replies: mpsc::Sender<WatchReply>,
    stop: impl Future<Output = ()>,
) {
    let mut live = ctx.events.subscribe();
    let mut stream = WatchStream::new(ctx.events.revision());
    let mut reading: Option<Read> = None;
    let mut progress = tokio::time::interval(limits.progress_interval);
    progress.reset();
    let metrics = &ctx.watch_metrics;
    metrics
        .streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::pin!(stop);
    loop {
        if reading.is_none() {
            if let Some((id, req)) = stream.next_read() {
                reading = Some(Box::pin(read_changes(ctx.clone(), id, req)));
            }
        }
        let out = tokio::select! {
            biased;
            () = &mut stop => break,
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    let before = stream.len();
                    let out = stream.command(cmd, ctx.events.revision());
                    metrics.adjust_watchers(before, stream.len());
                    out
                }
                None => break,
            },
            (id, result) = async { reading.as_mut().expect("guarded").await }, if reading.is_some() => {
                reading = None;
                let before = stream.len();
                let out = stream.on_read(id, result);
                metrics.adjust_watchers(before, stream.len());
                out
            }
            entry = live.recv() => match entry {
                Ok(p) => stream.on_live(&p),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    stream.on_lagged();
                    metrics.lagged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Vec::new()
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = progress.tick() => stream.on_progress_tick(),
        };
        let events: u64 = out.iter().map(|r| r.events.len() as u64).sum();
        metrics
            .events_sent
            .fetch_add(events, std::sync::atomic::Ordering::Relaxed);
        for reply in out {
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

/// A history read on this member (serializable: this member's applied
/// state, like the live stream it continues).
async fn read_changes(
    ctx: Context,
    id: i64,
    req: ChangesRequest,
) -> (i64, Result<ChangesResponse, String>) {
    let result = match ctx.read(Op::Changes(req), true).await {
        Ok(Reply::Changes(c)) => Ok(c),
        Ok(Reply::Error(e)) => Err(e.to_string()),
        Ok(other) => Err(format!("unexpected reply to a history read: {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    (id, result)
}
