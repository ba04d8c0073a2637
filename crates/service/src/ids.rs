//! Member identities. A member's id is derived from the peer address it
//! advertises, so that every founding member computes the same ids from the
//! same `--initial-cluster`, and a member added later (by its peer address,
//! as etcd's MemberAdd does) gets the id it will compute for itself.

use std::net::SocketAddr;

use ferrite_raft::NodeId;

pub fn node_id(peer: SocketAddr) -> NodeId {
    // FNV-1a of the address text; kept below 2^62 (the core's bound on
    // wire values) and never 0 (reserved for "no node").
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in peer.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    NodeId((h >> 2).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_in_range() {
        let a = node_id("127.0.0.1:2380".parse().unwrap());
        let b = node_id("127.0.0.1:22380".parse().unwrap());
        assert_eq!(a, node_id("127.0.0.1:2380".parse().unwrap()));
        assert_ne!(a, b);
        assert!(a.0 > 0 && a.0 < 1 << 62);
    }
}
