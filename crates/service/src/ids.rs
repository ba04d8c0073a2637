//! Member identities. A member's id is derived from the peer address it
//! advertises, so that every founding member computes the same ids from the
//! same `--initial-cluster`, and a member added later (by its peer URL, as
//! etcd's MemberAdd does) gets the id it will compute for itself.
//!
//! The id hashes the address's `host:port` text (`PeerAddr`'s, without the
//! scheme): for an IP address that is exactly the `SocketAddr` text ids
//! were made from before host names were allowed, so existing members and
//! data directories keep their ids; a host name is hashed lowercase. The
//! scheme is left out so that turning peer TLS on (http -> https) changes
//! no id. One member is one spelling: `n1=http://h1:2380` and
//! `n1=http://10.0.0.1:2380` are two different ids, so a cluster must
//! name its members the same way everywhere (as etcd requires its peer URLs
//! to match).

use ferrite_node::PeerAddr;
use ferrite_raft::NodeId;

/// The id of the member advertising `peer` (a `SocketAddr` or a `PeerAddr`).
pub fn node_id(peer: impl Into<PeerAddr>) -> NodeId {
    // FNV-1a of the address text; kept below 2^62 (the core's bound on
    // wire values) and never 0 (reserved for "no node").
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in peer.into().to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    NodeId((h >> 2).max(1))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn url(text: &str) -> PeerAddr {
        PeerAddr::parse(text).unwrap()
    }

    #[test]
    fn ids_are_stable_distinct_and_in_range() {
        let a = node_id("127.0.0.1:2380".parse::<SocketAddr>().unwrap());
        let b = node_id("127.0.0.1:22380".parse::<SocketAddr>().unwrap());
        assert_eq!(a, node_id("127.0.0.1:2380".parse::<SocketAddr>().unwrap()));
        assert_ne!(a, b);
        assert!(a.0 > 0 && a.0 < 1 << 62);
    }

    /// Ids of IP:port members are what they were when ids hashed a
    /// `SocketAddr` (the values the old
    /// `node_id(SocketAddr)` gave), whatever the URL's
    /// scheme: existing data directories keep working.
    #[test]
    fn ip_peer_urls_keep_their_old_ids() {
        let old = [
            ("127.0.0.1:2380", 0x14c0_a200_6abf_d746u64),
            ("10.250.0.1:2380", 0x0898_2558_3de3_361cu64),
            ("[::1]:2380", 0x1638_75a2_3ba6_30c1u64),
        ];
        for (text, id) in old {
            let sa: SocketAddr = text.parse().unwrap();
            assert_eq!(node_id(sa).0, id, "{text}");
            assert_eq!(node_id(url(&format!("http://{text}"))).0, id, "{text}");
            assert_eq!(node_id(url(&format!("https://{text}/"))).0, id, "{text}");
        }
    }

    #[test]
    fn host_names_have_their_own_ids_whatever_their_case() {
        let name = node_id(url("http://ferrite-0.ferrite-peer:2380"));
        assert_eq!(name, node_id(url("https://FERRITE-0.ferrite-peer:2380")));
        assert_ne!(name, node_id(url("http://ferrite-1.ferrite-peer:2380")));
        assert_ne!(name, node_id(url("http://ferrite-0.ferrite-peer:2381")));
    }
}
