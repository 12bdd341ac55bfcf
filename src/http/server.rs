//! The accept loop and one thread per open connection (capped), with request handling bounded by
//! request-handling permits.
//!
//! A connection thread reads and parses with timeouts; only once a complete [`Request`] is in hand
//! does it take one of the `workers` permits and run the handler ([`Pool::Inline`] handlers need
//! none), then it writes the response. So a slow or idle client holds a connection slot, never a
//! request-handling permit; connection threads are capped by `max_connections` and concurrent
//! handlers by `workers`. Running the handler on the thread that already holds the request avoids
//! two thread hand-offs per request.
//!
//! Under pressure ([`super::table`], [`super::permits`]):
//! - a full connection table evicts the connection that has waited longest without a complete
//!   request (idle kept-alive ones first) to admit a newcomer; only when every connection is busy
//!   is the newcomer closed at once (so the table may briefly hold one connection per eviction in
//!   progress beyond the cap, while the evicted threads leave);
//! - one remote address holds at most `max_connections_per_source` connections;
//! - a request that waits longer than `timeout_queue` for a permit is answered 503 with
//!   `Retry-After`;
//! - a handler waiting on an upstream lends its permit out ([`super::without_permit`]).
//!
//! A server can be created held ([`Server::hold_until_released`]): it takes no connection from the
//! listening socket until [`ServerHandle::release`] (or shutdown), so connections that arrive
//! before the process is ready wait in the kernel's backlog (socket activation).
//!
//! Shutdown ([`ServerHandle::begin_shutdown`]) stops accepting at once, closes idle kept-alive
//! connections, and lets every connection that was accepted and has not been answered yet finish
//! its request ([`ServerHandle::wait_idle`] waits for them).
#![forbid(unsafe_code)]

use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::{Framing, Head, HeadError, Method, parse_head};
use super::message::{Request, Response, Sent};
use super::permits::Permits;
use super::router::{ErrorStyle, Pool, Resolution, Router};
use super::table::{Entry, Phase, Table, over_source_cap};
use super::{MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS};
use crate::buffers;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Default [`Limits::workers`] (`SERVER_WORKERS`).
pub const DEFAULT_WORKERS: usize = 16;
/// Default [`Limits::max_connections`] (`SERVER_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default [`Limits::max_connections_per_source`] (`SERVER_MAX_CONNECTIONS_PER_SOURCE`).
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// Default [`Limits::timeout_header`] in seconds (`SERVER_HEADER_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_HEADER_SECS: u64 = 10;
/// Default [`Limits::timeout_body`] in seconds (`SERVER_BODY_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_BODY_SECS: u64 = 10;
/// Default [`Limits::timeout_idle`] in seconds (`SERVER_IDLE_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_IDLE_SECS: u64 = 30;
/// Default [`Limits::timeout_write`] in seconds (not configurable).
pub const DEFAULT_TIMEOUT_WRITE_SECS: u64 = 10;
/// Default [`Limits::timeout_queue`] in seconds (`SERVER_QUEUE_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_QUEUE_SECS: u64 = 5;
/// Default time given to in-flight requests after [`ServerHandle::begin_shutdown`], in seconds
/// (`SERVER_SHUTDOWN_TIMEOUT_SECS`; the caller passes it to [`ServerHandle::wait_idle`]).
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 25;

/// The edge's limits. Defaults are those of the operations documentation, each the constant named
/// on its field.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests handled at once (the rest wait for a permit). Default [`DEFAULT_WORKERS`].
    pub workers: usize,
    /// Open connections; at the cap a waiting connection is evicted for a newcomer, or the
    /// newcomer is closed at once when every connection is busy. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Open connections of one remote address; `None`: no cap. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_SOURCE`].
    pub max_connections_per_source: Option<usize>,
    /// Whether loopback addresses are exempt from [`Limits::max_connections_per_source`] (every
    /// job on the host shares them). Default `true`.
    pub per_source_exempts_loopback: bool,
    /// Time to receive a request head, from its first byte (from accept for the first request).
    /// Default [`DEFAULT_TIMEOUT_HEADER_SECS`].
    pub timeout_header: Duration,
    /// Time to receive a request body. Default [`DEFAULT_TIMEOUT_BODY_SECS`].
    pub timeout_body: Duration,
    /// Keep-alive idle time between requests. Default [`DEFAULT_TIMEOUT_IDLE_SECS`].
    pub timeout_idle: Duration,
    /// Time allowed to write the whole response. Default [`DEFAULT_TIMEOUT_WRITE_SECS`].
    pub timeout_write: Duration,
    /// Longest wait for a request-handling permit; then 503 with `Retry-After`. Default
    /// [`DEFAULT_TIMEOUT_QUEUE_SECS`].
    pub timeout_queue: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: DEFAULT_WORKERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: Some(DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
            per_source_exempts_loopback: true,
            timeout_header: Duration::from_secs(DEFAULT_TIMEOUT_HEADER_SECS),
            timeout_body: Duration::from_secs(DEFAULT_TIMEOUT_BODY_SECS),
            timeout_idle: Duration::from_secs(DEFAULT_TIMEOUT_IDLE_SECS),
            timeout_write: Duration::from_secs(DEFAULT_TIMEOUT_WRITE_SECS),
            timeout_queue: Duration::from_secs(DEFAULT_TIMEOUT_QUEUE_SECS),
        }
    }
}

/// Stack size of connection threads (they run handlers, upstream TLS included). Only the pages
/// touched become resident.
const CONNECTION_STACK: usize = 512 * 1024;

/// `Retry-After` of a request that waited too long for a permit, in seconds.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Shared between the accept loop, connection threads and [`ServerHandle`]s.
struct Shared {
    router: Router,
    limits: Limits,
    permits: Arc<Permits>,
    draining: AtomicBool,
    table: Arc<Table>,
    /// Whether the accept loop may take connections (`false` while held).
    released: Mutex<bool>,
    release: Condvar,
    wake_addr: SocketAddr,
}

impl Shared {
    fn open_gate(&self) {
        *self.released.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.release.notify_all();
    }

    fn wait_for_gate(&self) {
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        while !*released {
            released = self
                .release
                .wait(released)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A cloneable handle to a running [`Server`]: release, shutdown and a few gauges.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Lets a server created with [`Server::hold_until_released`] start accepting. Idempotent.
    pub fn release(&self) {
        self.shared.open_gate();
    }

    /// Stops accepting and closes idle kept-alive connections; responses from now on close their
    /// connection, and every connection already accepted is still answered. Idempotent.
    pub fn begin_shutdown(&self) {
        if self.shared.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.open_gate();
        self.shared.table.close_idle();
        // Wake the accept loop, which is blocked in accept().
        let _ = TcpStream::connect_timeout(&self.shared.wake_addr, Duration::from_secs(1));
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Open connections right now.
    pub fn open_connections(&self) -> usize {
        self.shared.table.open()
    }

    /// Waits until no request is in flight — no connection is receiving a request or being
    /// answered (a connection accepted and not yet answered counts) — at most `timeout`.
    /// Returns whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.table.wait_quiet(timeout)
    }
}

/// The HTTP/1.1 server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// A server on `listener`; call [`Server::run`] to accept.
    pub fn new(listener: TcpListener, router: Router, limits: Limits) -> io::Result<Server> {
        let local = listener.local_addr()?;
        let wake_ip = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let shared = Arc::new(Shared {
            router,
            permits: Permits::new(limits.workers),
            limits,
            draining: AtomicBool::new(false),
            table: Arc::new(Table::default()),
            released: Mutex::new(true),
            release: Condvar::new(),
            wake_addr: SocketAddr::new(wake_ip, local.port()),
        });
        Ok(Server { listener, shared })
    }

    /// The same server, taking no connection from the listener until [`ServerHandle::release`]
    /// (or [`ServerHandle::begin_shutdown`]): connections wait in the kernel's backlog meanwhile.
    pub fn hold_until_released(self) -> Server {
        *self
            .shared
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = false;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle for release, shutdown and gauges.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts until [`ServerHandle::begin_shutdown`]. Errors from `accept()` are logged and survived.
    pub fn run(self) {
        let shared = self.shared;
        shared.wait_for_gate();
        if shared.draining.load(Ordering::SeqCst) {
            // Shut down before it was released: leave every connection in the backlog (under
            // socket activation, for the next process).
            log::info!("stopped before accepting any connection");
            return;
        }
        let limits = &shared.limits;
        // EMFILE and friends persist until a connection closes: either accept() fails, or it
        // takes the last descriptor and tracking the connection fails. Both are logged at most
        // once a second.
        let mut last_fd_warning: Option<Instant> = None;
        let mut warn_fds = |what: &str, e: &std::io::Error| {
            if last_fd_warning.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
                log::warn!("{what}: {e}");
                last_fd_warning = Some(Instant::now());
            }
        };
        let mut last = false;
        while !last {
            let accepted = self.listener.accept();
            // Shutdown wakes accept() with a connection of its own; one that was accepted is
            // served either way (a client's, accepted just before, gets its answer; the wake-up
            // one closes at once), and then the loop ends.
            last = shared.draining.load(Ordering::SeqCst);
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Do not spin while the condition lasts.
                    warn_fds("accept failed (continuing)", &e);
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let source = peer.ip();
            let from_source = shared.table.open_from(source);
            let per_source = limits.max_connections_per_source;
            if over_source_cap(
                source,
                from_source,
                per_source,
                limits.per_source_exempts_loopback,
            ) {
                log::debug!("per-source connection cap reached; closing connection from {peer}");
                continue;
            }
            if shared.table.open() >= limits.max_connections && !shared.table.evict_one() {
                log::debug!("connection cap reached, every connection busy; closing {peer}");
                continue;
            }
            let handle = match stream.try_clone() {
                Ok(handle) => handle,
                Err(e) => {
                    warn_fds("cannot track a connection (closing it)", &e);
                    continue;
                }
            };
            let entry = shared.table.enter(handle, source, Instant::now());
            let conn_shared = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name("conn".into())
                .stack_size(CONNECTION_STACK)
                .spawn(move || serve_connection(stream, peer, &entry, &conn_shared));
            if let Err(e) = spawned {
                log::warn!("cannot start a connection thread: {e}");
            }
        }
        log::info!("stopped accepting connections");
    }
}

/// Why reading stopped.
enum ReadError {
    /// The deadline passed.
    Timeout,
    /// The peer closed or reset the connection.
    Closed,
}

/// A connection and its read buffer (at most [`MAX_HEAD_BYTES`] of unparsed bytes).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The socket's current read and write timeouts (set only when they change).
    read_tick: Option<Duration>,
    write_tick: Option<Duration>,
}

/// What the connection read (requests, JWTs) is wiped when it ends.
impl Drop for Conn {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.buf));
    }
}

/// Socket timeouts are set to at most this; a read or write that wakes without progress re-checks
/// its deadline. So the timeouts are set once per connection, not before every read and write.
const TIMEOUT_TICK: Duration = Duration::from_secs(1);

impl Conn {
    /// Reads what is available into the buffer (up to `room` more bytes) before `deadline`.
    fn fill(&mut self, deadline: Instant, room: usize) -> Result<usize, ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        let tick = left.min(TIMEOUT_TICK);
        if self.read_tick != Some(tick) {
            self.stream
                .set_read_timeout(Some(tick))
                .map_err(|_| ReadError::Closed)?;
            self.read_tick = Some(tick);
        }
        // Read straight into the buffer's tail (grown, if it must, without leaving the bytes it
        // holds behind: they may be a JWT), then cut it back to what arrived.
        let want = room.min(4096);
        let start = self.buf.len();
        buffers::reserve(&mut self.buf, want);
        self.buf.resize(start + want, 0);
        let read = self
            .stream
            .read(self.buf.get_mut(start..).unwrap_or_default());
        self.buf.truncate(start + read.as_ref().map_or(0, |&n| n));
        match read {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => Ok(n),
            // A tick passed without data: the caller loops and the deadline decides.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(_) => Err(ReadError::Closed),
        }
    }

    /// Waits up to `wait` for the first byte of a request; whether one came (else the connection
    /// ended, was evicted or timed out quietly).
    fn await_first_byte(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.buf.is_empty() {
            if self.fill(deadline, MAX_HEAD_BYTES).is_err() {
                return false;
            }
        }
        true
    }

    /// Reads until a whole head is buffered (its first byte is): the head and its length in
    /// bytes. `Ok(None)`: the connection ended or timed out quietly.
    fn read_head(&mut self, header_timeout: Duration) -> Result<Option<(Head, usize)>, HeadError> {
        let deadline = Instant::now() + header_timeout;
        loop {
            if let Some((head, used)) = parse_head(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some((head, used)));
            }
            let room = MAX_HEAD_BYTES.saturating_sub(self.buf.len());
            if self.fill(deadline, room).is_err() {
                return Ok(None);
            }
        }
    }

    /// Reads the body the head announced, at most [`MAX_BODY_BYTES`], before `deadline`. Chunked
    /// trailers get what the head (`head_len` bytes, `head_fields` fields) left of the head limits.
    fn read_body(
        &mut self,
        framing: Framing,
        deadline: Instant,
        head_len: usize,
        head_fields: usize,
    ) -> Result<Vec<u8>, BodyError> {
        match framing {
            Framing::Empty => Ok(Vec::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_BODY_BYTES)
                    .ok_or(BodyError::TooLarge)?;
                while self.buf.len() < n {
                    self.fill(deadline, n - self.buf.len())?;
                }
                Ok(self.buf.drain(..n).collect())
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::with_trailer_limits(
                    MAX_BODY_BYTES,
                    MAX_HEAD_BYTES.saturating_sub(head_len),
                    MAX_HEADERS.saturating_sub(head_fields),
                );
                let mut body = Vec::new();
                loop {
                    let used = decoder.decode(&self.buf, &mut body)?;
                    self.buf.drain(..used);
                    if decoder.is_done() {
                        return Ok(body);
                    }
                    self.fill(deadline, MAX_HEAD_BYTES)?;
                }
            }
        }
    }

    /// Writes the response within [`Limits::timeout_write`] in total; `false` if it did not all go out.
    fn write_response(
        &mut self,
        response: &Response,
        request_id: &str,
        head_only: bool,
        close: bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        // One write, one segment for small responses; the buffer (which may hold a token) is
        // wiped and kept for the thread's next response.
        let mut bytes = buffers::take(response.size_hint(request_id));
        response.write_head(&mut bytes, request_id, close);
        if !head_only {
            bytes.extend_from_slice(&response.body);
        }
        let ok = self.write_by(&bytes, deadline);
        buffers::give(bytes);
        if !ok {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        } else if close {
            // FIN first so the client reads the response before the socket goes away.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        ok
    }

    fn write_by(&mut self, mut bytes: &[u8], deadline: Instant) -> bool {
        while !bytes.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let tick = left.min(TIMEOUT_TICK);
            if self.write_tick != Some(tick) {
                if self.stream.set_write_timeout(Some(tick)).is_err() {
                    return false;
                }
                self.write_tick = Some(tick);
            }
            match self.stream.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Invalid(&'static str),
    TrailersTooLarge,
    Closed,
}

impl From<ReadError> for BodyError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Timeout => BodyError::Timeout,
            ReadError::Closed => BodyError::Closed,
        }
    }
}

impl From<ChunkError> for BodyError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::BodyTooLarge { .. } => BodyError::TooLarge,
            ChunkError::Invalid(what) => BodyError::Invalid(what),
            ChunkError::TrailersTooLarge { .. } => BodyError::TrailersTooLarge,
        }
    }
}

/// A generated request id: 16 hex characters, unique in the process and not guessable from
/// earlier ones — a counter run through a keyed bijective mixer (splitmix64's finaliser) whose key
/// comes from the system RNG once per process. No syscall per request.
pub fn new_request_id() -> String {
    use ring::rand::SecureRandom;
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU64;
    static KEY: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let key = *KEY.get_or_init(|| {
        let mut bytes = [0u8; 8];
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        u64::from_le_bytes(bytes)
    });
    let mut z = COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(key)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let z = z ^ (z >> 31);
    (0..16)
        .rev()
        .map(|nibble| {
            let digit = ((z >> (nibble * 4)) & 0xf) as u8;
            char::from(if digit < 10 {
                b'0' + digit
            } else {
                b'a' + digit - 10
            })
        })
        .collect()
}

fn edge_error(style: ErrorStyle, status: u16, reason: &'static str) -> Response {
    let mut response = match style {
        ErrorStyle::Json => Response::json_error(status, reason),
        ErrorStyle::Text => Response::text(status, format!("{reason}\n")),
    };
    response.close = true;
    response
}

fn serve_connection(stream: TcpStream, peer: SocketAddr, entry: &Entry, shared: &Shared) {
    let limits = &shared.limits;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        // Room for any head at once, so reading one never moves it; wiped when the connection ends.
        buf: buffers::take(MAX_HEAD_BYTES),
        read_tick: None,
        write_tick: None,
    };
    let mut first_request = true;
    loop {
        let wait = if first_request {
            limits.timeout_header
        } else {
            limits.timeout_idle
        };
        if !conn.await_first_byte(wait) {
            return;
        }
        // A kept-alive connection starts receiving its next request now; a new one has been
        // receiving since it was accepted.
        if !first_request && !entry.set(Phase::Receiving(Instant::now())) {
            return;
        }
        let (head, head_len) = match conn.read_head(limits.timeout_header) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                let request_id = new_request_id();
                log::info!("request {request_id} from {peer}: refused at the edge: {e}");
                let reason = match e.status() {
                    431 => "request header fields too large",
                    414 => "uri too long",
                    _ => "bad request",
                };
                shared.router.observed("edge", e.status());
                let _ = entry.set(Phase::Busy);
                conn.write_response(
                    &edge_error(ErrorStyle::Json, e.status(), reason),
                    &request_id,
                    false,
                    true,
                    limits.timeout_write,
                );
                return;
            }
        };
        let keep_alive = serve_request(&mut conn, head, head_len, peer, entry, shared);
        if !keep_alive || shared.draining.load(Ordering::SeqCst) {
            return;
        }
        if !entry.set(Phase::Idle(Instant::now())) {
            return;
        }
        // Shutdown closes idle connections; one that became idle just after it looked is closed here.
        if shared.draining.load(Ordering::SeqCst) {
            return;
        }
        first_request = false;
    }
}

/// Serves one request whose head (`head_len` bytes) has been read. Returns whether the
/// connection may continue.
fn serve_request(
    conn: &mut Conn,
    head: Head,
    head_len: usize,
    peer: SocketAddr,
    entry: &Entry,
    shared: &Shared,
) -> bool {
    let received = Instant::now();
    let request_id = new_request_id();
    let router = &shared.router;
    let (raw_path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (head.target.as_str(), None),
    };
    let local = router.local_path(raw_path);
    let resolution = match &local {
        Some(path) => router.resolve(&head.method, path),
        None => Resolution::NotFound,
    };
    let (style, label) = match &resolution {
        Resolution::Found { route, .. } => (route.errors, route.pattern.clone()),
        _ => (ErrorStyle::Json, "unmatched".to_owned()),
    };
    let head_only = head.method == Method::Head;

    if head.expect_continue && head.framing != Framing::Empty && conn.buf.is_empty() {
        let too_large = matches!(head.framing, Framing::Length(n) if n > MAX_BODY_BYTES as u64);
        if !too_large
            && conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
        {
            return false;
        }
    }
    let deadline = received + shared.limits.timeout_body;
    let body = match conn.read_body(head.framing, deadline, head_len, head.headers.len()) {
        Ok(body) => body,
        Err(e) => {
            let (status, reason, detail) = match e {
                BodyError::TooLarge => (413, "request body too large", "over the body limit"),
                BodyError::Timeout => (408, "request timeout", "body did not arrive in time"),
                BodyError::Invalid(what) => (400, "bad request", what),
                BodyError::TrailersTooLarge => (
                    431,
                    "request header fields too large",
                    "trailers over the head limits",
                ),
                BodyError::Closed => return false,
            };
            log::info!(
                "request {request_id} from {peer}: body refused at the edge: {status}: {detail}"
            );
            router.observed(&label, status);
            if !entry.set(Phase::Busy) {
                return false;
            }
            conn.write_response(
                &edge_error(style, status, reason),
                &request_id,
                head_only,
                true,
                shared.limits.timeout_write,
            );
            return false;
        }
    };
    // The request is complete: from now on this connection is never evicted.
    if !entry.set(Phase::Busy) {
        return false;
    }

    let mut response = match resolution {
        Resolution::NotFound => Response::json_error(404, "not found"),
        Resolution::MethodNotAllowed { allow } => {
            Response::json_error(405, "method not allowed").with_header("Allow", allow)
        }
        Resolution::Found { route, params } => {
            let request = Request {
                method: head.method.clone(),
                path: local.unwrap_or_default(),
                query,
                headers: head.headers,
                body,
                peer,
                request_id: request_id.clone(),
                params,
                client: Some(Arc::clone(&entry.tracked.stream)),
            };
            dispatch(shared, route.pool, style, &route.handler, request)
        }
    };
    let close = !head.keep_alive || response.close || shared.draining.load(Ordering::SeqCst);
    // Counted before the write, so a client that has its answer also sees it counted.
    router.observed(&label, response.status);
    let written = conn.write_response(
        &response,
        &request_id,
        head_only,
        close,
        shared.limits.timeout_write,
    );
    if let Some(hook) = response.take_on_sent() {
        hook(&Sent {
            status: response.status,
            duration: received.elapsed(),
            written,
        });
    }
    written && !close
}

fn internal_error() -> Response {
    Response::json_error(500, "internal error")
}

/// Runs a handler (after taking a permit unless it is inline, waiting at most the queue timeout),
/// turning a panic into a 500.
fn dispatch(
    shared: &Shared,
    pool: Pool,
    style: ErrorStyle,
    handler: &super::router::Handler,
    request: Request,
) -> Response {
    let _holding = match pool {
        Pool::Inline => None,
        Pool::Worker => {
            let deadline = Instant::now() + shared.limits.timeout_queue;
            match shared.permits.hold_until(deadline) {
                Some(holding) => Some(holding),
                None => {
                    log::warn!(
                        "request {}: no request-handling permit within {}s; answered 503",
                        request.request_id,
                        shared.limits.timeout_queue.as_secs()
                    );
                    return edge_error(style, 503, "server busy")
                        .with_header("Retry-After", BUSY_RETRY_AFTER_SECS.to_string());
                }
            }
        }
    };
    catch_unwind(AssertUnwindSafe(|| handler(&request))).unwrap_or_else(|_| {
        log::error!(
            "request {}: handler panicked; answered 500",
            request.request_id
        );
        internal_error()
    })
}

#[cfg(test)]
mod tests {
    use super::new_request_id;

    #[test]
    fn request_ids_are_sixteen_lowercase_hex_digits_and_differ() {
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
        }
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
