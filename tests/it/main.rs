//! End-to-end tests: one test binary (STYLE.md 7), a module per area. Every test starts the
//! real server on 127.0.0.1 with an ephemeral port and a temporary data directory, and talks to
//! it over real sockets with the client library.

/// Runs each test body once over HTTP/2 and once over HTTP/3 (`name::h2`, `name::h3`): the
/// servers a body starts serve their clients over that transport.
macro_rules! both_transports {
    ($(async fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn h2() {
                crate::support::TRANSPORT.scope(crate::support::Transport::H2, async $body).await
            }

            #[tokio::test]
            async fn h3() {
                crate::support::TRANSPORT.scope(crate::support::Transport::H3, async $body).await
            }
        }
    )*};
    // The same for ordinary `async fn`s defined in the module (which rustfmt formats).
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn h2() {
                crate::support::TRANSPORT.scope(crate::support::Transport::H2, super::$name()).await
            }

            #[tokio::test]
            async fn h3() {
                crate::support::TRANSPORT.scope(crate::support::Transport::H3, super::$name()).await
            }
        }
    )+};
}

mod attachments;
mod auth;
mod backup;
mod bounds;
mod cli;
mod cluster;
mod cluster_faults;
mod conversation;
mod crash;
mod deploy;
mod faults;
mod jwks;
mod listen;
mod messaging;
mod metrics;
mod nats;
mod presence;
mod retention;
mod rooms;
mod search;
mod session;
mod support;
mod term;
mod transport;
