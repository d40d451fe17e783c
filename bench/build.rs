//! Compiles the etcd v3 API subset in `proto/etcdserverpb/rpc.proto` (client
//! side only) with the protoc shipped inside `protoc-bin-vendored`, as the
//! proto crate does, so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let proto = PathBuf::from("proto/etcdserverpb/rpc.proto");
    tonic_build::configure()
        .build_server(false)
        .compile_protos(std::slice::from_ref(&proto), &[PathBuf::from("proto")])?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
