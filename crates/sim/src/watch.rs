//! Simulated watch clients, driving `ferrite_state::watch::WatchStream`
//! exactly as the real server's `watch/session.rs` does: subscribe to the
//! member's event stream, create the watch at the stream's revision, feed
//! it live entries, tell it when the reader lagged, answer its history
//! reads (`Op::Changes`, read from that member's machine, after a delay)
//! one at a time, and pass on what it returns.
//!
//! Each member's event stream is an `EventRing`: the entries its machine
//! published (and a `restored` entry when it installs a snapshot), of which
//! it keeps only the last `watch_ring_entries`, as tokio's broadcast keeps
//! its capacity: a reader that polls too slowly finds the entries it needed
//! gone, is told it lagged, and its watches catch up from history.
//!
//! A watcher watches one key, the `kv/` prefix, the `lease/` prefix, or
//! everything, from revision 1 or from now, some with `prev_kv`. When its
//! member crashes it resumes on another member (any member that is up) from
//! the revision after the last event it received, as `ferrite chaos` does;
//! canceled for compaction, it resumes from the compact revision. What it
//! received is judged by `check::watch`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use ferrite_raft::NodeId;
use ferrite_state::kv::ChangesRequest;
use ferrite_state::watch::{WatchCommand, WatchCreate, WatchReply, WatchStream};
use ferrite_state::{Command, Op, Published, Reply};

use crate::auth::{limited_range, resumable_reason, watch_principal, AuthMarks};
use crate::check::watch::{check_watcher, Segment};
use crate::check::Violation;
use crate::options::Micros;
use crate::world::{Event, World};

/// One member's event stream, for one life of the member.
pub struct EventRing {
    entries: VecDeque<Arc<Published>>,
    /// The sequence number of `entries[0]`.
    first: u64,
    entries_max: usize,
    /// The revision of the last entry published: "now" for a new watch.
    revision: i64,
    /// Every auth change published, skipped or not (the leak check).
    pub auth: AuthMarks,
}

impl EventRing {
    pub fn new(entries_max: usize, revision: i64) -> EventRing {
        EventRing {
            entries: VecDeque::new(),
            first: 0,
            entries_max: entries_max.max(1),
            revision,
            auth: AuthMarks::default(),
        }
    }

    /// As `EventStream::publish` / `publish_restore`: the revision moves,
    /// the oldest entry falls out when the ring is full.
    pub fn publish(&mut self, p: Published) {
        self.revision = p.revision;
        if p.events.is_empty() && !p.restored {
            return;
        }
        let seq = self.end();
        for e in &p.events {
            if let ferrite_state::Event::Auth(store) = e {
                self.auth.record(seq, store.clone());
            }
        }
        self.entries.push_back(Arc::new(p));
        if self.entries.len() > self.entries_max {
            self.entries.pop_front();
            self.first += 1;
        }
    }

    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

struct Conn {
    member: NodeId,
    incarnation: u64,
    stream: WatchStream,
    /// The next ring entry this reader takes.
    cursor: u64,
    watch_id: i64,
    reading: bool,
    /// The ring position when the watch was created (the leak check
    /// looks at auth changes from there).
    created_at: u64,
}

pub struct Watcher {
    key: Bytes,
    range_end: Bytes,
    prev_kv: bool,
    /// The first watch starts now (else from revision 1).
    from_now: bool,
    /// Polls of the event stream come up to this far apart.
    poll_max: Micros,
    read_delay_max: Micros,
    conn: Option<Conn>,
    /// Bumped with every new watch: events of an older one are stale.
    generation: u64,
    /// Where the next watch starts.
    next_rev: i64,
    segments: Vec<Segment>,
    /// Canceled for a reason other than compaction or permission: the
    /// watcher stops.
    done: bool,
    /// Watches as the limited user (`auth.rs`).
    limited: bool,
}

impl World {
    pub(crate) fn add_watchers(&mut self) {
        for w in 0..self.opts.watchers {
            let (key, range_end): (&[u8], &[u8]) = match self.prng.below(4) {
                0 => (b"kv/a", b""),
                1 => (b"kv/", b"kv0"),
                2 => (b"lease/", b"lease0"),
                _ => (b"\0", b"\0"),
            };
            let watcher = Watcher {
                key: Bytes::copy_from_slice(key),
                range_end: Bytes::copy_from_slice(range_end),
                prev_kv: self.prng.below(2) == 0,
                from_now: self.prng.below(2) == 0,
                poll_max: [10_000, 50_000, 300_000][self.prng.below(3) as usize],
                read_delay_max: [0, 5_000, 50_000][self.prng.below(3) as usize],
                conn: None,
                generation: 0,
                next_rev: 1,
                segments: Vec::new(),
                done: false,
                limited: self.opts.auth && limited_range(key),
            };
            self.watchers.push(watcher);
            let start = self.prng.below(200_000);
            self.schedule(start, Event::WatchResume { watcher: w });
        }
    }

    /// Subscribes `w` to a member that is up and creates its watch there.
    pub(crate) fn on_watch_resume(&mut self, w: usize) {
        if self.watchers[w].done || self.watchers[w].conn.is_some() {
            return;
        }
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.is_up())
            .map(|(id, _)| *id)
            .collect();
        let Some(member) = self.prng.pick(&up).copied() else {
            let later = self.prng.range(10_000, 100_000);
            self.schedule(later, Event::WatchResume { watcher: w });
            return;
        };
        let canary = self.opts.watch_canary;
        let Some(node) = self.nodes.get(&member) else {
            return;
        };
        let now_rev = node.ring.revision;
        let cursor = node.ring.end();
        let incarnation = node.incarnation;
        let store = node.machine().map(|sm| sm.auth().clone());
        let watcher = &mut self.watchers[w];
        let first = watcher.segments.is_empty();
        let start_revision = if first && watcher.from_now {
            0
        } else {
            watcher.next_rev
        };
        let mut stream = match store {
            Some(store) if watcher.limited => {
                WatchStream::with_auth(now_rev, watch_principal(&store), store).canaried(canary)
            }
            _ => WatchStream::with_canary(now_rev, canary),
        };
        let create = WatchCreate {
            key: watcher.key.clone(),
            range_end: watcher.range_end.clone(),
            start_revision,
            prev_kv: watcher.prev_kv,
            ..WatchCreate::default()
        };
        let replies = stream.command(WatchCommand::Create(create), now_rev);
        let watch_id = replies.first().map_or(-1, |r| r.watch_id);
        let start = if start_revision <= 0 {
            now_rev + 1
        } else {
            start_revision
        };
        watcher.segments.push(Segment::new(member, start));
        watcher.generation += 1;
        watcher.conn = Some(Conn {
            member,
            incarnation,
            stream,
            cursor,
            watch_id,
            reading: false,
            created_at: cursor,
        });
        let generation = watcher.generation;
        if !first {
            self.stats.watcher_resumes += 1;
        }
        self.log(|| format!("watcher {w} on {member} from revision {start}"));
        self.watch_replies(w, replies);
        self.watch_maybe_read(w);
        let poll = self.prng.range(5_000, self.watchers[w].poll_max);
        self.schedule(
            poll,
            Event::WatchPoll {
                watcher: w,
                generation,
            },
        );
    }

    /// Whether `w`'s member is still the life it subscribed to; if not,
    /// the stream broke: resume elsewhere soon.
    fn watch_connected(&mut self, w: usize) -> bool {
        let Some(conn) = &self.watchers[w].conn else {
            return false;
        };
        let alive = self
            .nodes
            .get(&conn.member)
            .is_some_and(|n| n.is_up() && n.incarnation == conn.incarnation);
        if !alive {
            let watcher = &mut self.watchers[w];
            watcher.conn = None;
            watcher.next_rev = watcher.segments.last().map_or(1, |s| s.next());
            let later = self.prng.range(1_000, 100_000);
            self.schedule(later, Event::WatchResume { watcher: w });
        }
        alive
    }

    /// The reader takes what its member published since it last looked.
    pub(crate) fn on_watch_poll(&mut self, w: usize, generation: u64) {
        if self.watchers[w].generation != generation || !self.watch_connected(w) {
            return;
        }
        let mut replies = Vec::new();
        let mut lagged = false;
        let mut leak = None;
        let scope = self.watchers[w].scope();
        {
            let Some(conn) = self.watchers[w].conn.as_mut() else {
                return;
            };
            let Some(node) = self.nodes.get(&conn.member) else {
                return;
            };
            if conn.cursor < node.ring.first {
                // tokio's `RecvError::Lagged`: the entries are gone.
                conn.stream.on_lagged();
                conn.cursor = node.ring.first;
                lagged = true;
            }
            while conn.cursor < node.ring.end() {
                let p = &node.ring.entries[(conn.cursor - node.ring.first) as usize];
                let got = conn.stream.on_live(p);
                conn.cursor += 1;
                leak = leak.or_else(|| leaked(&scope, conn, &node.ring.auth, &got));
                replies.extend(got);
            }
        }
        if let Some(v) = leak {
            self.fail(v);
            return;
        }
        if lagged {
            self.stats.watch_lags += 1;
        }
        self.watch_replies(w, replies);
        self.watch_maybe_read(w);
        if self.watchers[w].generation == generation {
            let poll = self.prng.range(5_000, self.watchers[w].poll_max);
            self.schedule(
                poll,
                Event::WatchPoll {
                    watcher: w,
                    generation,
                },
            );
        }
    }

    /// At most one history read in flight, as in `session.rs`.
    fn watch_maybe_read(&mut self, w: usize) {
        let Some(conn) = self.watchers[w].conn.as_mut() else {
            return;
        };
        if conn.reading {
            return;
        }
        let Some((id, req)) = conn.stream.next_read() else {
            return;
        };
        conn.reading = true;
        self.stats.watch_catch_ups += 1;
        let generation = self.watchers[w].generation;
        let delay = self.prng.range(0, self.watchers[w].read_delay_max);
        self.schedule(
            delay,
            Event::WatchRead {
                watcher: w,
                generation,
                id,
                req: Box::new(req),
            },
        );
    }

    /// A history read, answered by the member's machine (a serializable
    /// read of its applied state, as the server's `read_changes`).
    pub(crate) fn on_watch_read(
        &mut self,
        w: usize,
        generation: u64,
        id: i64,
        req: ChangesRequest,
    ) {
        if self.watchers[w].generation != generation || !self.watch_connected(w) {
            return;
        }
        let Some(conn) = self.watchers[w].conn.as_mut() else {
            return;
        };
        let Some(sm) = self.nodes.get(&conn.member).and_then(|n| n.machine()) else {
            return;
        };
        let (start, compact) = (req.start_revision, sm.compact_revision());
        if let Some(segment) = self.watchers[w].segments.last_mut() {
            segment.compact_seen = segment.compact_seen.max(compact);
            if start == compact {
                segment.reads_at_compaction.push(start);
            }
        }
        let scope = self.watchers[w].scope();
        let Some(conn) = self.watchers[w].conn.as_mut() else {
            return;
        };
        let Some(sm) = self.nodes.get(&conn.member).and_then(|n| n.machine()) else {
            return;
        };
        let query = Command::new(Op::Changes(req)).by(conn.stream.read_principal());
        let result = match sm.query(&query) {
            Reply::Changes(c) => Ok(c),
            Reply::Error(e) => Err(e.to_string()),
            other => Err(format!("unexpected reply to a history read: {other:?}")),
        };
        conn.reading = false;
        let mut replies = conn.stream.on_read(id, result);
        let node = self.nodes.get(&conn.member);
        if let Some(marks) = node.map(|n| &n.ring.auth) {
            if let Some(v) = leaked(&scope, conn, marks, &replies) {
                self.fail(v);
                return;
            }
        }
        // The read found a newer auth store than the stream's: it takes
        // the member's current one, as the server's session does.
        if conn.stream.needs_auth() {
            if let Some(store) = node.and_then(|n| n.machine()).map(|sm| sm.auth().clone()) {
                replies.extend(conn.stream.on_auth(store));
            }
        }
        self.watch_replies(w, replies);
        self.watch_maybe_read(w);
    }

    fn watch_replies(&mut self, w: usize, replies: Vec<WatchReply>) {
        for r in replies {
            let watcher = &mut self.watchers[w];
            let Some(conn) = &watcher.conn else { return };
            if r.watch_id != conn.watch_id {
                continue; // a progress report for the stream
            }
            let Some(segment) = watcher.segments.last_mut() else {
                return;
            };
            if !r.events.is_empty() {
                self.stats.watch_events += r.events.len() as u64;
                if let Err(e) = segment.receive(r.events.to_vec()) {
                    let v = Violation::new("watch", format!("watcher {w}: {e}"));
                    self.fail(v);
                    return;
                }
            }
            if r.canceled {
                segment.canceled = Some((r.cancel_reason.clone(), r.compact_revision));
                let next = segment.next();
                watcher.conn = None;
                let auth = r.compact_revision == 0 && resumable_reason(&r.cancel_reason);
                if r.compact_revision > 0 {
                    watcher.next_rev = r.compact_revision.max(next);
                } else if auth {
                    watcher.next_rev = next;
                } else {
                    watcher.done = true;
                }
                self.log(|| {
                    format!(
                        "watcher {w} canceled: {} (compact revision {})",
                        r.cancel_reason, r.compact_revision
                    )
                });
                if auth {
                    self.stats.watch_auth_cancels += 1;
                    let later = self.prng.range(20_000, 300_000);
                    self.schedule(later, Event::WatchResume { watcher: w });
                }
                if r.compact_revision > 0 {
                    self.stats.watch_compacted += 1;
                    let later = self.prng.range(1_000, 50_000);
                    self.schedule(later, Event::WatchResume { watcher: w });
                }
                return;
            }
        }
    }

    /// At the end: every watcher's stream against the applied history.
    pub(crate) fn check_watchers(&self) -> Result<(), Violation> {
        for (i, w) in self.watchers.iter().enumerate() {
            check_watcher(
                &self.kv_history,
                i,
                &w.key,
                &w.range_end,
                w.prev_kv,
                &w.segments,
            )?;
        }
        Ok(())
    }
}

/// What the leak check needs to know of a watcher.
struct Scope {
    limited: bool,
    key: Bytes,
    range_end: Bytes,
}

impl Watcher {
    fn scope(&self) -> Scope {
        Scope {
            limited: self.limited,
            key: self.key.clone(),
            range_end: self.range_end.clone(),
        }
    }
}

/// The leak check (`auth.rs`): events for `conn`'s watch delivered after
/// its member published a change that took the watcher's access away.
fn leaked(
    watcher: &Scope,
    conn: &Conn,
    marks: &AuthMarks,
    replies: &[WatchReply],
) -> Option<Violation> {
    if !watcher.limited {
        return None;
    }
    let r = replies
        .iter()
        .find(|r| r.watch_id == conn.watch_id && !r.events.is_empty())?;
    let denied = marks.first_denial(
        conn.created_at,
        conn.cursor,
        &watcher.key,
        &watcher.range_end,
    )?;
    Some(Violation::new(
        "watch auth",
        format!(
            "a watch of [{:?}, {:?}) on {} received {} events (revisions {}..={}) after the member applied a change (event stream entry {denied}) that took its read permission away",
            String::from_utf8_lossy(&watcher.key),
            String::from_utf8_lossy(&watcher.range_end),
            conn.member,
            r.events.len(),
            r.events.first().map_or(0, |e| e.revision),
            r.events.last().map_or(0, |e| e.revision),
        ),
    ))
}
