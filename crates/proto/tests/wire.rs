//! Wire compatibility: tonic servers built from our .proto files, driven by
//! the `etcd-client` crate (which is generated from etcd's own .proto files),
//! and ferrite's Registers service through our own generated client.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ferrite_proto::etcdserverpb::{
    cluster_server::{Cluster, ClusterServer},
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_server::{Kv, KvServer},
    maintenance_server::{Maintenance, MaintenanceServer},
    request_op, response_op, Compare, Member, MemberListRequest, MemberListResponse,
    MoveLeaderRequest, MoveLeaderResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, ResponseOp, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
};
use ferrite_proto::ferrite::v1::{
    registers_client::RegistersClient,
    registers_server::{Registers, RegistersServer},
    AddRequest, AddResponse, CompareAndSetRequest, CompareAndSetResponse, GetRequest, GetResponse,
    SetRequest, SetResponse,
};
use ferrite_proto::mvccpb::KeyValue;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const CLUSTER_ID: u64 = 0x00c1_u64 << 48 | 0x0dd;
const MEMBER_ID: u64 = 0x8e9e_05c5_2164_694d;
const TERM: u64 = 7;
/// The fake store starts at this revision so revisions are recognisable.
const FIRST_REVISION: i64 = 100;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision,
        raft_term: TERM,
    })
}

// ------------------------------------------------------------ fake etcd node

#[derive(Default)]
struct Store {
    revision: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
}

impl Store {
    fn put(&mut self, req: &PutRequest) -> PutResponse {
        self.revision += 1;
        let rev = self.revision;
        let prev = self.kvs.get(&req.key).cloned();
        let kv = KeyValue {
            key: req.key.clone().into(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: req.value.clone().into(),
            lease: req.lease,
        };
        self.kvs.insert(req.key.clone(), kv);
        PutResponse {
            header: header(rev),
            prev_kv: if req.prev_kv { prev } else { None },
        }
    }

    fn range(&self, req: &RangeRequest) -> RangeResponse {
        let kvs: Vec<KeyValue> = if req.range_end.is_empty() {
            self.kvs.get(&req.key).cloned().into_iter().collect()
        } else {
            self.kvs
                .range(req.key.clone()..)
                .take_while(|(k, _)| req.range_end == [0] || **k < req.range_end)
                .map(|(_, v)| v.clone())
                .collect()
        };
        RangeResponse {
            header: header(self.revision),
            count: kvs.len() as i64,
            kvs,
            more: false,
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kv = self.kvs.get(&c.key).cloned().unwrap_or_default();
        let ord = match (c.target(), &c.target_union) {
            (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
            (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
                kv.create_revision.cmp(v)
            }
            (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
            (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value[..].cmp(&v[..]),
            (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
            _ => return false,
        };
        match c.result() {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
            CompareResult::NotEqual => ord.is_ne(),
        }
    }
}

#[derive(Clone, Default)]
struct FakeEtcd {
    store: Arc<Mutex<Store>>,
    moved_to: Arc<Mutex<Option<u64>>>,
}

impl FakeEtcd {
    fn new() -> Self {
        let me = Self::default();
        me.store.lock().unwrap().revision = FIRST_REVISION;
        me
    }
}

#[tonic::async_trait]
impl Kv for FakeEtcd {
    async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(self.store.lock().unwrap().range(r.get_ref())))
    }

    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.store.lock().unwrap().put(r.get_ref())))
    }

    async fn txn(&self, r: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = r.into_inner();
        let mut store = self.store.lock().unwrap();
        let succeeded = req.compare.iter().all(|c| store.compare(c));
        let ops = if succeeded { req.success } else { req.failure };
        let mut responses = Vec::new();
        for op in ops {
            let response = match op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(store.put(&p))
                }
                Some(request_op::Request::RequestRange(g)) => {
                    response_op::Response::ResponseRange(store.range(&g))
                }
                _ => return Err(Status::unimplemented("op not supported by the fake")),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(Response::new(TxnResponse {
            header: header(store.revision),
            succeeded,
            responses,
        }))
    }
    // DeleteRange and Compact keep the generated UNIMPLEMENTED stubs.
}

fn members() -> Vec<Member> {
    let member = |id: u64, n: u32, learner: bool| Member {
        id,
        name: format!("n{n}"),
        peer_ur_ls: vec![format!("http://127.0.0.1:{}", 2380 + 10 * n)],
        client_ur_ls: vec![format!("http://127.0.0.1:{}", 2379 + 10 * n)],
        is_learner: learner,
    };
    vec![
        member(MEMBER_ID, 1, false),
        member(0x2, 2, false),
        member(0x3, 3, true),
    ]
}

#[tonic::async_trait]
impl Cluster for FakeEtcd {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: header(self.store.lock().unwrap().revision),
            members: members(),
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for FakeEtcd {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            header: header(self.store.lock().unwrap().revision),
            version: "3.5.0".into(),
            db_size: 4096,
            leader: MEMBER_ID,
            raft_index: 42,
            raft_term: TERM,
            raft_applied_index: 41,
            errors: vec!["none really".into()],
            db_size_in_use: 2048,
            is_learner: false,
            ..Default::default()
        }))
    }

    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        *self.moved_to.lock().unwrap() = Some(r.get_ref().target_id);
        Ok(Response::new(MoveLeaderResponse {
            header: header(self.store.lock().unwrap().revision),
        }))
    }
}

// ---------------------------------------------------------- fake registers

#[derive(Default)]
struct RegisterState {
    values: HashMap<String, i64>,
    /// client_id -> (last applied sequence, the value it answered).
    sessions: HashMap<u64, (u64, i64)>,
    index: i64,
}

#[derive(Clone, Default)]
struct FakeRegisters(Arc<Mutex<RegisterState>>);

impl FakeRegisters {
    /// Applies `op` at most once per (client_id, sequence); returns its answer.
    fn write(
        &self,
        client: u64,
        seq: u64,
        op: impl FnOnce(&mut HashMap<String, i64>) -> i64,
    ) -> (i64, i64) {
        let mut st = self.0.lock().unwrap();
        if client != 0 {
            if let Some(&(last, answer)) = st.sessions.get(&client) {
                if seq <= last {
                    return (answer, st.index);
                }
            }
        }
        st.index += 1;
        let answer = op(&mut st.values);
        if client != 0 {
            st.sessions.insert(client, (seq, answer));
        }
        (answer, st.index)
    }
}

#[tonic::async_trait]
impl Registers for FakeRegisters {
    async fn get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let st = self.0.lock().unwrap();
        let v = st.values.get(&r.get_ref().name);
        Ok(Response::new(GetResponse {
            header: header(st.index),
            value: v.copied().unwrap_or(0),
            exists: v.is_some(),
        }))
    }

    async fn set(&self, r: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let q = r.into_inner();
        let (previous, index) = self.write(q.client_id, q.sequence, |m| {
            m.insert(q.name.clone(), q.value).unwrap_or(0)
        });
        Ok(Response::new(SetResponse {
            header: header(index),
            value: q.value,
            previous,
        }))
    }

    async fn add(&self, r: Request<AddRequest>) -> Result<Response<AddResponse>, Status> {
        let q = r.into_inner();
        let (value, index) = self.write(q.client_id, q.sequence, |m| {
            let v = m.entry(q.name.clone()).or_insert(0);
            *v += q.delta;
            *v
        });
        Ok(Response::new(AddResponse {
            header: header(index),
            value,
        }))
    }

    async fn compare_and_set(
        &self,
        r: Request<CompareAndSetRequest>,
    ) -> Result<Response<CompareAndSetResponse>, Status> {
        let q = r.into_inner();
        let mut succeeded = false;
        let (current, index) = self.write(q.client_id, q.sequence, |m| {
            let v = m.entry(q.name.clone()).or_insert(0);
            if *v == q.expected {
                *v = q.new_value;
                succeeded = true;
            }
            *v
        });
        Ok(Response::new(CompareAndSetResponse {
            header: header(index),
            succeeded,
            current,
        }))
    }
}

// -------------------------------------------------------------------- setup

async fn serve(etcd: FakeEtcd, registers: FakeRegisters) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(etcd.clone()))
            .add_service(ClusterServer::new(etcd.clone()))
            .add_service(MaintenanceServer::new(etcd))
            .add_service(RegistersServer::new(registers))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

async fn etcd_client(addr: SocketAddr) -> etcd_client::Client {
    etcd_client::Client::connect([format!("http://{addr}")], None)
        .await
        .expect("connect")
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn etcd_client_put_get_txn() {
    let addr = serve(FakeEtcd::new(), FakeRegisters::default()).await;
    let mut c = etcd_client(addr).await;

    let put = c.put("greeting", "hello", None).await.unwrap();
    let h = put.header().unwrap();
    assert_eq!(h.cluster_id(), CLUSTER_ID);
    assert_eq!(h.member_id(), MEMBER_ID);
    assert_eq!(h.revision(), FIRST_REVISION + 1);
    assert_eq!(h.raft_term(), TERM);

    c.put("greeting", "hello again", None).await.unwrap();
    let got = c.get("greeting", None).await.unwrap();
    assert_eq!(got.header().unwrap().revision(), FIRST_REVISION + 2);
    assert_eq!(got.count(), 1);
    let kv = &got.kvs()[0];
    assert_eq!(kv.key(), b"greeting");
    assert_eq!(kv.value_str().unwrap(), "hello again");
    assert_eq!(kv.create_revision(), FIRST_REVISION + 1);
    assert_eq!(kv.mod_revision(), FIRST_REVISION + 2);
    assert_eq!(kv.version(), 2);

    // Prefix read exercises range_end.
    c.put("greet2", "x", None).await.unwrap();
    let opts = etcd_client::GetOptions::new().with_prefix();
    let got = c.get("greet", Some(opts)).await.unwrap();
    assert_eq!(got.kvs().len(), 2);

    // Txn: Compare (oneof target_union) + RequestOp/ResponseOp oneofs.
    use etcd_client::{Compare as C, CompareOp, Txn, TxnOp, TxnOpResponse};
    let txn = Txn::new()
        .when([C::value("greeting", CompareOp::Equal, "hello again")])
        .and_then([
            TxnOp::put("greeting", "swapped", None),
            TxnOp::get("greeting", None),
        ])
        .or_else([TxnOp::get("greeting", None)]);
    let resp = c.txn(txn.clone()).await.unwrap();
    assert!(resp.succeeded());
    let ops = resp.op_responses();
    assert!(matches!(&ops[0], TxnOpResponse::Put(_)));
    match &ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"swapped"),
        _ => panic!("expected a range response"),
    }
    // Same txn again: compare fails now, the failure branch runs.
    let resp = c.txn(txn).await.unwrap();
    assert!(!resp.succeeded());
    assert_eq!(resp.op_responses().len(), 1);

    // Methods the fake leaves to the generated stubs answer UNIMPLEMENTED.
    match c.delete("greeting", None).await {
        Err(etcd_client::Error::GRpcStatus(s)) => assert_eq!(s.code(), tonic::Code::Unimplemented),
        other => panic!("expected UNIMPLEMENTED, got {other:?}"),
    }
}

#[tokio::test]
async fn etcd_client_cluster_and_maintenance() {
    let etcd = FakeEtcd::new();
    let addr = serve(etcd.clone(), FakeRegisters::default()).await;
    let mut c = etcd_client(addr).await;

    let list = c.member_list().await.unwrap();
    assert_eq!(list.header().unwrap().cluster_id(), CLUSTER_ID);
    let ms = list.members();
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[0].id(), MEMBER_ID);
    assert_eq!(ms[0].name(), "n1");
    assert_eq!(ms[0].peer_urls(), ["http://127.0.0.1:2390"]);
    assert_eq!(ms[0].client_urls(), ["http://127.0.0.1:2389"]);
    assert!(!ms[0].is_learner());
    assert!(ms[2].is_learner());

    let st = c.status().await.unwrap();
    assert_eq!(st.header().unwrap().member_id(), MEMBER_ID);
    assert_eq!(st.version(), "3.5.0");
    assert_eq!(st.leader(), MEMBER_ID);
    assert_eq!(st.raft_term(), TERM);
    assert_eq!(st.raft_index(), 42);
    assert_eq!(st.raft_applied_index(), 41);
    assert_eq!(st.db_size(), 4096);
    assert_eq!(st.raft_used_db_size(), 2048);
    assert_eq!(st.errors(), ["none really"]);
    assert!(!st.is_learner());

    c.move_leader(0x2).await.unwrap();
    assert_eq!(*etcd.moved_to.lock().unwrap(), Some(0x2));
}

#[tokio::test]
async fn registers_round_trip() {
    let addr = serve(FakeEtcd::new(), FakeRegisters::default()).await;
    let mut c = RegistersClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let client_id = 0xfeed;

    let got = c
        .get(GetRequest {
            name: "visits".into(),
            serializable: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.value, got.exists), (0, false));
    assert_eq!(got.header.unwrap().cluster_id, CLUSTER_ID);

    let set = c
        .set(SetRequest {
            name: "visits".into(),
            value: 10,
            client_id,
            sequence: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.value, set.previous), (10, 0));

    let add = AddRequest {
        name: "visits".into(),
        delta: 5,
        client_id,
        sequence: 2,
    };
    let a1 = c.add(add.clone()).await.unwrap().into_inner();
    assert_eq!(a1.value, 15);
    // A retry with the same (client_id, sequence) is answered, not re-applied.
    let a2 = c.add(add).await.unwrap().into_inner();
    assert_eq!(a2.value, 15);

    let cas = |expected, new_value, sequence| CompareAndSetRequest {
        name: "visits".into(),
        expected,
        new_value,
        client_id,
        sequence,
    };
    let miss = c.compare_and_set(cas(1, 2, 3)).await.unwrap().into_inner();
    assert_eq!((miss.succeeded, miss.current), (false, 15));
    let hit = c
        .compare_and_set(cas(15, 20, 4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((hit.succeeded, hit.current), (true, 20));
    assert!(hit.header.unwrap().revision > 0);

    let got = c
        .get(GetRequest {
            name: "visits".into(),
            serializable: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.value, got.exists), (20, true));
}
