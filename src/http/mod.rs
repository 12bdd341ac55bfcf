//! The HTTP/1.1 edge: a small strict server on `httparse`.
//!
//! Every limit and framing rule of the edge lives here: head size and count (431, chunked
//! trailers included), URI length (414), body size enforced while reading (413),
//! head/body/write/idle/queue timeouts, connection caps (total, with eviction of waiting
//! connections, and per source), and refusal of every request-smuggling shape (400 and close). Handlers are plain
//! functions from a parsed [`Request`] to a [`Response`]; they never touch the socket.
#![forbid(unsafe_code)]

pub mod chunked;
pub mod form;
pub mod head;
mod message;
mod permits;
mod router;
mod server;
mod table;

pub use head::Method;
pub use message::{Request, Response, Sent, json_string};
pub use permits::without_permit;
pub use router::{ErrorStyle, Pool, Router};
pub use server::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_SHUTDOWN_TIMEOUT_SECS,
    DEFAULT_TIMEOUT_BODY_SECS, DEFAULT_TIMEOUT_HEADER_SECS, DEFAULT_TIMEOUT_IDLE_SECS,
    DEFAULT_TIMEOUT_QUEUE_SECS, DEFAULT_WORKERS, Limits, Server, ServerHandle,
};

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 8192;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Longest request target, in bytes.
pub const MAX_URI_BYTES: usize = 2048;
/// Largest request body on every route, in bytes.
pub const MAX_BODY_BYTES: usize = 20480;
