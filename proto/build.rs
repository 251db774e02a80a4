//! Compiles `proto/akashi/v1/*.proto` in-process (protox, no system `protoc`) into tonic/prost
//! code and an encoded `FileDescriptorSet` for server reflection, both in `OUT_DIR`.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

/// The `.proto` files of package `akashi.v1`, relative to the include root `proto/`.
const PROTOS: &[&str] = &[
    "akashi/v1/access.proto",
    "akashi/v1/audit.proto",
    "akashi/v1/common.proto",
    "akashi/v1/consent.proto",
    "akashi/v1/directory.proto",
    "akashi/v1/erasure.proto",
    "akashi/v1/history.proto",
    "akashi/v1/policy.proto",
    "akashi/v1/transparency.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let include = PathBuf::from("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", include.join(proto).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, [&include])?;
    fs::write(out_dir.join("akashi_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // Decode errors are INVALID_ARGUMENT, not tonic-prost's INTERNAL (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
