//! The watch stream against a real state machine: live entries are what
//! applying produced, history reads are what the machine answers.

use super::*;
use crate::event::Published;
use crate::{
    ChangesRequest, ChangesResponse, Command, CompactRequest, DeleteRangeRequest, Op, PutRequest,
    Reply, StateMachine,
};
use bytes::Bytes;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A member's machine and the entries it published.
struct Member {
    sm: StateMachine,
    index: u64,
    published: Vec<Published>,
}

impl Member {
    fn new() -> Member {
        Member {
            sm: StateMachine::new(),
            index: 0,
            published: Vec::new(),
        }
    }

    fn apply(&mut self, op: Op) {
        self.index += 1;
        let applied = self.sm.apply(self.index, &Command::new(op).encode());
        self.published.push(Published {
            index: self.index,
            revision: self.sm.revision(),
            events: applied.events,
            restored: false,
        });
    }

    fn put(&mut self, k: &str, v: &str) {
        self.apply(Op::Put(PutRequest {
            key: b(k),
            value: b(v),
            ..PutRequest::default()
        }));
    }

    fn delete(&mut self, k: &str) {
        self.apply(Op::DeleteRange(DeleteRangeRequest {
            key: b(k),
            ..DeleteRangeRequest::default()
        }));
    }

    fn now(&self) -> i64 {
        self.sm.revision()
    }

    fn read(&self, req: &ChangesRequest) -> Result<ChangesResponse, String> {
        match self.sm.read(&Op::Changes(req.clone())) {
            Reply::Changes(c) => Ok(c),
            other => Err(format!("{other:?}")),
        }
    }

    /// Feeds the stream every entry published from `from` on.
    fn feed(&self, s: &mut WatchStream, from: usize) -> Vec<WatchReply> {
        self.published[from..]
            .iter()
            .flat_map(|p| s.on_live(p))
            .collect()
    }

    /// Runs every history read the stream asks for.
    fn catch_up(&self, s: &mut WatchStream) -> Vec<WatchReply> {
        let mut out = Vec::new();
        for _ in 0..100 {
            let Some((id, req)) = s.next_read() else {
                return out;
            };
            out.extend(s.on_read(id, self.read(&req)));
        }
        panic!("catch-up does not end");
    }
}

fn create(key: &str, end: &str, start: i64) -> WatchCommand {
    WatchCommand::Create(WatchCreate {
        key: b(key),
        range_end: b(end),
        start_revision: start,
        ..WatchCreate::default()
    })
}

/// (revision, key, value or "" for a delete) of every event, in order.
fn seen(replies: &[WatchReply]) -> Vec<(i64, String, String)> {
    replies
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| {
            let value = e.kv.as_ref().map_or(String::new(), |kv| {
                String::from_utf8_lossy(&kv.value).into_owned()
            });
            (
                e.revision,
                String::from_utf8_lossy(&e.key).into_owned(),
                value,
            )
        })
        .collect()
}

fn ev(rev: i64, k: &str, v: &str) -> (i64, String, String) {
    (rev, k.to_string(), v.to_string())
}

#[test]
fn a_watch_from_now_sees_only_later_changes_in_its_range() {
    let mut m = Member::new();
    m.put("a", "1"); // 2
    let mut s = WatchStream::new(m.now());
    let created = s.command(create("a", "", 0), m.now());
    assert_eq!(created.len(), 1);
    assert!(created[0].created && !created[0].canceled);
    assert_eq!((created[0].watch_id, created[0].revision), (0, 2));
    let from = m.published.len();
    m.put("a", "2"); // 3
    m.put("b", "1"); // 4
    m.delete("a"); // 5
    let out = m.feed(&mut s, from);
    assert_eq!(seen(&out), vec![ev(3, "a", "2"), ev(5, "a", "")]);
    assert!(out
        .iter()
        .all(|r| r.events.iter().all(|e| e.prev.is_none())));
}

#[test]
fn a_watch_from_the_past_replays_history_then_goes_live_without_duplicates() {
    let mut m = Member::new();
    for i in 0..5 {
        m.put("k", &i.to_string()); // 2..=6
    }
    let mut s = WatchStream::new(m.now());
    let from = m.published.len();
    s.command(create("k", "", 3), m.now());
    // Entries published after the subscription but before the read.
    m.put("k", "5"); // 7
    let replayed = m.catch_up(&mut s);
    m.put("k", "6"); // 8
    let live = m.feed(&mut s, from);
    let all: Vec<_> = replayed.iter().chain(&live).cloned().collect();
    let revs: Vec<i64> = seen(&all).iter().map(|e| e.0).collect();
    assert_eq!(
        revs,
        vec![3, 4, 5, 6, 7, 8],
        "ordered, no gap, no duplicate"
    );
}

#[test]
fn a_lagged_reader_catches_up_from_history() {
    let mut m = Member::new();
    let mut s = WatchStream::new(m.now());
    s.command(create("a", "\0", 0), m.now());
    m.put("a", "1"); // 2
    let first = m.feed(&mut s, 0);
    let skipped_from = m.published.len();
    for i in 0..10 {
        m.put("b", &i.to_string()); // 3..=12
    }
    s.on_lagged();
    assert_eq!(s.unsynced(), 1);
    // The reader resumes at the oldest entry the ring kept.
    let resume_from = skipped_from + 7;
    let replayed = m.catch_up(&mut s);
    let live = m.feed(&mut s, resume_from);
    let all: Vec<_> = first
        .iter()
        .chain(&replayed)
        .chain(&live)
        .cloned()
        .collect();
    let revs: Vec<i64> = seen(&all).iter().map(|e| e.0).collect();
    assert_eq!(revs, (2..=12).collect::<Vec<_>>());
    assert_eq!(s.unsynced(), 0);
}

#[test]
fn a_compacted_start_cancels_with_the_compact_revision() {
    let mut m = Member::new();
    for i in 0..5 {
        m.put("k", &i.to_string());
    }
    m.apply(Op::Compact(CompactRequest {
        revision: 5,
        physical: false,
    }));
    let mut s = WatchStream::new(m.now());
    s.command(create("k", "", 2), m.now());
    let out = m.catch_up(&mut s);
    assert_eq!(out.len(), 1);
    assert!(out[0].canceled);
    assert_eq!(out[0].compact_revision, 5);
    assert!(s.is_empty());
}

#[test]
fn filters_and_prev_kv() {
    let mut m = Member::new();
    m.put("a", "1");
    let mut s = WatchStream::new(m.now());
    let mut no_put = WatchCreate {
        key: b("a"),
        no_put: true,
        prev_kv: true,
        ..WatchCreate::default()
    };
    s.command(WatchCommand::Create(no_put.clone()), m.now());
    no_put.no_put = false;
    no_put.no_delete = true;
    s.command(WatchCommand::Create(no_put), m.now());
    let from = m.published.len();
    m.put("a", "2");
    m.delete("a");
    let out = m.feed(&mut s, from);
    let deletes: Vec<_> = out.iter().filter(|r| r.watch_id == 0).collect();
    let puts: Vec<_> = out.iter().filter(|r| r.watch_id == 1).collect();
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].events[0].kv.is_none());
    assert_eq!(
        deletes[0].events[0].prev.as_ref().map(|p| p.value.clone()),
        Some(b("2"))
    );
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].events[0].prev.as_ref().map(|p| p.value.clone()),
        Some(b("1"))
    );
}

#[test]
fn ids_duplicates_cancels_and_bad_requests() {
    let m = Member::new();
    let mut s = WatchStream::new(m.now());
    let mine = WatchCommand::Create(WatchCreate {
        key: b("a"),
        watch_id: 1,
        ..WatchCreate::default()
    });
    assert_eq!(s.command(mine.clone(), 1)[0].watch_id, 1);
    let dup = s.command(mine, 1);
    assert!(dup[0].created && dup[0].canceled, "{dup:?}");
    assert!(dup[0].cancel_reason.contains("duplicate watch ID"));
    // Automatic ids start at 0 and skip taken ones.
    assert_eq!(s.command(create("a", "", 0), 1)[0].watch_id, 0);
    assert_eq!(s.command(create("a", "", 0), 1)[0].watch_id, 2);
    let canceled = s.command(WatchCommand::Cancel(2), 1);
    assert!(canceled[0].canceled);
    assert!(s.command(WatchCommand::Cancel(2), 1).is_empty(), "gone");
    assert!(s.command(WatchCommand::Cancel(99), 1).is_empty());
    let empty = s.command(create("", "", 0), 1);
    assert!(empty[0].canceled);
}

#[test]
fn progress_requests_wait_until_every_watch_is_synced() {
    let mut m = Member::new();
    m.put("a", "1");
    m.put("a", "2"); // 3
    let mut s = WatchStream::new(m.now());
    s.command(create("a", "", 2), m.now());
    assert!(s.command(WatchCommand::Progress, m.now()).is_empty());
    let out = m.catch_up(&mut s);
    let progress: Vec<_> = out
        .iter()
        .filter(|r| r.watch_id == STREAM_PROGRESS_ID)
        .collect();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].revision, 3);
    // Periodic notifications go to watches that asked and got nothing.
    s.command(
        WatchCommand::Create(WatchCreate {
            key: b("z"),
            progress_notify: true,
            ..WatchCreate::default()
        }),
        m.now(),
    );
    let tick = s.on_progress_tick();
    assert_eq!(tick.len(), 1);
    assert!(tick[0].events.is_empty() && tick[0].revision == 3);
}

#[test]
fn fragments_split_a_large_revision() {
    let mut m = Member::new();
    let mut s = WatchStream::new(m.now());
    s.command(
        WatchCommand::Create(WatchCreate {
            key: b("\0"),
            range_end: b("\0"),
            fragment: true,
            ..WatchCreate::default()
        }),
        m.now(),
    );
    let big = "x".repeat(600 * 1024);
    let ops = (0..5)
        .map(|i| {
            crate::RequestOp::Put(PutRequest {
                key: b(&format!("k{i}")),
                value: b(&big),
                ..PutRequest::default()
            })
        })
        .collect();
    m.apply(Op::Txn(crate::TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    }));
    let out = m.feed(&mut s, 0);
    assert!(out.len() >= 2, "split into {} pieces", out.len());
    assert!(out[..out.len() - 1].iter().all(|r| r.fragment));
    assert!(!out[out.len() - 1].fragment);
    assert_eq!(out.iter().map(|r| r.events.len()).sum::<usize>(), 5);
}

mod auth {
    //! Watches of a user: refused without read permission, canceled when
    //! the permission goes, and never sent an event after.

    use super::*;
    use crate::auth::{AuthRequest, PermKind, Permission, Principal};

    fn sys(m: &mut Member, req: AuthRequest) {
        m.apply(Op::Auth(req));
    }

    fn grant_perm(m: &mut Member, key: &str, end: &str) {
        sys(
            m,
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: Permission {
                    kind: PermKind::Read,
                    key: b(key),
                    range_end: b(end),
                },
            },
        );
    }

    fn revoke_perm(m: &mut Member, key: &str, end: &str) {
        sys(
            m,
            AuthRequest::RoleRevokePermission {
                name: "r".into(),
                key: b(key),
                range_end: b(end),
            },
        );
    }

    /// root, and user "u" with role "r" (read on a/), auth enabled.
    fn member() -> Member {
        let mut m = Member::new();
        for name in ["root", "u"] {
            sys(
                &mut m,
                AuthRequest::UserAdd {
                    name: name.into(),
                    password: None,
                    no_password: true,
                },
            );
        }
        sys(
            &mut m,
            AuthRequest::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
        );
        sys(&mut m, AuthRequest::RoleAdd { name: "r".into() });
        grant_perm(&mut m, "a/", "a0");
        sys(
            &mut m,
            AuthRequest::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
        );
        sys(&mut m, AuthRequest::Enable { secret: [5; 32] });
        m
    }

    fn stream(m: &Member) -> WatchStream {
        let auth = m.sm.auth().clone();
        let who = Principal::user("u", auth.revision());
        WatchStream::with_auth(m.now(), who, auth)
    }

    /// History reads as the stream's principal, checked by the machine.
    fn read_as(
        m: &Member,
        s: &WatchStream,
        req: &ChangesRequest,
    ) -> Result<ChangesResponse, String> {
        let cmd = Command::new(Op::Changes(req.clone())).by(s.read_principal());
        match m.sm.query(&cmd) {
            Reply::Changes(c) => Ok(c),
            Reply::Error(e) => Err(e.to_string()),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn a_create_without_read_permission_is_refused() {
        let m = member();
        let mut s = stream(&m);
        let out = s.command(create("b", "", 0), m.now());
        assert_eq!(out.len(), 1);
        assert!(out[0].created && out[0].canceled);
        assert_eq!(out[0].watch_id, -1);
        assert_eq!(
            out[0].cancel_reason,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
        assert!(s.is_empty());
        let ok = s.command(create("a/", "a0", 0), m.now());
        assert!(ok[0].created && !ok[0].canceled);
        // Anonymous streams get etcd's "user name is empty".
        let mut anon = WatchStream::with_auth(m.now(), Principal::Anonymous, m.sm.auth().clone());
        let out = anon.command(create("a/x", "", 0), m.now());
        assert_eq!(
            out[0].cancel_reason,
            "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
        );
    }

    #[test]
    fn a_watch_that_loses_its_permission_is_canceled_and_sees_nothing_after() {
        let mut m = member();
        let mut s = stream(&m);
        let id = s.command(create("a/", "a0", 0), m.now())[0].watch_id;
        let other = s.command(create("a/x", "", 0), m.now())[0].watch_id;
        let from = m.published.len();
        m.put("a/x", "1");
        revoke_perm(&mut m, "a/", "a0");
        m.put("a/x", "2");
        m.put("a/y", "3");
        let out = m.feed(&mut s, from);
        assert_eq!(
            seen(&out),
            vec![ev(m.now() - 2, "a/x", "1"), ev(m.now() - 2, "a/x", "1")]
        );
        let canceled: Vec<_> = out.iter().filter(|r| r.canceled).collect();
        assert_eq!(canceled.len(), 2);
        for r in canceled {
            assert!([id, other].contains(&r.watch_id));
            assert_eq!(
                r.cancel_reason,
                "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
            );
        }
        assert!(s.is_empty());
    }

    #[test]
    fn a_watch_still_allowed_after_a_change_goes_on() {
        let mut m = member();
        let mut s = stream(&m);
        s.command(create("a/x", "", 0), m.now());
        let from = m.published.len();
        grant_perm(&mut m, "z", "");
        m.put("a/x", "1");
        let out = m.feed(&mut s, from);
        assert_eq!(seen(&out), vec![ev(m.now(), "a/x", "1")]);
        assert!(out.iter().all(|r| !r.canceled));
    }

    #[test]
    fn a_history_read_waits_for_an_auth_change_the_stream_has_not_seen() {
        let mut m = member();
        m.put("a/x", "1");
        let start = m.now();
        let mut s = stream(&m);
        s.command(create("a/x", "", start), m.now());
        // A change the stream has not taken from the event stream yet.
        grant_perm(&mut m, "z", "");
        let (id, req) = s.next_read().expect("a read");
        let out = s.on_read(id, read_as(&m, &s, &req));
        assert!(out.is_empty());
        assert!(s.needs_auth());
        assert!(s.next_read().is_none());
        s.on_auth(m.sm.auth().clone());
        assert!(!s.needs_auth());
        let out = m.catch_up_as(&mut s);
        assert_eq!(seen(&out), vec![ev(start, "a/x", "1")]);
    }

    #[test]
    fn a_history_read_after_a_revoke_cancels() {
        let mut m = member();
        m.put("a/x", "1");
        let mut s = stream(&m);
        s.command(create("a/x", "", 1), m.now());
        revoke_perm(&mut m, "a/", "a0");
        s.on_auth(m.sm.auth().clone());
        assert!(s.is_empty(), "canceled by the change itself");
    }

    #[test]
    fn a_jump_over_a_revoke_and_a_new_grant_cancels() {
        let mut m = member();
        let mut s = stream(&m);
        s.command(create("a/x", "", 0), m.now());
        revoke_perm(&mut m, "a/", "a0");
        grant_perm(&mut m, "a/", "a0");
        // Allowed now, but not all along: the stream cannot tell.
        let out = s.on_auth(m.sm.auth().clone());
        assert_eq!(out.len(), 1);
        assert!(out[0].canceled);
        // The same two changes seen one by one cancel at the first.
        let mut m = member();
        let mut s = stream(&m);
        s.command(create("a/x", "", 0), m.now());
        let from = m.published.len();
        revoke_perm(&mut m, "a/", "a0");
        grant_perm(&mut m, "a/", "a0");
        let out = m.feed(&mut s, from);
        assert_eq!(out.iter().filter(|r| r.canceled).count(), 1);
        // A jump over changes that take nothing from the user keeps it.
        let mut m = member();
        let mut s = stream(&m);
        s.command(create("a/x", "", 0), m.now());
        grant_perm(&mut m, "y", "");
        grant_perm(&mut m, "z", "");
        assert!(s.on_auth(m.sm.auth().clone()).is_empty());
        assert_eq!(s.len(), 1);
    }

    impl Member {
        fn catch_up_as(&self, s: &mut WatchStream) -> Vec<WatchReply> {
            let mut out = Vec::new();
            for _ in 0..100 {
                let Some((id, req)) = s.next_read() else {
                    return out;
                };
                let result = read_as(self, s, &req);
                out.extend(s.on_read(id, result));
            }
            panic!("catch-up does not end");
        }
    }
}

#[test]
fn watches_that_take_a_whole_entry_in_one_shape_share_its_run() {
    let mut m = Member::new();
    let mut s = WatchStream::new(m.now());
    let watch = |key: &str, end: &str, prev_kv: bool| {
        WatchCommand::Create(WatchCreate {
            key: b(key),
            range_end: b(end),
            prev_kv,
            ..WatchCreate::default()
        })
    };
    s.command(watch("a", "c", false), m.now()); // 0: both keys
    s.command(watch("a", "c", false), m.now()); // 1: both keys
    s.command(watch("a", "c", true), m.now()); // 2: both keys, with prev
    s.command(watch("a", "", false), m.now()); // 3: only "a"
    s.command(watch("x", "", false), m.now()); // 4: neither
    m.put("a", "0");
    let ops = ["a", "b"]
        .iter()
        .map(|k| {
            crate::RequestOp::Put(PutRequest {
                key: b(k),
                value: b("1"),
                ..PutRequest::default()
            })
        })
        .collect();
    let from = m.published.len();
    m.apply(Op::Txn(crate::TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    }));
    let out = m.feed(&mut s, from);
    let ids: Vec<i64> = out.iter().map(|r| r.watch_id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    let run = |i: usize| out[i].events.runs().next().cloned().expect("one run");
    assert!(Arc::ptr_eq(&run(0), &run(1)));
    assert!(!Arc::ptr_eq(&run(0), &run(2)));
    let keys = |i: usize| -> Vec<Bytes> { out[i].events.iter().map(|e| e.key.clone()).collect() };
    assert_eq!(keys(0), vec![b("a"), b("b")]);
    assert_eq!(keys(2), keys(0));
    assert_eq!(keys(3), vec![b("a")]);
    assert!(out[0].events.iter().all(|e| e.prev.is_none()));
    assert_eq!(
        out[2].events[0].prev.as_ref().map(|p| p.value.clone()),
        Some(b("0"))
    );
    assert!(out[3].events.iter().all(|e| e.prev.is_none()));
    assert_eq!(s.counters().events_sent, 7);
}
