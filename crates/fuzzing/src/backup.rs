//! Target `backup_files`: the backup file of `Maintenance.Snapshot` and
//! `ferrite snapshot save|status|restore` (`ferrite_state::backup`), read
//! whole (`decode`) and as a stream (`read`), and the state it carries.
//!
//! ```text
//! input = mode:u8 | rest
//! mode & 1: 0  rest is a backup file
//!           1  rest is the state bytes; the header, padding and hash are
//!              made here, so that mutations reach the state's decoder
//! ```
//!
//! Oracles: the in-memory and streamed readers agree on every input (both
//! refuse it, or both return the same header and state); a file made by
//! the writer reads back with the same header and state; a state that
//! restores keeps its invariants through a script of commands.

use ferrite_state::backup::{self, BackupMeta};
use ferrite_state::StateMachine;

pub fn backup_files(data: &[u8]) {
    let _bound = crate::allocation::bound(data.len());
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        file(rest);
    } else {
        let meta = BackupMeta::of(&StateMachine::new(), 0);
        let sealed = backup::encode(meta, bytes::Bytes::copy_from_slice(rest));
        let (got, state) = backup::decode(&sealed).expect("a file the writer made reads back");
        assert_eq!(state, rest, "the state round-trips");
        assert_eq!(got.state_len, rest.len() as u64);
        file(&sealed);
    }
}

fn file(bytes: &[u8]) {
    let whole = backup::decode(bytes);
    let streamed = backup::read(bytes, bytes.len() as u64, true);
    match (whole, streamed) {
        (Ok((meta, state)), Ok(v)) => {
            assert_eq!(meta, v.meta, "the readers agree on the header");
            assert_eq!(Some(state), v.state.as_deref(), "and on the state");
            crate::snapshot::restore_and_run(state);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "the readers disagree: {:?} / {:?}",
            a.map(|x| x.0),
            b.map(|v| v.meta)
        ),
    }
}
