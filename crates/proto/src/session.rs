//! What Ferrite's server and its clients agree on beyond the .proto files,
//! defined once for both sides: the session that makes a retried write apply
//! once, and the typed outcome a refusal carries.
//!
//! - `ferrite-session` request metadata, `<client id>/<sequence>`: a write
//!   retried with a sequence already applied gets the saved answer instead
//!   of applying again (a plain etcd client sends none: at-least-once).
//! - `ferrite-outcome` response metadata on an error: whether the request
//!   was definitely not applied, may have been, or found no leader. Clients
//!   decide retries from it, never from the message text.

use std::fmt;
use std::str::FromStr;

/// Request metadata naming a write's session.
pub const SESSION_METADATA: &str = "ferrite-session";
/// Error metadata saying what became of the request.
pub const OUTCOME_METADATA: &str = "ferrite-outcome";

/// One write of one client: `client` names the session (0 is none),
/// `seq` counts its writes from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {SESSION_METADATA} metadata {0:?}: expected <client id>/<sequence>, sequence from 1")]
pub struct BadSession(pub String);

impl Session {
    /// Parses metadata; `Ok(None)` for client 0 (no session).
    pub fn parse(text: &str) -> Result<Option<Session>, BadSession> {
        let bad = || BadSession(text.chars().take(64).collect());
        let (client, seq) = text.split_once('/').ok_or_else(bad)?;
        let client: u64 = client.parse().map_err(|_| bad())?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        match (client, seq) {
            (0, _) => Ok(None),
            (_, 0) => Err(bad()),
            (client, seq) => Ok(Some(Session { client, seq })),
        }
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client, self.seq)
    }
}

/// What became of a request that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Definitely not applied: send it again, here or elsewhere.
    NotApplied,
    /// Not applied, and this member knows no leader (it may be the one cut
    /// off): send it again to another member.
    NoLeader,
    /// May have been applied: only a write in a session may be sent again.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotApplied => "not-applied",
            Outcome::NoLeader => "no-leader",
            Outcome::Unknown => "unknown",
        }
    }

    /// The outcome a gRPC error carries, if the server said.
    pub fn of(status: &tonic::Status) -> Option<Outcome> {
        status
            .metadata()
            .get(OUTCOME_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// Marks `status` with this outcome.
    pub fn mark(self, mut status: tonic::Status) -> tonic::Status {
        status.metadata_mut().insert(
            OUTCOME_METADATA,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }
}

impl FromStr for Outcome {
    type Err = ();
    fn from_str(s: &str) -> Result<Outcome, ()> {
        match s {
            "not-applied" => Ok(Outcome::NotApplied),
            "no-leader" => Ok(Outcome::NoLeader),
            "unknown" => Ok(Outcome::Unknown),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_parse_and_print() {
        let s = Session { client: 7, seq: 3 };
        assert_eq!(Session::parse(&s.to_string()), Ok(Some(s)));
        assert_eq!(Session::parse("0/5"), Ok(None));
        for bad in ["", "7", "7/0", "x/1", "1/y", "-1/2", "1/2/3"] {
            assert!(Session::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcomes_travel_in_metadata() {
        for o in [Outcome::NotApplied, Outcome::NoLeader, Outcome::Unknown] {
            let status = o.mark(tonic::Status::unavailable("etcdserver: x"));
            assert_eq!(Outcome::of(&status), Some(o));
        }
        assert_eq!(Outcome::of(&tonic::Status::unavailable("x")), None);
    }
}
