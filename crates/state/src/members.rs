//! The member table: each member's name and addresses, replicated so that
//! every node answers etcd's MemberList the same way. Raft's configuration
//! says who votes; this says what to call them and where to reach them. A
//! member publishes its own entry when it starts; removal forgets it.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub(crate) by_id: BTreeMap<u64, MemberInfo>,
}

impl Members {
    pub fn get(&self, id: u64) -> Option<&MemberInfo> {
        self.by_id.get(&id)
    }

    pub fn list(&self) -> Vec<MemberInfo> {
        self.by_id.values().cloned().collect()
    }

    pub(crate) fn publish(&mut self, info: MemberInfo) {
        self.by_id.insert(info.id, info);
    }

    pub(crate) fn forget(&mut self, id: u64) {
        self.by_id.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Op, Reply, StateMachine};

    fn info(id: u64, name: &str) -> MemberInfo {
        MemberInfo {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
            client_urls: vec![format!("http://127.0.0.1:{}", 2379 + id)],
        }
    }

    #[test]
    fn publish_forget_list_survive_snapshots_and_travel_as_replies() {
        let mut sm = StateMachine::new();
        let apply = |sm: &mut StateMachine, index, op| {
            sm.apply(index, &Command::new(op).encode()).reply.unwrap()
        };
        apply(&mut sm, 1, Op::MemberPublish(info(7, "n1")));
        apply(&mut sm, 2, Op::MemberPublish(info(3, "n2")));
        let mut renamed = info(7, "n1-renamed");
        renamed.client_urls.push("http://10.0.0.1:2379".into());
        apply(&mut sm, 3, Op::MemberPublish(renamed.clone()));
        let listed = apply(&mut sm, 4, Op::MemberList);
        assert_eq!(listed, Reply::Members(vec![info(3, "n2"), renamed.clone()]));
        assert_eq!(Reply::decode(&listed.encode()).unwrap(), listed);

        let restored = StateMachine::restore(&sm.snapshot()).unwrap();
        assert_eq!(restored.members().list(), sm.members().list());

        let after = apply(&mut sm, 5, Op::MemberForget { id: 3 });
        assert_eq!(after, Reply::Members(vec![renamed]));
        assert!(sm.members().get(3).is_none());
        let cmd = Command::new(Op::MemberPublish(info(1, "x"))).encode();
        assert!(Command::decode(&cmd[..cmd.len() - 1]).is_err(), "truncated");
    }
}
