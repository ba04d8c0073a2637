//! The command codec: every generated command round trips, and damaged or
//! random bytes are refused (or decode to something) without panicking.

mod common;

use common::*;
use ferrite_state::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn commands_round_trip(cmd in command()) {
        prop_assert_eq!(Command::decode(&cmd.encode()), Ok(cmd));
    }

    #[test]
    fn truncated_commands_are_refused(cmd in command(), cut in any::<prop::sample::Index>()) {
        let bytes = cmd.encode();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(Command::decode(&bytes[..cut]), Err(DecodeError::Truncated));
    }

    #[test]
    fn damaged_commands_never_panic(
        cmd in command(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = cmd.encode().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(other) = Command::decode(&bytes) {
            prop_assert_eq!(other.encode().len(), bytes.len());
        }
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = Command::decode(&data);
        let mut sm = StateMachine::new();
        let applied = sm.apply(1, &data);
        prop_assert!(applied.reply.is_err() || Command::decode(&data).is_ok());
    }
}
