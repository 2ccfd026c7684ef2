//! The Kafka-compatible broker: a listener, a task per connection, and one module per
//! Kafka API (`api/`). Only this crate knows Kafka error codes (`error.rs`).

// The request path (connection, dispatch, each API's generic `serve`, its handler) nests
// more async bodies than the default query depth lets the compiler lay out under clippy.
#![recursion_limit = "256"]

mod alloc;
pub mod api;
pub mod blocking;
pub mod config;
pub mod error;
pub mod fetch_session;
pub mod group;
pub mod metrics;
pub mod metrics_http;
pub mod peer;
pub mod quota;
pub mod replica;
pub mod scrub;
pub mod security;
pub mod server;
pub mod state;
pub mod txn;
pub mod wire;
pub mod zero_copy;

pub use config::BrokerConfig;
pub use server::run;
