//! edgechat: a real-time chat server in one binary.
//!
//! The library is the product; `main.rs` only parses the command line and calls into
//! [`cli`]. Tests, benches and the load generator use the same code. See
//! `ARCHITECTURE.md` for the data path and a map of these modules.

#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod change;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod files;
pub mod init;
pub mod metrics;
pub mod notifications;
pub mod presence;
pub mod proto;
pub mod retention;
pub mod rooms;
pub mod search;
pub mod server;
pub mod store;
pub mod tasks;
pub mod term;
pub mod transport;
pub mod web;
