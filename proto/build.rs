//! Compiles `raftgres/v1/*.proto` and the etcd v3 API under `etcd/` with
//! the protoc shipped inside the `protoc-bin-vendored` crate, so a fresh
//! machine needs no system protoc.
//!
//! The two are compiled separately, each with its own file descriptor set:
//! the etcd files import each other relative to `etcd/` (as etcd's
//! clients expect), and a node advertises the etcd services through
//! reflection only where it serves them.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let raftgres_protos = ["peer", "client", "kv", "cluster", "log"]
        .map(|name| PathBuf::from(format!("raftgres/v1/{name}.proto")));
    tonic_build::configure()
        .file_descriptor_set_path(out_dir.join("raftgres_descriptor.bin"))
        .compile_protos(&raftgres_protos, &[PathBuf::from(".")])?;

    let etcd_protos = [
        "mvccpb/kv.proto",
        "etcdserverpb/rpc.proto",
        "v3lockpb/v3lock.proto",
        "v3electionpb/v3election.proto",
    ]
    .map(|name| Path::new("etcd").join(name));
    tonic_build::configure()
        .file_descriptor_set_path(out_dir.join("etcd_descriptor.bin"))
        .compile_protos(&etcd_protos, &[PathBuf::from("etcd")])?;

    for proto in raftgres_protos.iter().chain(&etcd_protos) {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
