//! etcd's response header: which cluster and member answered, at which
//! revision and Raft term. Every etcd and Ferrite gRPC reply carries one.

use ferrite_proto::etcdserverpb::ResponseHeader;
use ferrite_service::Context;

pub trait Header {
    fn header(&self, revision: i64) -> Option<ResponseHeader>;
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
}
