//! What handlers see and return: a parsed [`Request`] and a [`Response`] value. Handlers never
//! touch the socket.
#![forbid(unsafe_code)]

use super::form::{FormError, parse_urlencoded};
use super::head::{Headers, Method};
use crate::buffers;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A complete request, body included, as handed to a handler. `Debug` shows header names but no
/// values and no body (they carry the JWT).
pub struct Request {
    pub method: Method,
    /// The path with `//` runs collapsed and the base path removed; always starts with `/`.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    /// Header names lowercased, values as received.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// Generated per request; echoed in `X-Request-Id` and the audit record.
    pub request_id: String,
    /// Values of the route's `{param}` segments, in order.
    pub params: Vec<String>,
    /// A handle on the client's socket, to see whether the client is still there.
    pub(crate) client: Option<Arc<TcpStream>>,
}

/// The body may hold the JWT (an exchange's `subject_token`): wiped when the request is dropped.
impl Drop for Request {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.body));
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("peer", &self.peer)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// Every value of header `name` (lowercase), in order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.values(name).collect()
    }

    /// The single value of header `name`, or `None` when absent or repeated.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers.values(name)
    }

    /// The `i`-th route parameter.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    /// Whether the client has gone: it closed or reset its connection while the request was
    /// being handled (a client that half-closes after sending its request counts as gone). Only
    /// a peek at the socket, without waiting; `false` when unknown.
    pub fn client_gone(&self) -> bool {
        let Some(stream) = &self.client else {
            return false;
        };
        // The connection's own thread runs the handler, so nothing else reads this socket now;
        // the non-blocking mode is shared by every handle on it and is restored at once.
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let gone = match stream.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false, // a pipelined request: the client is there
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        };
        let _ = stream.set_nonblocking(false);
        gone
    }

    /// The query string decoded into pairs (empty when there is none).
    pub fn query_pairs(&self) -> Result<Vec<(String, String)>, FormError> {
        parse_urlencoded(self.query.as_deref().unwrap_or_default().as_bytes())
    }
}

/// What the server reports to [`Response::on_sent`] once the response has been written (or the
/// write failed).
#[derive(Debug, Clone)]
pub struct Sent {
    pub status: u16,
    pub duration: Duration,
    /// Whether the whole response was written to the socket (`false`: the client went away or
    /// stopped reading).
    pub written: bool,
}

type SentHook = Box<dyn FnOnce(&Sent) + Send>;

/// A response value. `Cache-Control: no-store`, `Content-Length` and `X-Request-Id` are added by the
/// server to every response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers. Values containing CR or LF are dropped when written.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
    on_sent: Option<SentHook>,
}

/// A response's body may hold a token: it is wiped (and its buffer kept for the thread's next
/// answer) when the response is dropped — once written, or on any path that abandons it.
impl Drop for Response {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.body));
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may hold a token: never print it.
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Response {
    /// A response with `body` of `content_type`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            close: false,
            on_sent: None,
        }
    }

    /// `application/json` from an already serialised body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status, "application/json", body)
    }

    /// `text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// `{"error":"<reason>"}` — `reason` must be a fixed string, never request input.
    pub fn json_error(status: u16, reason: &'static str) -> Self {
        Response::json(status, format!("{{\"error\":{}}}", json_string(reason)))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Registers a hook called once with the outcome when the response has been written.
    pub fn on_sent(mut self, hook: impl FnOnce(&Sent) + Send + 'static) -> Self {
        self.on_sent = Some(Box::new(hook));
        self
    }

    pub(crate) fn take_on_sent(&mut self) -> Option<SentHook> {
        self.on_sent.take()
    }

    /// The bytes the head and body take at most, for sizing the buffer they are written to.
    pub(crate) fn size_hint(&self, request_id: &str) -> usize {
        let extra: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum();
        160 + request_id.len() + extra + self.body.len()
    }

    /// Appends the status line and headers to `out` (in place: no intermediate strings; this
    /// runs for every response, and a `/healthcheck` is little more than this).
    pub(crate) fn write_head(&self, out: &mut Vec<u8>, request_id: &str, close: bool) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Request-Id: {request_id}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        for (name, value) in &self.headers {
            if !value.contains(['\r', '\n']) {
                for part in [*name, ": ", value.as_str(), "\r\n"] {
                    out.extend_from_slice(part.as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A JSON string literal for `s` (escaped by serde_json).
pub fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The reason phrase for the status codes kitebridge sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
