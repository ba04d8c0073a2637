//! Seed corpora: small valid inputs for every target, made by the real
//! encoders (peer frames from the codec, WAL directories written by a `Wal`
//! on a `MemDisk`, snapshots and replies from a `StateMachine`, NBD sessions
//! as a client sends them), in the input formats the targets document.
//!
//! `fuzz/corpus/<target>/` holds them; to rewrite them after a format
//! change, run
//! `cargo test -p ferrite-fuzzing --test corpus -- --ignored write_seeds`.
//! A test checks that the committed files are what this module makes.

use bytes::Bytes;
use ferrite_node::codec::{self, Frame, Refusal};
use ferrite_node::LeaseTtl;
use ferrite_raft::{
    AppendResult, Body, Entry, HardState, Index, Membership, Message, NodeId, Payload, Persist,
    Snapshot, SnapshotMeta, Term,
};
use ferrite_state::{Command, Op, StateMachine};
use ferrite_wal::{Disk, MemDisk, Wal, WalOptions};

use crate::nbd::server::protocol::*;
use crate::wal::{DIR, OPTIONS};

/// One seed file.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, seeds: Vec<(String, Vec<u8>)>| {
        for (name, bytes) in seeds {
            out.push(Seed {
                target,
                name,
                bytes,
            });
        }
    };
    add("peer_frames", peer_frames());
    add("wal_recovery", wal_recovery());
    add("snapshot_files", snapshot_files());
    add("state_commands", state_commands());
    add("nbd_server", nbd_server());
    add("backup_files", backup_files());
    out
}

// ---- backup_files ------------------------------------------------------------

fn backup_files() -> Vec<(String, Vec<u8>)> {
    use ferrite_state::backup::{self, BackupMeta};
    let mut out = Vec::new();
    for (name, sm) in [("empty", StateMachine::new()), ("full", machine())] {
        let state = sm.snapshot();
        let mut file = vec![0u8];
        file.extend(backup::encode(BackupMeta::of(&sm, 0), state.clone()));
        out.push((format!("file-{name}"), file));
        let mut unsealed = vec![1u8];
        unsealed.extend_from_slice(&state);
        out.push((format!("state-{name}"), unsealed));
    }
    out
}

// ---- peer_frames -------------------------------------------------------------

fn peer_frames() -> Vec<(String, Vec<u8>)> {
    let membership = Membership {
        voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
        learners: [NodeId(4)].into(),
    };
    let raft = |body: Body| {
        Frame::Raft(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body,
        })
    };
    let command = crate::state::script(1)[1].encode();
    let frames = [
        (
            "hello",
            Frame::Hello {
                cluster_id: 0xfe77,
                from: NodeId(2),
            },
        ),
        (
            "pre-vote",
            raft(Body::PreVote {
                last_index: Index(9),
                last_term: Term(2),
            }),
        ),
        (
            "pre-vote-response",
            raft(Body::PreVoteResponse { granted: true }),
        ),
        (
            "vote",
            raft(Body::Vote {
                last_index: Index(9),
                last_term: Term(2),
                transfer: false,
            }),
        ),
        ("vote-response", raft(Body::VoteResponse { granted: false })),
        (
            "append",
            raft(Body::Append {
                prev_index: Index(4),
                prev_term: Term(2),
                entries: vec![
                    Entry {
                        index: Index(5),
                        term: Term(3),
                        payload: Payload::Noop,
                    },
                    Entry {
                        index: Index(6),
                        term: Term(3),
                        payload: Payload::Normal(command.clone()),
                    },
                    Entry {
                        index: Index(7),
                        term: Term(3),
                        payload: Payload::Membership(membership.clone()),
                    },
                ],
                commit: Index(4),
            }),
        ),
        (
            "append-success",
            raft(Body::AppendResponse(AppendResult::Success {
                match_index: Index(7),
            })),
        ),
        (
            "append-reject",
            raft(Body::AppendResponse(AppendResult::Reject {
                rejected: Index(7),
                hint_index: Index(3),
                hint_term: Term(1),
            })),
        ),
        (
            "heartbeat",
            raft(Body::Heartbeat {
                commit: Index(7),
                read_round: 12,
            }),
        ),
        (
            "heartbeat-response",
            raft(Body::HeartbeatResponse { read_round: 12 }),
        ),
        (
            "snapshot-chunk",
            raft(Body::Snapshot {
                meta: SnapshotMeta {
                    index: Index(40),
                    term: Term(3),
                    membership,
                },
                offset: 0,
                total_bytes: 11,
                data: Bytes::from_static(b"FSSM\x03chunk"),
            }),
        ),
        (
            "snapshot-response",
            raft(Body::SnapshotResponse {
                index: Index(40),
                next_offset: 11,
                done: true,
            }),
        ),
        ("timeout-now", raft(Body::TimeoutNow)),
        (
            "forward",
            Frame::Forward {
                id: 17,
                from: NodeId(2),
                data: command,
            },
        ),
        (
            "forward-reply",
            Frame::ForwardReply {
                id: 17,
                result: Ok(Bytes::from_static(b"\x00\x01\x10\x05")),
            },
        ),
        (
            "forward-refused",
            Frame::ForwardReply {
                id: 18,
                result: Err(Refusal::NotLeader {
                    leader: Some(NodeId(3)),
                }),
            },
        ),
        (
            "read-index",
            Frame::ReadIndex {
                id: 5,
                from: NodeId(3),
            },
        ),
        (
            "read-index-reply",
            Frame::ReadIndexReply {
                id: 5,
                result: Ok(Index(7)),
            },
        ),
        (
            "read-index-busy",
            Frame::ReadIndexReply {
                id: 6,
                result: Err(Refusal::Busy),
            },
        ),
        (
            "lease-renew",
            Frame::LeaseRenew {
                id: 9,
                from: NodeId(2),
                lease: 0x1234,
                renew: true,
            },
        ),
        (
            "lease-renew-reply",
            Frame::LeaseRenewReply {
                id: 9,
                result: Ok(LeaseTtl {
                    id: 0x1234,
                    granted_ttl_s: 60,
                    remaining_s: 60,
                }),
            },
        ),
        (
            "lease-not-found",
            Frame::LeaseRenewReply {
                id: 10,
                result: Err(Refusal::LeaseNotFound),
            },
        ),
    ];
    let mut stream = Vec::new();
    let mut out = Vec::new();
    for (name, frame) in &frames {
        let bytes = codec::encode(frame);
        stream.extend_from_slice(&bytes);
        out.push((format!("stream-{name}"), bytes.to_vec()));
    }
    out.push(("stream-all".into(), stream));
    // Bare bodies, for `decode` on the whole input.
    for (name, frame) in &frames[..6] {
        out.push((format!("body-{name}"), codec::encode(frame)[4..].to_vec()));
    }
    out
}

// ---- wal_recovery ----------------------------------------------------------

fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    let script = crate::state::script(1);
    (lo..=hi)
        .map(|i| Entry {
            index: Index(i),
            term: Term(term),
            payload: match i % 4 {
                0 => Payload::Noop,
                3 => Payload::Membership(Membership {
                    voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
                    learners: Default::default(),
                }),
                _ => Payload::Normal(script[i as usize % script.len()].encode()),
            },
        })
        .collect()
}

fn persist(entries: Vec<Entry>, term: u64, commit: u64) -> Persist {
    Persist {
        hard_state: Some(HardState {
            term: Term(term),
            vote: Some(NodeId(1)),
            commit: Index(commit),
        }),
        snapshot: None,
        entries,
    }
}

/// A state machine after the whole script: the data of snapshot seeds.
fn machine() -> StateMachine {
    let mut sm = StateMachine::new();
    for (i, command) in crate::state::script(1).iter().enumerate() {
        sm.apply(i as u64 + 1, &command.encode());
    }
    sm
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: Index(index),
            term: Term(term),
            membership: Membership {
                voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
                learners: [NodeId(4)].into(),
            },
        },
        data: machine().snapshot(),
    }
}

/// Writes a log with `f` on a fresh `MemDisk`, and returns the disk.
fn written(options: WalOptions, f: impl FnOnce(&mut Wal<MemDisk>)) -> MemDisk {
    let (mut wal, _) = Wal::open(MemDisk::new(), DIR, options).expect("open a new log");
    f(&mut wal);
    wal.sync().expect("sync");
    wal.into_disk()
}

/// The directory on `disk` in `wal_recovery`'s input format (raw files).
fn dir_input(disk: &MemDisk) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 0;
    for name in disk.list_dir(DIR).expect("list the directory") {
        let bytes = disk
            .file_bytes(&format!("{DIR}/{name}"))
            .expect("a listed file");
        if let Some(hex) = name.strip_suffix(".wal") {
            let this = u64::from_str_radix(hex, 16).expect("a segment name");
            let skipped = u8::try_from(this - seq - 1).expect("a small gap");
            seq = this;
            out.push(skipped << 3);
            crate::put_chunk(&mut out, bytes);
        } else if let Some(rest) = name.strip_prefix("snap-") {
            let hex = |s: &str| {
                u8::try_from(u64::from_str_radix(s, 16).expect("hex")).expect("a small value")
            };
            out.push(2);
            let mut body = vec![hex(&rest[..16]), hex(&rest[17..33])];
            body.extend_from_slice(bytes);
            crate::put_chunk(&mut out, &body);
        }
    }
    out
}

fn wal_recovery() -> Vec<(String, Vec<u8>)> {
    let small = WalOptions {
        segment_bytes_max: 600,
    };
    let mut out = Vec::new();
    let fresh = written(OPTIONS, |_| {});
    out.push(("fresh".to_string(), dir_input(&fresh)));
    let simple = written(OPTIONS, |wal| {
        wal.write(&persist(entries(1, 4, 1), 1, 2)).expect("write");
    });
    out.push(("entries".into(), dir_input(&simple)));
    let segments = written(small, |wal| {
        for i in 0..4 {
            wal.write(&persist(entries(i * 3 + 1, i * 3 + 3, 1), 1, i * 3))
                .expect("write");
            wal.sync().expect("sync");
        }
    });
    out.push(("segments".into(), dir_input(&segments)));
    let compacted = written(small, |wal| {
        for i in 0..4 {
            wal.write(&persist(entries(i * 3 + 1, i * 3 + 3, 1), 1, i * 3))
                .expect("write");
            wal.sync().expect("sync");
        }
        wal.save_snapshot(&snapshot(8, 1)).expect("snapshot");
        wal.write(&persist(entries(13, 14, 2), 2, 12))
            .expect("write");
    });
    out.push(("compacted".into(), dir_input(&compacted)));
    let installed = written(OPTIONS, |wal| {
        wal.write(&persist(entries(1, 3, 1), 1, 1)).expect("write");
        wal.write(&Persist {
            snapshot: Some(snapshot(20, 2)),
            ..persist(entries(21, 22, 2), 2, 20)
        })
        .expect("install");
    });
    out.push(("installed".into(), dir_input(&installed)));
    let conflict = written(OPTIONS, |wal| {
        wal.write(&persist(entries(1, 5, 1), 1, 2)).expect("write");
        wal.sync().expect("sync");
        wal.write(&persist(entries(3, 4, 2), 2, 2)).expect("write");
    });
    out.push(("conflict".into(), dir_input(&conflict)));
    // A torn tail, and damage in the middle: the last bytes of the last
    // segment cut off; one byte of an early record flipped.
    let mut torn = dir_input(&conflict);
    torn.truncate(torn.len() - 7);
    out.push(("torn-tail".into(), torn));
    let mut damaged = dir_input(&simple);
    damaged[3 + 40] ^= 0x20;
    out.push(("damaged".into(), damaged));

    // Segments described record by record (tag 1): see `structured_segment`.
    let structured = |segments: &[&[u8]], snapshot: Option<(u8, u8)>| {
        let mut out = Vec::new();
        for body in segments {
            out.push(1);
            crate::put_chunk(&mut out, body);
        }
        if let Some((index, term)) = snapshot {
            // Tag 3: the harness appends the CRC.
            let file = snapshot_file(u64::from(index), u64::from(term));
            let mut body = vec![index, term];
            body.extend_from_slice(&file[..file.len() - 4]);
            out.push(3);
            crate::put_chunk(&mut out, &body);
        }
        out
    };
    out.push((
        "structured-entries".into(),
        structured(
            &[&[
                0x81, 1, 1, 0, // hard state: term 1, no vote, commit 0; ends the batch
                0x00, 1, 1, 0, // entry 1, term 1, no-op
                0x00, 2, 1, 1, 2, b'h', b'i', // entry 2, term 1, data "hi"
                0x00, 3, 1, 2, 0b111, 0b1000, // entry 3, term 1, membership
                0x81, 1, 1, 2, // hard state: term 1, vote 1, commit 2; ends the batch
                0x05, 4, // preallocated zeros
            ]],
            None,
        ),
    ));
    out.push((
        "structured-marks".into(),
        structured(
            &[
                &[
                    0x81, 1, 0, 0, // hard state
                    0x00, 1, 1, 0, 0x00, 2, 1, 0, 0x80, 3, 1, 0, // entries 1..=3
                    0x82, 1, 2, 1, // compacted at 2, term 1
                ],
                &[
                    0x01, 2, 1, 2, 0x82, 2, 2, 1, // head: hard state, carried mark
                    0x82, 0, 5, 2, // installed at 5, term 2
                    0x00, 6, 2, 0, 0x80, 7, 2, 0, // entries 6, 7
                    0x04, 3, 0xde, 0xad, 0xbe, // a torn write
                ],
            ],
            Some((5, 2)),
        ),
    ));
    out
}

/// The bytes of the snapshot file a `Wal` writes for `snapshot(index, term)`.
fn snapshot_file(index: u64, term: u64) -> Vec<u8> {
    let disk = written(OPTIONS, |wal| {
        let install = Persist {
            snapshot: Some(snapshot(index, term)),
            ..persist(Vec::new(), term, index)
        };
        wal.write(&install).expect("install a snapshot");
    });
    let name = ferrite_wal::snapshot_name(Index(index), Term(term));
    disk.file_bytes(&format!("{DIR}/{name}"))
        .expect("the snapshot file")
        .to_vec()
}

// ---- snapshot_files ----------------------------------------------------------

fn snapshot_files() -> Vec<(String, Vec<u8>)> {
    let with_mode = |mode: u8, bytes: &[u8]| {
        let mut out = vec![mode];
        out.extend_from_slice(bytes);
        out
    };
    let mut out = Vec::new();
    // A snapshot file as the WAL writes it, whole and without its CRC.
    let disk = written(OPTIONS, |wal| {
        wal.write(&persist(entries(1, 6, 1), 1, 6)).expect("write");
        wal.save_snapshot(&snapshot(6, 1)).expect("snapshot");
    });
    let name = ferrite_wal::snapshot_name(Index(6), Term(1));
    let file = disk
        .file_bytes(&format!("{DIR}/{name}"))
        .expect("the snapshot file");
    out.push(("wal-file".to_string(), with_mode(0, file)));
    out.push((
        "wal-file-unsealed".into(),
        with_mode(1, &file[..file.len() - 4]),
    ));
    // State machine snapshots: whole, and as version and body.
    let empty = StateMachine::new().snapshot();
    let full = machine().snapshot();
    let mut kv_only = StateMachine::new();
    for (i, command) in crate::state::script(1)[..6].iter().enumerate() {
        kv_only.apply(i as u64 + 1, &command.encode());
    }
    let kv_only = kv_only.snapshot();
    for (name, bytes) in [("empty", &empty), ("full", &full), ("kv", &kv_only)] {
        out.push((format!("state-{name}"), with_mode(2, bytes)));
        // magic | version | body length u64 | body | crc u32
        let mut unsealed = vec![bytes[4]];
        unsealed.extend_from_slice(&bytes[13..bytes.len() - 4]);
        out.push((format!("state-{name}-unsealed"), with_mode(3, &unsealed)));
    }
    out
}

// ---- state_commands ------------------------------------------------------------

fn state_commands() -> Vec<(String, Vec<u8>)> {
    let script = crate::state::script(3);
    let mut out = Vec::new();
    let mut sm = StateMachine::new();
    for (i, command) in script.iter().enumerate() {
        out.push((format!("command-{i:02}"), command.encode().to_vec()));
        if let Ok(reply) = sm.apply(i as u64 + 1, &command.encode()).reply {
            out.push((format!("reply-{i:02}"), reply.encode().to_vec()));
        }
    }
    // The script as log entries, under each flag.
    for flags in 0..4u8 {
        let mut input = vec![flags];
        for (i, command) in script.iter().enumerate() {
            if i == 4 {
                crate::put_chunk(&mut input, &[]); // a no-op entry
            }
            crate::put_chunk(&mut input, &command.encode());
        }
        out.push((format!("log-flags-{flags}"), input));
    }
    // Sessions: retries, a stale sequence, several clients.
    let mut input = vec![3];
    for (client, seq) in [(1, 1), (1, 1), (1, 2), (1, 1), (2, 1), (3, 1), (1, 3)] {
        let op = script[0].op.clone();
        crate::put_chunk(&mut input, &Command::with_session(client, seq, op).encode());
    }
    out.push(("log-sessions".into(), input));
    // Auth: a root user, a limited user, enable, then requests as each.
    use ferrite_state::auth::{AuthRequest as A, PermKind, Permission, Principal};
    let auth = |req| Command::new(Op::Auth(req));
    let mut input = vec![3];
    let alice = Principal::user("alice", 6);
    for command in [
        auth(A::UserAdd {
            name: "root".into(),
            password: Some("$2b$04$hash".into()),
            no_password: false,
        }),
        auth(A::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        }),
        auth(A::UserAdd {
            name: "alice".into(),
            password: None,
            no_password: true,
        }),
        auth(A::RoleAdd { name: "r".into() }),
        auth(A::RoleGrantPermission {
            name: "r".into(),
            perm: Permission {
                kind: PermKind::ReadWrite,
                key: bytes::Bytes::from_static(b"a"),
                range_end: bytes::Bytes::from_static(b"\0"),
            },
        }),
        auth(A::UserGrantRole {
            user: "alice".into(),
            role: "r".into(),
        }),
        auth(A::Enable { secret: [7; 32] }),
        script[0].clone().by(alice.clone()),
        script[0].clone().by(Principal::Anonymous),
        auth(A::UserList).by(alice),
    ] {
        crate::put_chunk(&mut input, &command.encode());
    }
    out.push(("log-auth".into(), input));
    out
}

// ---- nbd_server --------------------------------------------------------------

/// What a client sends, built up.
#[derive(Default)]
struct Client(Vec<u8>);

impl Client {
    fn flags(mut self, flags: u32) -> Client {
        self.0.extend_from_slice(&flags.to_be_bytes());
        self
    }

    fn option(mut self, option: u32, data: &[u8]) -> Client {
        let length = u32::try_from(data.len()).expect("short option data");
        self.0
            .extend_from_slice(&OptionHeader { option, length }.encode());
        self.0.extend_from_slice(data);
        self
    }

    fn info(self, option: u32, name: &str, requests: &[u16]) -> Client {
        let data = InfoRequest {
            name: name.as_bytes().to_vec(),
            requests: requests.to_vec(),
        }
        .encode();
        self.option(option, &data)
    }

    fn request(mut self, command: u16, flags: u16, offset: u64, length: u32) -> Client {
        let handle = self.0.len() as u64;
        let header = RequestHeader {
            flags,
            command,
            handle,
            offset,
            length,
        };
        self.0.extend_from_slice(&header.encode());
        if command == CMD_WRITE {
            self.0.extend((0..length).map(|i| i as u8));
        }
        self
    }
}

fn nbd_server() -> Vec<(String, Vec<u8>)> {
    let both = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
    let io = |client: Client| {
        client
            .request(CMD_WRITE, 0, 0, 512)
            .request(CMD_READ, 0, 0, 512)
            .request(CMD_WRITE, CMD_FLAG_FUA, 4096, 100)
            .request(CMD_FLUSH, 0, 0, 0)
            .request(CMD_TRIM, 0, 1024, 2048)
            .request(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 4096)
            .request(CMD_READ, 0, 60 << 10, 8 << 10) // past the end
            .request(CMD_BLOCK_STATUS, 0, 0, 512) // not offered
            .request(CMD_READ, 0, 0, 0)
    };
    let go = Client::default().flags(both).info(
        OPT_GO,
        "disk0",
        &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE],
    );
    vec![
        (
            "go-io-disc".to_string(),
            io(go).request(CMD_DISC, 0, 0, 0).0,
        ),
        (
            "export-name-io-eof".into(),
            io(Client::default()
                .flags(FLAG_C_FIXED_NEWSTYLE)
                .option(OPT_EXPORT_NAME, b"disk0"))
            .0,
        ),
        (
            "haggle-abort".into(),
            Client::default()
                .flags(both)
                .option(OPT_LIST, &[])
                .option(OPT_LIST, b"junk")
                .info(OPT_INFO, "disk0", &[INFO_NAME])
                .info(OPT_INFO, "nope", &[])
                .option(OPT_INFO, &[0, 0, 0, 9, b'x'])
                .option(OPT_STRUCTURED_REPLY, &[])
                .option(OPT_STARTTLS, &[])
                .option(99, b"unknown")
                .info(OPT_GO, "", &[])
                .option(OPT_ABORT, &[])
                .0,
        ),
        (
            "go-empty-export".into(),
            Client::default()
                .flags(both)
                .info(OPT_GO, "nope", &[])
                .info(OPT_GO, "empty", &[])
                .request(CMD_READ, 0, 0, 1)
                .request(CMD_WRITE, 0, 0, 1)
                .request(CMD_FLUSH, 0, 0, 0)
                .request(CMD_DISC, 0, 0, 0)
                .0,
        ),
        (
            "export-name-unknown".into(),
            Client::default()
                .flags(both)
                .option(OPT_EXPORT_NAME, b"nope")
                .0,
        ),
        (
            "go-huge-io-disc".into(),
            Client::default()
                .flags(both)
                .info(OPT_GO, "huge", &[])
                .request(CMD_WRITE, 0, 1 << 39, 4096)
                .request(CMD_READ, 0, 1 << 39, 4096)
                .request(CMD_TRIM, 0, 0, u32::MAX)
                .request(CMD_WRITE_ZEROES, 0, 1 << 30, 1 << 20)
                .request(CMD_DISC, 0, 0, 0)
                .0,
        ),
        ("bad-flags".into(), Client::default().flags(0x80).0),
    ]
}

/// The seeds reach past the first checks of their targets: that is what
/// they are for.
#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<Seed> {
        all().into_iter().filter(|s| s.target == target).collect()
    }

    #[test]
    fn peer_streams_are_frames() {
        for seed in seeds("peer_frames") {
            if seed.name.starts_with("body-") {
                assert!(codec::decode(Bytes::from(seed.bytes)).is_ok());
                continue;
            }
            let frames = crate::runtime::block_on(async {
                let mut stream = &seed.bytes[..];
                let mut frames = 0;
                while codec::read_frame(&mut stream)
                    .await
                    .expect("a frame")
                    .is_some()
                {
                    frames += 1;
                }
                frames
            });
            assert!(frames > 0, "{}", seed.name);
        }
    }

    #[test]
    fn wal_seeds_recover_except_the_damaged_one() {
        for seed in seeds("wal_recovery") {
            let opened = Wal::open(crate::wal::disk(&seed.bytes), DIR, OPTIONS);
            match seed.name.as_str() {
                "damaged" => assert!(opened.is_err()),
                name => {
                    let (_, recovered) =
                        opened.unwrap_or_else(|e| panic!("{name} does not recover: {e}"));
                    let torn = name.contains("torn") || name == "structured-marks";
                    assert_eq!(recovered.torn_tail.is_some(), torn, "{name}");
                    if name != "fresh" {
                        assert!(!recovered.durable.entries.is_empty(), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn snapshot_seeds_restore() {
        for seed in seeds("snapshot_files") {
            let (mode, rest) = seed.bytes.split_first().expect("a mode byte");
            let data = match mode {
                0 | 1 => {
                    let file = match mode {
                        0 => rest.to_vec(),
                        _ => crate::snapshot::seal_wal_file(rest),
                    };
                    ferrite_wal::fuzzing::decode_snapshot_file(&file, "f")
                        .expect("a snapshot file")
                        .data
                        .to_vec()
                }
                2 => rest.to_vec(),
                _ => crate::snapshot::seal_state(rest),
            };
            let sm = StateMachine::restore(&data)
                .unwrap_or_else(|e| panic!("{} does not restore: {e}", seed.name));
            if !seed.name.contains("empty") {
                assert!(sm.applied_index() > 0, "{}", seed.name);
            }
        }
    }

    #[test]
    fn state_seeds_decode() {
        for seed in seeds("state_commands") {
            if seed.name.starts_with("command-") {
                assert!(Command::decode(&seed.bytes).is_ok(), "{}", seed.name);
            } else if seed.name.starts_with("reply-") {
                assert!(ferrite_state::Reply::decode(&seed.bytes).is_ok());
            } else {
                let mut entries = &seed.bytes[1..];
                while let Some(entry) = crate::chunk(&mut entries) {
                    assert!(entry.is_empty() || Command::decode(entry).is_ok());
                }
            }
        }
    }

    #[test]
    fn nbd_sessions_reach_transmission() {
        let reply_magic = SIMPLE_REPLY_MAGIC.to_be_bytes();
        for seed in seeds("nbd_server") {
            let replies = crate::runtime::block_on(crate::nbd::session(&seed.bytes));
            assert!(
                replies.starts_with(&NBDMAGIC.to_be_bytes()),
                "{}",
                seed.name
            );
            let transmission = replies.windows(4).any(|w| w == reply_magic);
            let expected = seed.name.contains("-io") || seed.name.contains("empty-export");
            assert_eq!(transmission, expected, "{}", seed.name);
        }
    }
}
