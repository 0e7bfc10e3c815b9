//! Compiles `protos/` with protox (pure Rust, so no `protoc` is needed) into prost messages.
//! gRPC services get tonic clients and servers; the shim protos (`containerd/shim/`)
//! and NRI's (`nri/`) are spoken over ttrpc, so only their messages are generated here.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn generate(
    files: &[PathBuf],
    root: &Path,
    grpc: bool,
    out_dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out_dir)?;
    let descriptors = protox::compile(files, [root])?;
    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` gives every message its full protobuf name, used for `Any` type URLs.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .out_dir(out_dir)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("protos");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=protos");

    // The shim's and NRI's protos travel over ttrpc: messages only.
    let ttrpc_dirs = [root.join("containerd").join("shim"), root.join("nri")];
    let (ttrpc, grpc): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|f| ttrpc_dirs.iter().any(|d| f.starts_with(d)));
    // The ttrpc pass regenerates the shared types with fewer messages, so it writes elsewhere
    // and lib.rs takes only the shim packages from there.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    generate(&grpc, &root, true, &out)?;
    generate(&ttrpc, &root, false, &out.join("ttrpc"))?;
    Ok(())
}
