//! Generates the CRI types and services from the unmodified api.proto, without a system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_dir.join("api.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps (labels, annotations, info) as BTreeMap: a record's sorted map is copied into a
        // reply without hashing every key, and replies list their entries in a stable order.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
