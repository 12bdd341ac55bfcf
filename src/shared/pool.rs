//! Connections to the cache server: TCP or TLS (rustls on ring), authenticated and on the
//! configured database, in a bounded pool.
//!
//! Every operation has a deadline and everything it does is bounded by it: name resolution,
//! connecting, the TLS handshake, `AUTH`/`SELECT`, waiting for a free connection, writing the
//! command and reading its reply. The pool holds at most [`MAX_CONNECTIONS`] connections; a caller
//! that finds none free waits only until its deadline. A connection that fails in any way is
//! closed, never reused; one idle connection that the server closed meanwhile (a restart) is
//! retried once on a fresh connection when not a byte of the reply had arrived.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::resp::{self, Parsed, Reply};
use crate::secret::Secret;

/// The most connections open to the cache server at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a resolved host name's addresses are reused.
const RESOLVED_FOR: Duration = Duration::from_secs(30);
/// The most bytes read in one call.
const READ_CHUNK: usize = 16 * 1024;

/// Where the cache server is (`CACHE_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The database `SELECT`ed after connecting (0: none sent).
    pub db: u16,
    /// `rediss://`: TLS, the certificate verified for `host`.
    pub tls: bool,
}

impl fmt::Display for Endpoint {
    /// The URL form (never holds credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        write!(f, "{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

/// How to log in (`CACHE_USERNAME`, `CACHE_PASSWORD`).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// The circuit is open: the server failed recently and is not asked until a probe answers.
    Unavailable,
    /// The operation's deadline passed.
    Timeout,
    /// Every connection is busy and none came free before the deadline.
    PoolExhausted,
    /// The host name did not resolve.
    Resolve(String),
    /// No connection could be made.
    Connect(String),
    /// The TLS handshake failed (untrusted certificate, wrong name, protocol).
    Tls(String),
    /// The connection broke.
    Io(String),
    /// The server closed the connection.
    Closed,
    /// The reply is not RESP2 within its bounds.
    Protocol(resp::Invalid),
    /// Bytes arrived after the reply.
    TrailingBytes,
    /// `AUTH` or `SELECT` was refused (the server's message, escaped).
    Login(String),
    /// The server answered the command with an error (its message, escaped).
    Server(String),
    /// A reply of the wrong shape for the command.
    Unexpected(&'static str),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Unavailable => write!(f, "circuit open"),
            CacheError::Timeout => write!(f, "timed out"),
            CacheError::PoolExhausted => write!(f, "no free connection in time"),
            CacheError::Resolve(e) => write!(f, "resolve failed: {e}"),
            CacheError::Connect(e) => write!(f, "connect failed: {e}"),
            CacheError::Tls(e) => write!(f, "tls failed: {e}"),
            CacheError::Io(e) => write!(f, "connection failed: {e}"),
            CacheError::Closed => write!(f, "connection closed by the server"),
            CacheError::Protocol(e) => write!(f, "bad reply: {e}"),
            CacheError::TrailingBytes => write!(f, "bytes after the reply"),
            CacheError::Login(e) => write!(f, "login refused: {e:?}"),
            CacheError::Server(e) => write!(f, "server error: {e:?}"),
            CacheError::Unexpected(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl std::error::Error for CacheError {}

impl CacheError {
    /// The metrics outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            CacheError::Unavailable => "skipped",
            CacheError::Timeout | CacheError::PoolExhausted => "timeout",
            _ => "error",
        }
    }
}

fn io_error(e: &io::Error) -> CacheError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CacheError::Timeout,
        io::ErrorKind::UnexpectedEof => CacheError::Closed,
        _ => CacheError::Io(e.kind().to_string()),
    }
}

/// Time left before `deadline`; a timeout when none is.
fn remaining(deadline: Instant) -> Result<Duration, CacheError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(CacheError::Timeout)
    } else {
        Ok(left)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// Bounds the next reads and writes by `deadline`.
    fn until(&self, deadline: Instant) -> Result<(), CacheError> {
        bound(self.tcp(), deadline)
    }
}

/// Bounds the next reads and writes on `tcp` by `deadline`.
fn bound(tcp: &TcpStream, deadline: Instant) -> Result<(), CacheError> {
    let left = remaining(deadline)?;
    tcp.set_read_timeout(Some(left))
        .and_then(|()| tcp.set_write_timeout(Some(left)))
        .map_err(|e| io_error(&e))
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One open, logged-in connection.
struct Conn {
    stream: Stream,
    buffer: Vec<u8>,
}

/// How a command failed on a connection: whether any of its reply had arrived.
struct CallError {
    error: CacheError,
    reply_started: bool,
}

impl Conn {
    /// Sends `command` and reads its one reply, both before `deadline`.
    fn call(&mut self, command: &[u8], deadline: Instant) -> Result<Reply, CallError> {
        let fail = |error, reply_started| CallError {
            error,
            reply_started,
        };
        self.stream.until(deadline).map_err(|e| fail(e, false))?;
        self.stream
            .write_all(command)
            .and_then(|()| self.stream.flush())
            .map_err(|e| fail(io_error(&e), false))?;
        self.buffer.clear();
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match resp::parse(&self.buffer) {
                Ok(Parsed::Complete { reply, used }) if used == self.buffer.len() => {
                    return Ok(reply);
                }
                Ok(Parsed::Complete { .. }) => return Err(fail(CacheError::TrailingBytes, true)),
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(fail(CacheError::Protocol(e), true)),
            }
            let started = !self.buffer.is_empty();
            self.stream.until(deadline).map_err(|e| fail(e, started))?;
            let room = (resp::MAX_REPLY - self.buffer.len()).clamp(1, READ_CHUNK);
            match self.stream.read(chunk.get_mut(..room).unwrap_or_default()) {
                Ok(0) => return Err(fail(CacheError::Closed, started)),
                Ok(n) => self
                    .buffer
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(io_error(&e), started)),
            }
        }
    }
}

struct Idle {
    conns: Vec<Conn>,
    /// Connections open, idle or in use.
    open: usize,
}

struct Resolved {
    addrs: Vec<SocketAddr>,
    at: Instant,
}

/// The bounded pool; see the module documentation.
pub struct Pool {
    endpoint: Endpoint,
    auth: Auth,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    idle: Mutex<Idle>,
    freed: Condvar,
    resolved: Mutex<Option<Resolved>>,
    resolving: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a TLS client could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// No trust root to verify the server with.
    NoRoots,
    /// The host is neither a DNS name nor an IP address.
    ServerName,
    /// rustls refused the configuration.
    Config(String),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::NoRoots => write!(
                f,
                "no trusted certificate authority (no system CA bundle: set SSL_CERT_FILE)"
            ),
            TlsSetupError::ServerName => write!(f, "the host is not a valid tls server name"),
            TlsSetupError::Config(e) => write!(f, "tls configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// A rustls client (ring, safe default protocol versions) trusting `roots`.
fn tls_client(
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut store = rustls::RootCertStore::empty();
    let (_added, _ignored) = store.add_parsable_certificates(roots.iter().cloned());
    if store.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Pool {
    /// A pool for `endpoint`; `roots` are the trust anchors for `rediss://`. Connects lazily.
    pub fn new(
        endpoint: Endpoint,
        auth: Auth,
        roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<Pool, TlsSetupError> {
        let tls = match endpoint.tls {
            false => None,
            true => {
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|_| TlsSetupError::ServerName)?;
                Some((tls_client(roots)?, name))
            }
        };
        Ok(Pool {
            endpoint,
            auth,
            tls,
            idle: Mutex::new(Idle {
                conns: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            resolved: Mutex::new(None),
            resolving: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The server's URL (no credentials).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Runs one command (its arguments) before `deadline`.
    pub fn call(&self, args: &[&[u8]], deadline: Instant) -> Result<Reply, CacheError> {
        let command = resp::command(args);
        let mut lease = self.checkout(deadline)?;
        match lease.conn()?.call(&command, deadline) {
            Ok(reply) => {
                lease.give_back();
                Ok(reply)
            }
            Err(CallError {
                reply_started: false,
                error: CacheError::Closed | CacheError::Io(_),
            }) if lease.reused => {
                // The server closed an idle connection (a restart): so it closed the others too.
                drop(lease);
                self.clear_idle();
                let mut fresh = self.checkout(deadline)?;
                let reply = fresh
                    .conn()?
                    .call(&command, deadline)
                    .map_err(|e| e.error)?;
                fresh.give_back();
                Ok(reply)
            }
            Err(e) => Err(e.error),
        }
    }

    /// Closes every idle connection (after a failure: they are likely dead too).
    pub fn clear_idle(&self) {
        let dropped = {
            let mut idle = lock(&self.idle);
            let dropped = std::mem::take(&mut idle.conns);
            idle.open = idle.open.saturating_sub(dropped.len());
            dropped
        };
        drop(dropped);
        self.freed.notify_all();
    }

    /// An idle connection, or a new one if fewer than [`MAX_CONNECTIONS`] are open, waiting for
    /// one to come free at most until `deadline`.
    fn checkout(&self, deadline: Instant) -> Result<Lease<'_>, CacheError> {
        let mut idle = lock(&self.idle);
        loop {
            if let Some(conn) = idle.conns.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                    reused: true,
                    keep: false,
                });
            }
            if idle.open < MAX_CONNECTIONS {
                idle.open += 1;
                drop(idle);
                // The slot is taken: the lease gives it back whatever happens.
                let mut lease = Lease {
                    pool: self,
                    conn: None,
                    reused: false,
                    keep: false,
                };
                lease.conn = Some(self.connect(deadline)?);
                return Ok(lease);
            }
            let left = remaining(deadline).map_err(|_| CacheError::PoolExhausted)?;
            idle = self
                .freed
                .wait_timeout(idle, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A new connection: resolved, connected, TLS, `AUTH`, `SELECT`, all before `deadline`.
    fn connect(&self, deadline: Instant) -> Result<Conn, CacheError> {
        let addrs = self.resolve(deadline)?;
        let mut last = CacheError::Connect("no address".into());
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, remaining(deadline)?) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => {
                    last = match io_error(&e) {
                        CacheError::Timeout => CacheError::Timeout,
                        _ => CacheError::Connect(e.kind().to_string()),
                    }
                }
            }
        }
        let Some(tcp) = tcp else {
            // Addresses may have moved (a fail-over): resolve again next time.
            *lock(&self.resolved) = None;
            return Err(last);
        };
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((config, name)) => {
                let client = ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| CacheError::Tls(e.to_string()))?;
                let mut tls = StreamOwned::new(client, tcp);
                bound(&tls.sock, deadline)?;
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| match io_error(&e) {
                            CacheError::Timeout => CacheError::Timeout,
                            _ => CacheError::Tls(e.to_string()),
                        })?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        let mut conn = Conn {
            stream,
            buffer: Vec::new(),
        };
        if let Some(password) = &self.auth.password {
            let password = password.expose().as_bytes();
            let command = match &self.auth.username {
                Some(user) => resp::command(&[b"AUTH", user.as_bytes(), password]),
                None => resp::command(&[b"AUTH", password]),
            };
            login(&mut conn, &command, deadline)?;
        }
        if self.endpoint.db != 0 {
            let db = self.endpoint.db.to_string();
            login(
                &mut conn,
                &resp::command(&[b"SELECT", db.as_bytes()]),
                deadline,
            )?;
        }
        Ok(conn)
    }

    /// The server's addresses: an IP literal as is; a host name resolved on a helper thread
    /// (std's resolver cannot be given a timeout), at most one resolution at a time, the result
    /// reused for a while.
    fn resolve(&self, deadline: Instant) -> Result<Vec<SocketAddr>, CacheError> {
        let port = self.endpoint.port;
        if let Ok(ip) = self.endpoint.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(resolved) = &*lock(&self.resolved) {
            if resolved.at.elapsed() < RESOLVED_FOR {
                return Ok(resolved.addrs.clone());
            }
        }
        if self.resolving.swap(true, Ordering::SeqCst) {
            return Err(CacheError::Resolve("another resolution is running".into()));
        }
        let (tx, rx) = mpsc::channel();
        let host = self.endpoint.host.clone();
        let resolving = Arc::clone(&self.resolving);
        let spawned = std::thread::Builder::new()
            .name("cache-resolve".into())
            .spawn(move || {
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>);
                resolving.store(false, Ordering::SeqCst);
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            self.resolving.store(false, Ordering::SeqCst);
            return Err(CacheError::Resolve(e.kind().to_string()));
        }
        match rx.recv_timeout(remaining(deadline)?) {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                *lock(&self.resolved) = Some(Resolved {
                    addrs: addrs.clone(),
                    at: Instant::now(),
                });
                Ok(addrs)
            }
            Ok(Ok(_)) => Err(CacheError::Resolve("no address".into())),
            Ok(Err(e)) => Err(CacheError::Resolve(e.kind().to_string())),
            Err(_) => Err(CacheError::Timeout),
        }
    }
}

/// Runs a login command, which must answer `+OK`.
fn login(conn: &mut Conn, command: &[u8], deadline: Instant) -> Result<(), CacheError> {
    match conn.call(command, deadline).map_err(|e| e.error)? {
        Reply::Simple(ok) if ok == "OK" => Ok(()),
        Reply::Error(message) => Err(CacheError::Login(message)),
        _ => Err(CacheError::Unexpected("login answered other than OK")),
    }
}

/// A connection taken from the pool, holding its slot until given back or dropped (closed).
struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
    /// It had served an earlier command.
    reused: bool,
    /// Given back: goes to the idle list when dropped, instead of being closed.
    keep: bool,
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut Conn, CacheError> {
        self.conn
            .as_mut()
            .ok_or(CacheError::Unexpected("no connection"))
    }

    /// Back to the idle list for the next caller.
    fn give_back(mut self) {
        self.keep = true;
    }
}

impl Drop for Lease<'_> {
    /// Gives a kept connection back; otherwise closes it (it failed, or was never made) and
    /// frees its slot.
    fn drop(&mut self) {
        let conn = self.conn.take();
        let mut idle = lock(&self.pool.idle);
        match conn {
            Some(conn) if self.keep => idle.conns.push(conn),
            closed => {
                idle.open = idle.open.saturating_sub(1);
                drop(idle);
                drop(closed);
                self.pool.freed.notify_one();
                return;
            }
        }
        drop(idle);
        self.pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
            db: 0,
            tls: false,
        }
    }

    #[test]
    fn endpoints_print_as_urls_without_credentials() {
        assert_eq!(endpoint(6379).to_string(), "redis://127.0.0.1:6379/0");
        let v6 = Endpoint {
            host: "::1".into(),
            port: 6380,
            db: 3,
            tls: true,
        };
        assert_eq!(v6.to_string(), "rediss://[::1]:6380/3");
    }

    #[test]
    fn tls_needs_a_trust_root() {
        let tls = Endpoint {
            tls: true,
            ..endpoint(1)
        };
        assert!(matches!(
            Pool::new(tls, Auth::default(), &[]),
            Err(TlsSetupError::NoRoots)
        ));
    }

    /// A server that answers each command with `answer` (raw bytes), then closes.
    fn fake(answer: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(answer);
            }
        });
        port
    }

    #[test]
    fn a_reply_is_read_and_bad_replies_are_errors() {
        let soon = || Instant::now() + Duration::from_secs(5);
        let pool = Pool::new(endpoint(fake(b"+PONG\r\n")), Auth::default(), &[]).unwrap();
        assert_eq!(
            pool.call(&[b"PING"], soon()),
            Ok(Reply::Simple("PONG".into()))
        );
        let pool = Pool::new(endpoint(fake(b"+OK\r\n+OK\r\n")), Auth::default(), &[]).unwrap();
        assert_eq!(
            pool.call(&[b"PING"], soon()),
            Err(CacheError::TrailingBytes)
        );
        let pool = Pool::new(endpoint(fake(b"HTTP/1.1 400\r\n")), Auth::default(), &[]).unwrap();
        assert_eq!(
            pool.call(&[b"PING"], soon()),
            Err(CacheError::Protocol(resp::Invalid::UnknownType {
                byte: b'H'
            }))
        );
        let pool = Pool::new(endpoint(fake(b"")), Auth::default(), &[]).unwrap();
        assert_eq!(pool.call(&[b"PING"], soon()), Err(CacheError::Closed));
        let refused = Pool::new(
            endpoint(fake(b"-WRONGPASS invalid\r\n")),
            Auth {
                username: None,
                password: Some(Secret::new("pw".into())),
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            refused.call(&[b"PING"], soon()),
            Err(CacheError::Login("WRONGPASS invalid".into()))
        );
    }

    #[test]
    fn a_silent_server_times_out_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pool = Pool::new(endpoint(port), Auth::default(), &[]).unwrap();
        let started = Instant::now();
        let got = pool.call(&[b"PING"], Instant::now() + Duration::from_millis(150));
        assert_eq!(got, Err(CacheError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(listener);
    }
}
