//! etcd's response header: which cluster and member answered, at which
//! revision and Raft term. Every etcd and Ferrite gRPC reply carries one.

use ferrite_proto::etcdserverpb::ResponseHeader;
use ferrite_service::Context;

pub trait Header {
    fn header(&self, revision: i64) -> Option<ResponseHeader>;

    /// At this member's current revision (its last applied change), as
    /// etcd fills the header of replies that are not about one revision
    /// (Cluster, Maintenance, Auth, Lease).
    fn header_now(&self) -> Option<ResponseHeader>;
}

impl Header for Context {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term(),
        })
    }

    fn header_now(&self) -> Option<ResponseHeader> {
        self.header(self.events.revision())
    }
}
