//! The apply thread: runs the `Applier` (the apply side of the replica) on
//! the tasks the driver hands it, answers clients straight from here (local
//! ones through their channels, followers' through the transport), finishes
//! snapshots on a thread of their own, and acknowledges every message to the
//! driver, which counts what is outstanding.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferrite_raft::Index;
use tokio::sync::{mpsc, oneshot};

use crate::applier::{Applied, Applier};
use crate::codec::Frame;
use crate::driver::Ack;
use crate::error::NodeError;
use crate::machine::{MachineSnapshot, StateMachine};
use crate::replica::{refusal, ApplyTask, RequestId, Requester};
use crate::transport::Transport;

pub type Reply = oneshot::Sender<Result<Bytes, NodeError>>;

/// One hand-off from the driver: tasks in order, and the channels of the
/// local clients they answer.
pub struct ApplyMsg {
    pub tasks: Vec<ApplyTask>,
    pub replies: Vec<(RequestId, Reply)>,
}

pub fn run<M: StateMachine>(
    mut applier: Applier<M>,
    mut rx: mpsc::Receiver<ApplyMsg>,
    acks: mpsc::Sender<Ack>,
    transport: Transport,
) {
    let mut replies: BTreeMap<RequestId, Reply> = BTreeMap::new();
    // The snapshot thread, joined before the next starts and at exit.
    let mut finishing: Option<std::thread::JoinHandle<()>> = None;
    while let Some(msg) = rx.blocking_recv() {
        replies.extend(msg.replies);
        let mut upto: Option<Index> = None;
        let mut leases = Vec::new();
        for task in msg.tasks {
            let mut out = Applied::default();
            if let Err(e) = applier.handle(task, &mut out) {
                tracing::error!("the state machine failed, stopping the node: {e}");
                let _ = acks.blocking_send(Ack::StorageFailed(e.to_string()));
                return;
            }
            for (requester, answer) in out.answers {
                match requester {
                    Requester::Local(id) => {
                        if let Some(reply) = replies.remove(&id) {
                            let _ = reply.send(answer);
                        }
                    }
                    Requester::Peer { from, id } => match (answer, out.upto) {
                        (Ok(reply), Some(index)) => {
                            transport.send(from, &Frame::ForwardApplied { id, index, reply });
                        }
                        (answer, _) => {
                            let result = answer.map_err(|e| refusal(&e));
                            transport.send(from, &Frame::ForwardReply { id, result });
                        }
                    },
                }
            }
            upto = out.upto.or(upto);
            leases.append(&mut out.leases);
            if let Some((index, snapshot)) = out.snapshot {
                if let Some(previous) = finishing.take() {
                    let _ = previous.join();
                }
                finishing = finish_snapshot(index, snapshot, &applier, &acks);
            }
        }
        if acks.blocking_send(Ack::Applied { upto, leases }).is_err() {
            return;
        }
    }
    // The driver is gone; whoever still waits hears it stopped.
    for (_, reply) in replies {
        let _ = reply.send(Err(NodeError::Stopped));
    }
    if let Some(last) = finishing {
        let _ = last.join();
    }
}

/// Encodes and syncs the snapshot on a thread of its own, then hands it to
/// the driver; the applier may start the next one when this one is done.
fn finish_snapshot<M: StateMachine>(
    index: Index,
    snapshot: MachineSnapshot,
    applier: &Applier<M>,
    acks: &mpsc::Sender<Ack>,
) -> Option<std::thread::JoinHandle<()>> {
    let done = applier.snapshot_policy().handle();
    let acks = acks.clone();
    let spawned = std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            let ack = match (snapshot.finish)() {
                Ok(data) => {
                    done.finished(Some(data.len()));
                    Ack::SnapshotReady { index, data }
                }
                Err(e) => {
                    done.finished(None);
                    tracing::error!("snapshot at {index} cannot be finished: {e}");
                    Ack::StorageFailed(e.to_string())
                }
            };
            let _ = acks.blocking_send(ack);
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            // Without the thread the snapshot is skipped; the next one retries.
            tracing::warn!("cannot start a snapshot thread: {e}");
            applier.snapshot_done(None);
            None
        }
    }
}
