//! End-to-end tests: one test binary (STYLE.md 7), a module per area. Every test starts the
//! real server on 127.0.0.1 with an ephemeral port and a temporary data directory, and talks to
//! it over real sockets with the client library.

mod auth;
mod cli;
mod crash;
mod messaging;
mod presence;
mod rooms;
mod session;
mod support;
mod transport;
