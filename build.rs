//! Compiles `proto/edgechat/v1/*.proto` with `protox` (pure Rust, so no system `protoc` is
//! needed) and generates prost messages plus tonic clients and servers. The encoded descriptor
//! set is written beside the generated code for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/edgechat/v1/common.proto",
        "proto/edgechat/v1/auth.proto",
        "proto/edgechat/v1/rooms.proto",
        "proto/edgechat/v1/chat.proto",
        "proto/edgechat/v1/admin.proto",
        "proto/edgechat/v1/attachments.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // The web app embedded by `src/web.rs`: a file added to the bundle rebuilds the crate
    // (rust-embed's own tracking sees changed and removed files, not new ones).
    println!("cargo:rerun-if-changed=web/dist");
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("edgechat_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // An RPC named `Connect` clashes with the generated `connect()` constructor; we build
        // channels ourselves (see `client`).
        .build_transport(false)
        // RPCs a later milestone implements answer UNIMPLEMENTED until then.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
