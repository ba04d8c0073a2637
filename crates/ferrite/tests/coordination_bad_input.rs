//! Bad and hostile input to Watch and Lease, through etcd's gRPC API on a
//! real cluster: each gets etcd's answer or a bounded cancellation, and the
//! member keeps serving.

mod common;

use std::time::Duration;

use common::Cluster;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use ferrite_proto::etcdserverpb::lease_client::LeaseClient;
use ferrite_proto::etcdserverpb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

async fn channel(endpoint: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

fn create(key: &[u8], start_revision: i64, watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec(),
                start_revision,
                watch_id,
                ..Default::default()
            },
        )),
    }
}

fn cancel(watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id },
        )),
    }
}

fn progress() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    }
}

async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a response within 20 s")
        .expect("no stream error")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_catches_up_later_without_a_gap() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let eps = c.endpoints();
    // A watch on a prefix, on its own stream, not read for a while.
    let ch = channel(&eps[1]).await;
    let (tx, rx) = mpsc::channel(16);
    let key_range = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"slow/".to_vec(),
                range_end: b"slow0".to_vec(),
                ..Default::default()
            },
        )),
    };
    tx.send(key_range).await.expect("send");
    let mut w = WatchClient::new(ch)
        .watch(ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    assert!(next(&mut w).await.created);
    // More entries than the event stream's ring keeps (4096), while the
    // stream is not read: the member must not buffer them for it.
    let puts = 5_000;
    let mut writers = Vec::new();
    for t in 0..8 {
        let ep = eps[t % eps.len()].clone();
        writers.push(tokio::spawn(async move {
            let mut kv = KvClient::new(channel(&ep).await);
            for i in (t..puts).step_by(8) {
                let put = pb::PutRequest {
                    key: format!("slow/{i:05}").into_bytes(),
                    value: vec![b'v'; 512],
                    ..Default::default()
                };
                kv.put(put).await.expect("put");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Now read: every put arrives, once, in revision order.
    let mut revisions = Vec::new();
    while revisions.len() < puts {
        let r = next(&mut w).await;
        assert!(!r.canceled, "canceled: {}", r.cancel_reason);
        revisions.extend(
            r.events
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)),
        );
    }
    assert_eq!(revisions.len(), puts);
    assert!(
        revisions.windows(2).all(|p| p[1] == p[0] + 1),
        "a gap or a duplicate in {} events",
        revisions.len()
    );
    let (code, metrics) = common::http(c.members[1].http, "GET", "/metrics", "");
    assert_eq!(code, 200);
    println!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("watch"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_requests_that_make_no_sense_get_etcds_answers() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let ch = channel(&c.endpoints()[0]).await;
    let (tx, rx) = mpsc::channel(2048);
    let mut w = WatchClient::new(ch)
        .watch(ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    // A flood of creates on one stream: all answered.
    for i in 0..1_000 {
        tx.send(create(format!("flood/{i}").as_bytes(), 0, 0))
            .await
            .expect("send");
    }
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 1_000 {
        let r = next(&mut w).await;
        assert!(r.created && !r.canceled, "{r:?}");
        ids.insert(r.watch_id);
    }
    // A client-chosen id that is taken.
    tx.send(create(b"dup", 0, 5)).await.expect("send");
    let dup = next(&mut w).await;
    assert!(dup.created && dup.canceled, "{dup:?}");
    assert!(dup.cancel_reason.contains("duplicate watch ID"), "{dup:?}");
    // Cancels of unknown or already canceled ids: no answer, the stream
    // goes on (a progress request is still answered).
    tx.send(cancel(1_000_000)).await.expect("send");
    tx.send(cancel(3)).await.expect("send");
    let canceled = next(&mut w).await;
    assert!(canceled.canceled && canceled.watch_id == 3, "{canceled:?}");
    tx.send(cancel(3)).await.expect("send");
    tx.send(pb::WatchRequest {
        request_union: None,
    })
    .await
    .expect("send");
    tx.send(progress()).await.expect("send");
    let p = next(&mut w).await;
    assert_eq!(p.watch_id, -1, "the progress answer: {p:?}");
    // A start revision in the past beyond compaction: canceled with the
    // compact revision.
    let mut kv = KvClient::new(channel(&c.endpoints()[0]).await);
    let mut last = 0;
    for i in 0..5 {
        let put = pb::PutRequest {
            key: b"compacted".to_vec(),
            value: format!("{i}").into_bytes(),
            ..Default::default()
        };
        last = kv
            .put(put)
            .await
            .expect("put")
            .into_inner()
            .header
            .map_or(0, |h| h.revision);
    }
    kv.compact(pb::CompactionRequest {
        revision: last,
        physical: false,
    })
    .await
    .expect("compact");
    tx.send(create(b"compacted", 2, 0)).await.expect("send");
    let mut compacted = None;
    for _ in 0..4 {
        let r = next(&mut w).await;
        if r.canceled {
            compacted = Some(r);
            break;
        }
    }
    let compacted = compacted.expect("a cancel");
    assert_eq!(compacted.compact_revision, last, "{compacted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_requests_that_make_no_sense_get_etcds_answers() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let ch = channel(&c.endpoints()[2]).await;
    let mut leases = LeaseClient::new(ch.clone());
    // TTL 0 is raised to the minimum; beyond the limit is refused.
    let zero = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 0, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    // (1.5 election timeouts in whole seconds: these clusters elect fast.)
    assert!(zero.ttl >= 1, "minimum TTL: {zero:?}");
    let huge = leases
        .lease_grant(pb::LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await
        .expect_err("too large");
    assert_eq!(huge.code(), tonic::Code::OutOfRange);
    assert_eq!(huge.message(), "etcdserver: too large lease TTL");
    // A client-chosen id, then the same again.
    leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 77 })
        .await
        .expect("grant 77");
    let again = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 77 })
        .await
        .expect_err("taken");
    assert_eq!(again.message(), "etcdserver: lease already exists");
    // Unknown leases: revoke and put refused, keepalive answered TTL 0,
    // time-to-live -1.
    let revoke = leases
        .lease_revoke(pb::LeaseRevokeRequest { id: 12345 })
        .await
        .expect_err("unknown");
    assert_eq!(revoke.code(), tonic::Code::NotFound);
    assert_eq!(revoke.message(), "etcdserver: requested lease not found");
    let put = KvClient::new(ch.clone())
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 12345,
            ..Default::default()
        })
        .await
        .expect_err("unknown lease");
    assert_eq!(put.message(), "etcdserver: requested lease not found");
    let mut ka = leases
        .lease_keep_alive(tokio_stream::iter(vec![
            pb::LeaseKeepAliveRequest { id: 12345 },
            pb::LeaseKeepAliveRequest { id: 77 },
        ]))
        .await
        .expect("keepalive stream")
        .into_inner();
    // Up to 64 renewals are in flight per stream, so answers may come in
    // either order (etcd's clients match them by id).
    let mut answers = Vec::new();
    for _ in 0..2 {
        let a = ka.message().await.expect("answer").expect("open");
        answers.push((a.id, a.ttl));
    }
    answers.sort();
    assert_eq!(answers, vec![(77, 30), (12345, 0)]);
    let ttl = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: 12345,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.ttl, -1);
}
