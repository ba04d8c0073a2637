//! Target `snapshot_files`: the WAL's snapshot files
//! (`ferrite_wal`'s `snapshot_file.rs`) and the state machine's snapshot
//! encoding (`StateMachine::restore`), which such a file carries as its data.

use ferrite_state::StateMachine;
use ferrite_wal::fuzzing::decode_snapshot_file;

/// The state machine snapshot's magic.
const STATE_MAGIC: &[u8; 4] = b"FSSM";

/// The first byte says what the rest is. A "sealed" body gets its checksum
/// (and for the state machine, its envelope) from here, so that mutations
/// reach the decoder behind the checksum.
///
/// ```text
/// input = mode:u8 | rest
/// mode & 3: 0  rest is a WAL snapshot file
///           1  rest is a WAL snapshot file without its CRC32C
///           2  rest is a state machine snapshot
///           3  rest is version:u8 | body of a state machine snapshot
/// ```
///
/// The data of a snapshot file that decodes is restored as a state machine
/// snapshot too. A machine that restores must keep its invariants while it
/// applies a script of commands touching every part of it (which is what
/// the node does next), and must restore from its own snapshot to an equal
/// machine, before and after.
pub fn snapshot_files(data: &[u8]) {
    let _bound = crate::allocation::bound(data.len());
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode & 3 {
        0 => wal_file(rest),
        1 => wal_file(&seal_wal_file(rest)),
        2 => state(rest),
        _ => state(&seal_state(rest)),
    }
}

fn wal_file(bytes: &[u8]) {
    if let Ok(snapshot) = decode_snapshot_file(bytes, "fuzz.snap") {
        state(&snapshot.data);
    }
}

/// Appends the CRC32C a WAL snapshot file ends with.
pub(crate) fn seal_wal_file(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out
}

/// `version:u8 | body` into `magic | version | body length u64 | body | CRC-32`.
pub(crate) fn seal_state(rest: &[u8]) -> Vec<u8> {
    let (version, body) = rest.split_first().unwrap_or((&0, &[]));
    let mut out = STATE_MAGIC.to_vec();
    out.push(*version);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&ferrite_state::fuzzing::crc32(body).to_le_bytes());
    out
}

/// Restores `bytes` as a state machine snapshot (if it is one) and applies
/// a script of commands to it, checking invariants throughout.
pub(crate) fn restore_and_run(bytes: &[u8]) {
    state(bytes);
}

fn state(bytes: &[u8]) {
    let Ok(mut sm) = StateMachine::restore(bytes) else {
        return;
    };
    sm.check_invariants();
    crate::state::check_snapshot(&sm);
    for command in crate::state::script(sm.revision()) {
        let Some(index) = sm.applied_index().checked_add(1) else {
            break;
        };
        let applied = sm.apply(index, &command.encode());
        sm.check_invariants();
        if let Ok(reply) = &applied.reply {
            crate::state::check_reply(reply);
        }
    }
    crate::state::check_snapshot(&sm);
}
