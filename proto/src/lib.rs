//! The `akashi.v1` gRPC contract: `.proto` files (in `proto/akashi/v1/`) and the tonic/prost code
//! generated from them at build time, with no system `protoc` (protox parses the files).
//!
//! Everything lives in [`pb`]: messages, and for each service a `*_client` module (tonic client)
//! and a `*_server` module (service trait and tonic server), e.g.
//! `proto::pb::consent_service_server::ConsentServiceServer`. [`FILE_DESCRIPTOR_SET`] feeds
//! server reflection.
//!
//! This crate holds no hand-written logic beyond [`codec`] (decode errors are
//! `INVALID_ARGUMENT`): validation, conversion into domain types and the rest of the status
//! mapping belong to the `akashi` server crate.

pub mod codec;

mod generated {
    #![allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        rust_2018_idioms,
        reason = "generated code"
    )]
    include!(concat!(env!("OUT_DIR"), "/akashi.v1.rs"));
}

/// Generated messages, clients and servers of package `akashi.v1`.
pub mod pb {
    pub use crate::generated::*;
}

/// Encoded `google.protobuf.FileDescriptorSet` of package `akashi.v1` (with its imports and
/// source comments), for registering with server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/akashi_descriptor.bin"));

#[cfg(test)]
mod tests;
