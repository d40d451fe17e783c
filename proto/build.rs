//! Compiles `raftgres/v1/*.proto` with the protoc shipped inside the
//! `protoc-bin-vendored` crate, so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = ["peer", "client", "kv", "cluster", "log"]
        .map(|name| PathBuf::from(format!("raftgres/v1/{name}.proto")));
    let descriptor_path = PathBuf::from(std::env::var("OUT_DIR")?).join("raftgres_descriptor.bin");
    tonic_build::configure()
        .file_descriptor_set_path(descriptor_path)
        .compile_protos(&protos, &[PathBuf::from(".")])?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
