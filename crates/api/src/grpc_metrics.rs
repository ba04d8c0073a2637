//! gRPC server counters as go-grpc-prometheus names them (what etcd's
//! dashboards and alerts read): `grpc_server_started_total` and
//! `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`.
//! Every served method is listed from the start (with 0), as
//! go-grpc-prometheus pre-registers them; calls through the JSON gateway
//! count too, as they do in etcd (its gateway calls its gRPC server).
//!
//! A call is started when its request arrives and handled when its status
//! is known: in the reply's head for a call that failed at once, else in
//! its trailers; a reply dropped before its end (the client went away)
//! counts as `Canceled`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::service::Routes;
use tonic::Code;
use tonic_prost::prost::Message;
use tower::ServiceExt;

/// One served method's labels.
#[derive(Clone, Debug)]
struct Method {
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    kind: &'static str,
    service: String,
    method: String,
}

/// The counters; shared by every connection of the client port.
#[derive(Debug, Default)]
pub struct GrpcMetrics {
    /// By path (`/pkg.Service/Method`), from the file descriptor sets.
    methods: BTreeMap<String, Method>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    started: BTreeMap<String, u64>,
    handled: BTreeMap<(String, i32), u64>,
}

/// go-grpc-prometheus's code names (Go's `codes.Code.String()`).
fn code_name(code: i32) -> &'static str {
    match Code::from_i32(code) {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl GrpcMetrics {
    /// Counters for the methods of every service in `descriptor_sets`
    /// (encoded `FileDescriptorSet`s).
    pub fn new(descriptor_sets: &[&[u8]]) -> GrpcMetrics {
        let mut methods = BTreeMap::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    for m in service.method {
                        let kind = match (
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let method = m.name.unwrap_or_default();
                        methods.insert(
                            format!("/{full}/{method}"),
                            Method {
                                kind,
                                service: full.clone(),
                                method,
                            },
                        );
                    }
                }
            }
        }
        GrpcMetrics {
            methods,
            counts: Mutex::default(),
        }
    }

    fn started(&self, path: &str) {
        if self.methods.contains_key(path) {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *counts.started.entry(path.to_string()).or_default() += 1;
        }
    }

    fn handled(&self, path: &str, code: i32) {
        if self.methods.contains_key(path) {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *counts.handled.entry((path.to_string(), code)).or_default() += 1;
        }
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter"
        );
        for (path, m) in &self.methods {
            let n = counts.started.get(path).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "grpc_server_started_total{{grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"}} {n}",
                m.method, m.service, m.kind
            );
        }
        let _ = writeln!(
            out,
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter"
        );
        for ((path, code), n) in &counts.handled {
            if let Some(m) = self.methods.get(path) {
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{}\",grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"}} {n}",
                    code_name(*code),
                    m.method,
                    m.service,
                    m.kind
                );
            }
        }
    }
}

/// The gRPC services with their counters: what the client port's gRPC
/// requests and the gateway's in-process calls go through.
#[derive(Clone)]
pub struct CountedRoutes {
    pub routes: Routes,
    pub require_leader: crate::require_leader::RequireLeaderLayer,
    pub metrics: Arc<GrpcMetrics>,
}

impl CountedRoutes {
    pub async fn call<B>(&self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let path = request.uri().path().to_string();
        self.metrics.started(&path);
        let routes = tower::Layer::layer(&self.require_leader, self.routes.clone());
        let response = match routes.oneshot(request).await {
            Ok(response) => response.map(tonic::body::Body::new),
            Err(never) => match never {},
        };
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            self.metrics.handled(&path, status.code() as i32);
            return response;
        }
        let metrics = Some((self.metrics.clone(), path));
        response.map(|inner| tonic::body::Body::new(CountedBody { inner, metrics }))
    }
}

/// A reply body that counts its call as handled once its status passes.
struct CountedBody {
    inner: tonic::body::Body,
    /// Taken when the call is counted.
    metrics: Option<(Arc<GrpcMetrics>, String)>,
}

impl CountedBody {
    fn count(&mut self, code: i32) {
        if let Some((metrics, path)) = self.metrics.take() {
            metrics.handled(&path, code);
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = tonic::Status::from_header_map(trailers)
                        .map_or(Code::Ok as i32, |s| s.code() as i32);
                    self.count(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code() as i32;
                self.count(code);
            }
            Poll::Ready(None) => self.count(Code::Ok as i32),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.count(Code::Cancelled as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_with_their_kinds() {
        let m = GrpcMetrics::new(&[ferrite_proto::FILE_DESCRIPTOR_SET]);
        assert_eq!(m.methods["/etcdserverpb.KV/Range"].kind, "unary");
        assert_eq!(m.methods["/etcdserverpb.Watch/Watch"].kind, "bidi_stream");
        m.started("/etcdserverpb.KV/Range");
        m.handled("/etcdserverpb.KV/Range", 0);
        m.started("/not.a/Method");
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "grpc_server_started_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1"
        ), "{out}");
        assert!(out.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1"
        ), "{out}");
        assert!(!out.contains("not.a"));
    }
}
