//! Generates the Rust gRPC code from `proto/` without a `protoc` binary:
//! `protox` (pure Rust) parses the .proto files into a FileDescriptorSet,
//! which `tonic-prost-build` turns into prost messages plus tonic clients
//! and servers, and `pbjson-build` into serde impls (the JSON gateway).

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "ferrite/ferrite.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{p}");
    }

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    for p in PROTOS {
        compiler.open_file(p).map_err(|e| format!("{p}: {e}"))?;
    }

    // Kept for gRPC server reflection or tooling (`FILE_DESCRIPTOR_SET`).
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ferrite_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Servers need only implement what they serve; the rest answers
        // UNIMPLEMENTED, which is what etcd clients expect for absent features.
        .generate_default_stubs(true)
        // Keys and values as shared `Bytes`: a watch event goes out to every
        // watcher of its key, and each copy is then a reference count, not
        // an allocation and a copy of the value.
        .bytes(".mvccpb.KeyValue")
        .compile_fds(compiler.file_descriptor_set())?;

    // JSON for etcd's gRPC gateway (`/v3/kv/range` and friends): serde
    // impls as grpc-gateway's `JSONPb{OrigName: true}` writes them — proto
    // field names out (both spellings accepted in), 64-bit integers as
    // strings, bytes as base64, enums by name, zero values left out.
    pbjson_build::Builder::new()
        .register_descriptors(&compiler.encode_file_descriptor_set())?
        .preserve_proto_field_names()
        // grpc-gateway (as etcd vendors it) ignores fields it does not know.
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
