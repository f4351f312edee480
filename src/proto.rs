//! The generated wire types and services of `proto/edgechat/v1` (package `edgechat.v1`).
//!
//! Names here are the contract of `API.md`: never rename, only add.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("edgechat.v1");

/// The encoded descriptor set of every edgechat proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/edgechat_descriptor.bin"));
