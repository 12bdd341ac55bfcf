//! The accept loop and one thread per open connection (capped), with request handling bounded by
//! a counting semaphore.
//!
//! A connection thread reads and parses with timeouts; only once a complete [`Request`] is in hand
//! does it take one of the `workers` permits and run the handler ([`Pool::Inline`] handlers need
//! none), then it writes the response. So a slow or idle client holds a connection slot, never a
//! request-handling permit; connection threads are capped by `max_connections` and concurrent
//! handlers by `workers`. Running the handler on the thread that already holds the request avoids
//! two thread hand-offs per request.
#![forbid(unsafe_code)]

use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::{Framing, Head, HeadError, Method, parse_head};
use super::message::{Request, Response, Sent};
use super::router::{ErrorStyle, Pool, Resolution, Router};
use super::{MAX_BODY_BYTES, MAX_HEAD_BYTES};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Default [`Limits::workers`] (`SERVER_WORKERS`).
pub const DEFAULT_WORKERS: usize = 16;
/// Default [`Limits::max_connections`] (`SERVER_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default [`Limits::timeout_header`] in seconds (`SERVER_HEADER_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_HEADER_SECS: u64 = 10;
/// Default [`Limits::timeout_body`] in seconds (`SERVER_BODY_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_BODY_SECS: u64 = 10;
/// Default [`Limits::timeout_idle`] in seconds (`SERVER_IDLE_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_IDLE_SECS: u64 = 30;
/// Default [`Limits::timeout_write`] in seconds (not configurable).
pub const DEFAULT_TIMEOUT_WRITE_SECS: u64 = 10;
/// Default time given to in-flight requests after [`ServerHandle::begin_shutdown`], in seconds
/// (`SERVER_SHUTDOWN_TIMEOUT_SECS`; the caller passes it to [`ServerHandle::wait_idle`]).
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 25;

/// The edge's limits. Defaults are those of `operations.md`, each the constant named on its field.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests handled at once (the rest wait for a permit). Default [`DEFAULT_WORKERS`].
    pub workers: usize,
    /// Open connections; the excess is closed at once. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Time to receive a request head, from its first byte (from accept for the first request).
    /// Default [`DEFAULT_TIMEOUT_HEADER_SECS`].
    pub timeout_header: Duration,
    /// Time to receive a request body. Default [`DEFAULT_TIMEOUT_BODY_SECS`].
    pub timeout_body: Duration,
    /// Keep-alive idle time between requests. Default [`DEFAULT_TIMEOUT_IDLE_SECS`].
    pub timeout_idle: Duration,
    /// Time allowed to write the whole response. Default [`DEFAULT_TIMEOUT_WRITE_SECS`].
    pub timeout_write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: DEFAULT_WORKERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout_header: Duration::from_secs(DEFAULT_TIMEOUT_HEADER_SECS),
            timeout_body: Duration::from_secs(DEFAULT_TIMEOUT_BODY_SECS),
            timeout_idle: Duration::from_secs(DEFAULT_TIMEOUT_IDLE_SECS),
            timeout_write: Duration::from_secs(DEFAULT_TIMEOUT_WRITE_SECS),
        }
    }
}

/// Stack size of connection threads (they run handlers, upstream TLS included). Only the pages
/// touched become resident.
const CONNECTION_STACK: usize = 512 * 1024;

/// A counting semaphore: at most `workers` handlers run at once.
struct Permits {
    available: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut available = self.available.lock().unwrap_or_else(|e| e.into_inner());
        while *available == 0 {
            available = self
                .freed
                .wait(available)
                .unwrap_or_else(|e| e.into_inner());
        }
        *available -= 1;
        Permit(self)
    }
}

/// Returns its permit on drop, even when the handler panics.
struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.available.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Shared between the accept loop, connection threads and [`ServerHandle`]s.
struct Shared {
    router: Router,
    limits: Limits,
    permits: Permits,
    draining: AtomicBool,
    open: AtomicUsize,
    in_flight: Mutex<usize>,
    idle: Condvar,
    wake_addr: SocketAddr,
}

/// A cloneable handle to a running [`Server`]: shutdown and a few gauges.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Stops accepting; responses from now on close their connection. Idempotent.
    pub fn begin_shutdown(&self) {
        if self.shared.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop, which is blocked in accept().
        let _ = TcpStream::connect_timeout(&self.shared.wake_addr, Duration::from_secs(1));
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Open connections right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight (head received, response not yet written), at most
    /// `timeout`. Returns whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = match self.shared.idle.wait_timeout(count, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
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
        let permits = Permits {
            available: Mutex::new(limits.workers.max(1)),
            freed: Condvar::new(),
        };
        let shared = Arc::new(Shared {
            router,
            limits,
            permits,
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            in_flight: Mutex::new(0),
            idle: Condvar::new(),
            wake_addr: SocketAddr::new(wake_ip, local.port()),
        });
        Ok(Server { listener, shared })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle for shutdown and gauges.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts until [`ServerHandle::begin_shutdown`]. Errors from `accept()` are logged and survived.
    pub fn run(self) {
        let shared = self.shared;
        let mut last_accept_warning: Option<Instant> = None;
        loop {
            let accepted = self.listener.accept();
            if shared.draining.load(Ordering::SeqCst) {
                break;
            }
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends persist until a connection closes: do not spin, and log
                    // at most once a second.
                    if last_accept_warning
                        .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1))
                    {
                        log::warn!("accept failed (continuing): {e}");
                        last_accept_warning = Some(Instant::now());
                    }
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let open = shared.open.fetch_add(1, Ordering::SeqCst);
            let slot = Slot(Arc::clone(&shared));
            if open >= shared.limits.max_connections {
                log::debug!("connection cap reached; closing connection from {peer}");
                drop((stream, slot));
                continue;
            }
            let conn_shared = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name("conn".into())
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    let _slot = slot;
                    serve_connection(stream, peer, &conn_shared);
                });
            if let Err(e) = spawned {
                log::warn!("cannot start a connection thread: {e}");
            }
        }
        log::info!("stopped accepting connections");
    }
}

/// Holds one connection slot; released on drop, even if the connection thread panics.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts one request in flight while alive.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared) -> Self {
        *shared.in_flight.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut count = self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.0.idle.notify_all();
        }
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
        let mut chunk = [0u8; 4096];
        let want = room.min(chunk.len());
        let target = chunk.get_mut(..want).ok_or(ReadError::Closed)?;
        match self.stream.read(target) {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.buf
                    .extend_from_slice(target.get(..n).unwrap_or_default());
                Ok(n)
            }
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

    /// Reads until a whole head is buffered. `Ok(None)`: the connection ended or timed out quietly.
    fn read_head(
        &mut self,
        first_byte_wait: Duration,
        header_timeout: Duration,
    ) -> Result<Option<Head>, HeadError> {
        let first_byte_deadline = Instant::now() + first_byte_wait;
        while self.buf.is_empty() {
            if self.fill(first_byte_deadline, MAX_HEAD_BYTES).is_err() {
                return Ok(None);
            }
        }
        let deadline = Instant::now() + header_timeout;
        loop {
            if let Some((head, used)) = parse_head(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(head));
            }
            let room = MAX_HEAD_BYTES.saturating_sub(self.buf.len());
            if self.fill(deadline, room).is_err() {
                return Ok(None);
            }
        }
    }

    /// Reads the body the head announced, at most [`MAX_BODY_BYTES`], before `deadline`.
    fn read_body(&mut self, framing: Framing, deadline: Instant) -> Result<Vec<u8>, BodyError> {
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
                let mut decoder = ChunkedDecoder::new(MAX_BODY_BYTES);
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
        let mut bytes = response.head_bytes(request_id, close);
        if !head_only {
            bytes.extend_from_slice(&response.body); // one write, one segment for small responses
        }
        let ok = self.write_by(&bytes, deadline);
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
    format!("{:016x}", z ^ (z >> 31))
}

fn edge_error(style: ErrorStyle, status: u16, reason: &'static str) -> Response {
    let mut response = match style {
        ErrorStyle::Json => Response::json_error(status, reason),
        ErrorStyle::Text => Response::text(status, format!("{reason}\n")),
    };
    response.close = true;
    response
}

fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let limits = &shared.limits;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(1024),
        read_tick: None,
        write_tick: None,
    };
    let mut first_byte_wait = limits.timeout_header;
    loop {
        let head = match conn.read_head(first_byte_wait, limits.timeout_header) {
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
        let _in_flight = InFlight::new(shared);
        let keep_alive = serve_request(&mut conn, head, peer, shared);
        if !keep_alive || shared.draining.load(Ordering::SeqCst) {
            return;
        }
        first_byte_wait = limits.timeout_idle;
    }
}

/// Serves one request whose head has been read. Returns whether the connection may continue.
fn serve_request(conn: &mut Conn, head: Head, peer: SocketAddr, shared: &Shared) -> bool {
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
    let body = match conn.read_body(head.framing, received + shared.limits.timeout_body) {
        Ok(body) => body,
        Err(e) => {
            let (status, reason, detail) = match e {
                BodyError::TooLarge => (413, "request body too large", "over the body limit"),
                BodyError::Timeout => (408, "request timeout", "body did not arrive in time"),
                BodyError::Invalid(what) => (400, "bad request", what),
                BodyError::Closed => return false,
            };
            log::info!(
                "request {request_id} from {peer}: body refused at the edge: {status}: {detail}"
            );
            router.observed(&label, status);
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
            };
            dispatch(shared, route.pool, &route.handler, request)
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
        });
    }
    written && !close
}

fn internal_error() -> Response {
    Response::json_error(500, "internal error")
}

/// Runs a handler (after taking a permit unless it is inline), turning a panic into a 500.
fn dispatch(
    shared: &Shared,
    pool: Pool,
    handler: &super::router::Handler,
    request: Request,
) -> Response {
    let _permit = (pool == Pool::Worker).then(|| shared.permits.acquire());
    catch_unwind(AssertUnwindSafe(|| handler(&request))).unwrap_or_else(|_| {
        log::error!(
            "request {}: handler panicked; answered 500",
            request.request_id
        );
        internal_error()
    })
}
