//! The one outbound HTTP client, shared by the GitHub, Buildkite and JWKS callers.
//!
//! One [`ureq::Agent`] (rustls on ring) configured once from [`Settings`]:
//! - TLS roots: the platform CA bundle file (the usual Linux locations), falling back to ureq's
//!   embedded Mozilla roots when no bundle exists; plus every certificate of `SSL_CERT_FILE`.
//! - Proxy: only `HTTPS_PROXY` / `NO_PROXY` as given in [`Settings`]; ureq's own environment
//!   detection is switched off so nothing else counts.
//! - Redirects are never followed (a 3xx other than 304 is [`Error::Redirect`]); every status
//!   is returned as a [`Response`], the caller classifies it.
//! - Plain `http://` only to loopback hosts, checked on every call before any connection.
//! - Response bodies are capped while reading.
//!
//! Errors never contain header values (so never an `Authorization` secret).
//!
//! Every upstream caller (GitHub, Buildkite, the JWKS fetch) reports one [`Failure`] type: a
//! transport [`Error`] is classified once by [`Failure::from_transport`], a rate-limit answer is
//! read by the one [`rate_limit_backoff`], and each client holds a [`Backoff`] (the "upstream
//! told us to back off" circuit). What kitebridge answers its own caller for a failure is decided
//! by the caller, not here.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use ureq::http;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// The longest back-off honoured from one rate-limit answer.
pub const MAX_BACKOFF_SECS: u64 = 3600;
/// The back-off when an upstream answers 429 without saying for how long.
const DEFAULT_BACKOFF_SECS: u64 = 60;

/// The most calls in flight to one upstream host at once (the default of
/// [`Settings::max_in_flight`]); further calls wait for one to finish, within their own timeout.
pub const MAX_IN_FLIGHT_PER_UPSTREAM: usize = 64;

/// The JWKS response cap (64 KiB).
pub const MAX_JWKS_BODY: usize = 64 * 1024;
/// Whole-call timeout of a JWKS fetch (10 s, tighter than other calls; a tighter
/// [`Settings::timeout_global`] wins).
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Linux distributions keep the system CA bundle, tried in order.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Alpine
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // Fedora, RHEL 7+
    "/etc/pki/tls/certs/ca-bundle.crt",   // older RHEL, CentOS
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine (LibreSSL), macOS
];

/// Outbound HTTP settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `User-Agent` on every call. Default `kitebridge/<version>`.
    pub user_agent: String,
    /// Time allowed to connect (DNS, TCP, TLS handshake, proxy). Default 5 s.
    pub timeout_connect: Duration,
    /// Time allowed for a whole call, body included. Default 15 s.
    pub timeout_global: Duration,
    /// Response body cap for [`Client::get`] and [`Client::send`]. Default 1 MiB.
    pub max_body: usize,
    /// Extra PEM CA bundle trusted on top of the platform roots (`SSL_CERT_FILE`). Default none.
    pub ssl_cert_file: Option<PathBuf>,
    /// Proxy for every outbound call (`HTTPS_PROXY`), e.g. `http://proxy:3128`. Default none.
    pub https_proxy: Option<String>,
    /// Comma-separated hosts that bypass the proxy (`NO_PROXY`): `example.com` matches it and its
    /// subdomains, `.example.com` only subdomains, `*` everything. Default none.
    pub no_proxy: Option<String>,
    /// Told about every call (metrics). Default none.
    pub observer: Option<Observer>,
    /// Calls in flight per upstream host at most. Default [`MAX_IN_FLIGHT_PER_UPSTREAM`].
    pub max_in_flight: usize,
}

/// Told about every call: the upstream's host, the outcome (`2xx` … `5xx`, or `timeout`,
/// `connect`, `tls`, `error`) and how long it took.
#[derive(Clone)]
pub struct Observer(pub std::sync::Arc<ObserveFn>);

/// The function an [`Observer`] wraps: `(host, outcome, elapsed)`.
pub type ObserveFn = dyn Fn(&str, &str, Duration) + Send + Sync;

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            user_agent: format!("kitebridge/{}", crate::VERSION),
            timeout_connect: Duration::from_secs(5),
            timeout_global: Duration::from_secs(15),
            max_body: 1024 * 1024,
            ssl_cert_file: None,
            https_proxy: None,
            no_proxy: None,
            observer: None,
            max_in_flight: MAX_IN_FLIGHT_PER_UPSTREAM,
        }
    }
}

/// Why an outbound call failed (or the client could not be built).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The connect or whole-call timeout passed.
    Timeout,
    /// No connection: refused, unreachable, name not resolved, proxy failure.
    Connect(String),
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol error).
    Tls(String),
    /// The response body is larger than the caller's cap.
    BodyTooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// The upstream answered with a redirect, which is never followed.
    Redirect {
        /// The 3xx status.
        status: u16,
    },
    /// A non-success status where only success is usable (JWKS).
    Status {
        /// The status received.
        status: u16,
    },
    /// Plain `http://` to a host that is not loopback.
    InsecureUrl,
    /// The URL is not an absolute `http(s)://host/...` URL.
    BadUrl(String),
    /// The connection broke mid-call.
    Io(String),
    /// The client could not be configured (CA bundle, proxy).
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => write!(f, "timed out"),
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Tls(e) => write!(f, "tls failed: {e}"),
            Error::BodyTooLarge { max } => write!(f, "response body over {max} bytes"),
            Error::Redirect { status } => write!(f, "redirect ({status}) not followed"),
            Error::Status { status } => write!(f, "unexpected status {status}"),
            Error::InsecureUrl => write!(f, "plain http is allowed only to loopback hosts"),
            Error::BadUrl(e) => write!(f, "bad url: {e}"),
            Error::Io(e) => write!(f, "connection failed mid-call: {e}"),
            Error::Config(e) => write!(f, "outbound http configuration: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Whether a retry later may succeed (timeouts, connection failures, 5xx/429).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout | Error::Connect(_) | Error::Io(_) => true,
            Error::Status { status } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// HTTP methods kitebridge uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `DELETE`
    Delete,
}

impl Method {
    fn as_http(self) -> http::Method {
        match self {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Delete => http::Method::DELETE,
        }
    }
}

/// A response with any status. `Debug` shows header names and the body's length only (a mint
/// answer's body holds the new token).
#[derive(Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names lowercased, values as received (invalid UTF-8 replaced), in order.
    pub headers: Vec<(String, String)>,
    /// The body, at most the call's cap.
    pub body: Vec<u8>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Response {
    /// The first value of header `name` (give it lowercased).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Bounds the calls in flight per upstream host.
struct InFlight {
    max: usize,
    calls: Mutex<HashMap<String, usize>>,
    finished: Condvar,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place among the calls to `host`, waiting until `deadline` at most.
    fn enter(&self, host: &str, deadline: Instant) -> Result<Place<'_>, Error> {
        let mut calls = self.lock();
        while calls.get(host).copied().unwrap_or(0) >= self.max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            calls = match self.finished.wait_timeout(calls, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *calls.entry(host.to_owned()).or_insert(0) += 1;
        Ok(Place {
            gate: self,
            host: host.to_owned(),
        })
    }
}

/// One call's place in [`InFlight`]; given up on drop.
struct Place<'a> {
    gate: &'a InFlight,
    host: String,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut calls = self.gate.lock();
        if let Some(count) = calls.get_mut(&self.host) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                calls.remove(&self.host);
            }
        }
        drop(calls);
        self.gate.finished.notify_all();
    }
}

/// The outbound client. Cheap to share behind an `Arc`; one connection pool for all callers.
///
/// A call is a wait on something outside this process: it runs without the caller's
/// request-handling permit ([`crate::http::without_permit`]), and at most
/// [`Settings::max_in_flight`] calls to one host are in flight at once (the others wait, within
/// their whole-call timeout).
pub struct Client {
    agent: ureq::Agent,
    max_body: usize,
    timeout_global: Duration,
    observer: Option<Observer>,
    in_flight: InFlight,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream::Client")
    }
}

impl Client {
    /// Builds the client; fails on an unreadable `SSL_CERT_FILE` or an invalid proxy URL.
    pub fn new(settings: &Settings) -> Result<Client, Error> {
        let tls = TlsConfig::builder()
            .root_certs(root_certs(settings.ssl_cert_file.as_deref())?)
            .build();
        let proxy = match &settings.https_proxy {
            Some(url) => Some(proxy(url, settings.no_proxy.as_deref())?),
            None => None,
        };
        let config = ureq::Agent::config_builder()
            .user_agent(settings.user_agent.as_str())
            .timeout_connect(Some(settings.timeout_connect))
            .timeout_global(Some(settings.timeout_global))
            .max_redirects(0)
            .http_status_as_error(false)
            .tls_config(tls)
            .proxy(proxy) // replaces ureq's own environment detection
            .build();
        Ok(Client {
            agent: config.new_agent(),
            max_body: settings.max_body,
            timeout_global: settings.timeout_global,
            observer: settings.observer.clone(),
            in_flight: InFlight {
                max: settings.max_in_flight.max(1),
                calls: Mutex::new(HashMap::new()),
                finished: Condvar::new(),
            },
        })
    }

    /// One call. Returns the response whatever its status, except 3xx (but 304), which is
    /// [`Error::Redirect`]. The body is refused beyond `max_body` bytes.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        max_body: usize,
    ) -> Result<Response, Error> {
        self.observed(&Call {
            method,
            url,
            headers,
            body,
            max_body,
            timeout: None,
        })
    }

    /// One call, reported to the observer: without the caller's request-handling permit, and
    /// after a place among the calls in flight to its host.
    fn observed(&self, call: &Call<'_>) -> Result<Response, Error> {
        crate::http::without_permit(|| {
            let timeout = call.timeout.unwrap_or(self.timeout_global);
            let started = Instant::now();
            let result = self
                .in_flight
                .enter(host_of(call.url), started + timeout)
                .and_then(|_place| self.call(call));
            self.report(call, &result, started);
            result
        })
    }

    fn report(&self, call: &Call<'_>, result: &Result<Response, Error>, started: Instant) {
        if let Some(Observer(observe)) = &self.observer {
            let outcome = match &result {
                Ok(response) => format!("{}xx", response.status / 100),
                Err(Error::Timeout) => "timeout".into(),
                Err(Error::Connect(_)) => "connect".into(),
                Err(Error::Tls(_)) => "tls".into(),
                Err(_) => "error".into(),
            };
            observe(host_of(call.url), &outcome, started.elapsed());
        }
    }

    fn call(&self, call: &Call<'_>) -> Result<Response, Error> {
        let Call {
            method,
            url,
            headers,
            body,
            max_body,
            timeout,
        } = *call;
        check_url(url)?;
        let mut builder = http::Request::builder().method(method.as_http()).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let sent = match body {
            Some(bytes) => builder.body(bytes).map(|r| self.run(r, timeout)),
            None => builder.body(()).map(|r| self.run(r, timeout)),
        };
        // An http::Error names the bad part, never a header value.
        let mut response = sent
            .map_err(|e| Error::BadUrl(e.to_string()))?
            .map_err(from_ureq)?;
        let status = response.status().as_u16();
        log::debug!("upstream {method:?} {url:?} -> {status}");
        if (300..400).contains(&status) && status != 304 {
            return Err(Error::Redirect { status });
        }
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = read_body(response.body_mut(), max_body)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// `GET` with the default body cap ([`Settings::max_body`]).
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
        self.request(Method::Get, url, headers, None, self.max_body)
    }

    /// [`Client::request`] with the default body cap.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        self.request(method, url, headers, body, self.max_body)
    }

    /// Runs one request, with a tighter whole-call timeout when given.
    fn run<S: ureq::AsSendBody>(
        &self,
        request: http::Request<S>,
        timeout: Option<Duration>,
    ) -> Result<http::Response<ureq::Body>, ureq::Error> {
        match timeout {
            Some(t) => self.agent.run(
                self.agent
                    .configure_request(request)
                    .timeout_global(Some(t))
                    .build(),
            ),
            None => self.agent.run(request),
        }
    }

    /// Fetches a JWKS document: `GET` capped at 64 KiB, anything but 200 is a failure (a 5xx or
    /// 429 [`Failure::Unavailable`], another status [`Failure::Unusable`]). Returns the body and
    /// the `Cache-Control: max-age` in seconds when present (the caller clamps it).
    pub fn fetch_jwks(&self, url: &str) -> Result<(Vec<u8>, Option<u64>), Failure> {
        let accept = [("Accept", "application/json")];
        let response = self
            .observed(&Call {
                method: Method::Get,
                url,
                headers: &accept,
                body: None,
                max_body: MAX_JWKS_BODY,
                timeout: Some(JWKS_TIMEOUT.min(self.timeout_global)),
            })
            .map_err(|e| Failure::from_transport(Service::Jwks, e))?;
        if response.status != 200 {
            let status = Error::Status {
                status: response.status,
            };
            return Err(Failure::from_transport(Service::Jwks, status));
        }
        let max_age = response.header("cache-control").and_then(parse_max_age);
        Ok((response.body, max_age))
    }
}

/// One outbound call's parts.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: Method,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a [u8]>,
    /// The response body cap.
    max_body: usize,
    /// A whole-call timeout tighter than [`Settings::timeout_global`].
    timeout: Option<Duration>,
}

/// The host (and port) of a URL, for metrics labels (configured base URLs only).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// The `max-age` directive of a `Cache-Control` value, in seconds.
pub fn parse_max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.parse().ok()
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment or one
/// query value built from untrusted text.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses anything but `https://`, and `http://` to a loopback host.
fn check_url(url: &str) -> Result<(), Error> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| Error::BadUrl("not an absolute url".into()))?;
    let host = uri.host().ok_or_else(|| Error::BadUrl("no host".into()))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(Error::InsecureUrl),
        _ => Err(Error::BadUrl("scheme must be https".into())),
    }
}

/// `localhost`, `127.0.0.0/8` or `::1` (with or without the URI form's IPv6 brackets).
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_body(body: &mut ureq::Body, max_body: usize) -> Result<Vec<u8>, Error> {
    let max = u64::try_from(max_body).unwrap_or(u64::MAX);
    if body.content_length().is_some_and(|len| len > max) {
        return Err(Error::BodyTooLarge { max: max_body });
    }
    // ureq refuses a read once its limit is used up, so allow one byte more and decide here.
    let bytes = body
        .with_config()
        .limit(max.saturating_add(1))
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Error::BodyTooLarge { max: max_body },
            other => from_ureq(other),
        })?;
    if bytes.len() > max_body {
        return Err(Error::BodyTooLarge { max: max_body });
    }
    Ok(bytes)
}

fn from_ureq(error: ureq::Error) -> Error {
    use std::io::ErrorKind;
    match error {
        ureq::Error::Timeout(_) => Error::Timeout,
        ureq::Error::HostNotFound => Error::Connect("host not found".into()),
        ureq::Error::ConnectionFailed => Error::Connect("connection failed".into()),
        ureq::Error::ConnectProxyFailed(e) => Error::Connect(format!("proxy: {e:?}")),
        ureq::Error::BodyExceedsLimit(_) => Error::Io("body limit".into()),
        ureq::Error::Io(e) => match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Error::Timeout,
            ErrorKind::ConnectionRefused
            | ErrorKind::AddrNotAvailable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::HostUnreachable => Error::Connect(e.kind().to_string()),
            _ => Error::Io(e.to_string()),
        },
        ureq::Error::Tls(e) => Error::Tls(e.into()),
        ureq::Error::Pem(e) => Error::Tls(e.to_string()),
        ureq::Error::Rustls(e) => Error::Tls(e.to_string()),
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
            Error::BadUrl("rejected by the http client".into())
        }
        other => Error::Io(other.to_string()),
    }
}

/// Platform roots plus `SSL_CERT_FILE`; ureq's embedded roots when there is neither.
fn root_certs(extra: Option<&Path>) -> Result<RootCerts, Error> {
    let mut certs = system_bundle();
    if let Some(path) = extra {
        let found = read_pem_certs(path)
            .map_err(|e| Error::Config(format!("SSL_CERT_FILE {path:?}: {e}")))?;
        if found.is_empty() {
            return Err(Error::Config(format!(
                "SSL_CERT_FILE {path:?}: no certificate found"
            )));
        }
        certs.extend(found);
    }
    if certs.is_empty() {
        log::info!("no system CA bundle found; using the embedded Mozilla roots");
        return Ok(RootCerts::WebPki);
    }
    Ok(RootCerts::from(certs))
}

/// The certificates the upstreams trust beyond ureq's embedded roots: the system bundle plus
/// `SSL_CERT_FILE`, as DER (for other TLS clients, such as the shared cache's). Empty when there
/// is neither.
pub fn trust_roots(extra: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let der = |path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    let mut certs = SYSTEM_CA_BUNDLES
        .iter()
        .filter_map(|path| der(Path::new(path)).ok())
        .find(|certs| !certs.is_empty())
        .unwrap_or_default();
    if let Some(path) = extra {
        certs.extend(der(path).map_err(|e| Error::Config(format!("SSL_CERT_FILE {path:?}: {e}")))?);
    }
    Ok(certs)
}

/// The first system bundle that yields at least one certificate.
fn system_bundle() -> Vec<Certificate<'static>> {
    SYSTEM_CA_BUNDLES
        .iter()
        .filter_map(|path| read_pem_certs(Path::new(path)).ok())
        .find(|certs| !certs.is_empty())
        .unwrap_or_default()
}

fn read_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?;
    iter.map(|cert| cert.map(|der| Certificate::from_der(der.as_ref()).to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// The proxy with `NO_PROXY` entries; a bare `example.com` also covers its subdomains, as curl does.
fn proxy(url: &str, no_proxy: Option<&str>) -> Result<ureq::Proxy, Error> {
    let parsed = ureq::Proxy::new(url)
        .map_err(|_| Error::Config("HTTPS_PROXY is not a valid proxy url".into()))?;
    let mut builder = ureq::Proxy::builder(parsed.protocol())
        .host(parsed.host())
        .port(parsed.port());
    if let Some(user) = parsed.username() {
        builder = builder.username(user);
    }
    if let Some(password) = parsed.password() {
        builder = builder.password(password);
    }
    for entry in no_proxy
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        builder = builder.no_proxy(entry);
        if !entry.starts_with('.') && !entry.starts_with('*') {
            builder = builder.no_proxy(&format!(".{entry}"));
        }
    }
    builder
        .build()
        .map_err(|_| Error::Config("HTTPS_PROXY is not a valid proxy url".into()))
}

/// Which upstream a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The GitHub REST API.
    GitHub,
    /// The Buildkite REST API.
    Buildkite,
    /// The OIDC key set (`JWT_JWKS_URL`).
    Jwks,
}

impl Service {
    /// A [`Failure::Refused`] of this service.
    pub fn refused(self, detail: impl Into<String>) -> Failure {
        Failure::Refused {
            service: self,
            detail: detail.into(),
        }
    }

    /// A [`Failure::Unusable`] of this service.
    pub fn unusable(self, detail: impl Into<String>) -> Failure {
        Failure::Unusable {
            service: self,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::GitHub => "github",
            Service::Buildkite => "buildkite",
            Service::Jwks => "jwks",
        })
    }
}

/// An upstream call that gave no usable answer, classified once. `Display` is a short lowercase
/// line starting with the service, e.g. `github rate limited: retry after 30s`; it never holds a
/// header value, a token or a JWT.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The upstream told us to back off, or its circuit is still open.
    RateLimited {
        /// Who said so.
        service: Service,
        /// Seconds until calling again (at least 1).
        retry_after_secs: u64,
    },
    /// Timeout, connection failure, a connection broken mid-call, or a 5xx: a later retry may
    /// succeed.
    Unavailable {
        /// Who failed.
        service: Service,
        /// What happened.
        detail: String,
    },
    /// The upstream refused our own credentials or configuration (401/403/404/422 on our calls,
    /// the pipeline unknown to our API token, a repository that is not on GitHub, an insecure or
    /// bad URL refused locally): an operator must act.
    Refused {
        /// Who refused.
        service: Service,
        /// What was refused.
        detail: String,
    },
    /// An answer that cannot be used: unparseable JSON, missing field, a grant wider than asked,
    /// an unexpected status, a redirect, a body over its cap, a failed TLS handshake.
    Unusable {
        /// Who answered.
        service: Service,
        /// What is wrong with the answer.
        detail: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::RateLimited {
                service,
                retry_after_secs,
            } => write!(f, "{service} rate limited: retry after {retry_after_secs}s"),
            Failure::Unavailable { service, detail } => {
                write!(f, "{service} unavailable: {detail}")
            }
            Failure::Refused { service, detail } => write!(f, "{service} refused: {detail}"),
            Failure::Unusable { service, detail } => {
                write!(f, "{service} answer unusable: {detail}")
            }
        }
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// Which upstream failed.
    pub fn service(&self) -> Service {
        match self {
            Failure::RateLimited { service, .. }
            | Failure::Unavailable { service, .. }
            | Failure::Refused { service, .. }
            | Failure::Unusable { service, .. } => *service,
        }
    }

    /// Seconds for a `Retry-After` header: `Some` only for [`Failure::RateLimited`].
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Failure::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Classifies a transport error once: transient ones ([`Error::is_transient`]) are
    /// [`Failure::Unavailable`], a URL or client configuration refused locally is
    /// [`Failure::Refused`], the rest (TLS, redirect, body cap, another status) is
    /// [`Failure::Unusable`]. The detail is the error's text, which never holds a header value.
    pub fn from_transport(service: Service, e: Error) -> Failure {
        let detail = e.to_string();
        if e.is_transient() {
            return Failure::Unavailable { service, detail };
        }
        match e {
            Error::InsecureUrl | Error::BadUrl(_) | Error::Config(_) => {
                Failure::Refused { service, detail }
            }
            _ => Failure::Unusable { service, detail },
        }
    }
}

/// Back-off seconds when `response` is a rate-limit answer, `None` otherwise; at least 1, at most
/// [`MAX_BACKOFF_SECS`]. `now` is Unix seconds. Only a 403 or 429 can be one:
/// - `retry-after` (seconds) wins;
/// - else `x-ratelimit-remaining: 0` (GitHub): until `x-ratelimit-reset` (Unix seconds), 60 s
///   without it;
/// - else a 429: `ratelimit-reset` (seconds until the window resets; Buildkite), else 60 s;
/// - else (a 403 without those headers) it is not a rate limit.
pub fn rate_limit_backoff(response: &Response, now: u64) -> Option<u64> {
    if !matches!(response.status, 403 | 429) {
        return None;
    }
    let seconds = |name: &str| {
        response
            .header(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let wait = if let Some(secs) = seconds("retry-after") {
        secs
    } else if response.header("x-ratelimit-remaining").map(str::trim) == Some("0") {
        seconds("x-ratelimit-reset").map_or(DEFAULT_BACKOFF_SECS, |reset| reset.saturating_sub(now))
    } else if response.status == 429 {
        seconds("ratelimit-reset").unwrap_or(DEFAULT_BACKOFF_SECS)
    } else {
        return None;
    };
    Some(wait.clamp(1, MAX_BACKOFF_SECS))
}

/// One upstream's rate-limit circuit: once it answers "back off for N seconds", every call in
/// those N seconds fails fast. Each upstream client holds one. Time is passed in (Unix seconds).
#[derive(Debug)]
pub struct Backoff {
    service: Service,
    /// Until when calls fail fast; `None` while closed.
    open_until: Mutex<Option<u64>>,
}

impl Backoff {
    /// A closed circuit for `service`.
    pub fn new(service: Service) -> Backoff {
        Backoff {
            service,
            open_until: Mutex::new(None),
        }
    }

    /// Before a call: [`Failure::RateLimited`] with the seconds left while the circuit is open.
    pub fn check(&self, now: u64) -> Result<(), Failure> {
        let slot = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match slot.filter(|until| *until > now) {
            Some(until) => Err(Failure::RateLimited {
                service: self.service,
                retry_after_secs: until - now,
            }),
            None => Ok(()),
        }
    }

    /// After a call: when `response` is a rate-limit answer ([`rate_limit_backoff`]), opens the
    /// circuit for its back-off (never shortening it), logs one warning and returns
    /// [`Failure::RateLimited`] with that back-off.
    pub fn observe(&self, response: &Response, now: u64) -> Result<(), Failure> {
        let Some(retry_after_secs) = rate_limit_backoff(response, now) else {
            return Ok(());
        };
        log::warn!(
            "{} rate limited us ({}); not calling for {retry_after_secs}s",
            self.service,
            response.status
        );
        let until = now.saturating_add(retry_after_secs);
        let mut slot = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(slot.map_or(until, |old| old.max(until)));
        Err(Failure::RateLimited {
            service: self.service,
            retry_after_secs,
        })
    }
}

/// A serde_json error described without its text, which can quote the input (e.g. a token).
pub fn json_error(e: &serde_json::Error) -> String {
    format!(
        "invalid json ({:?} at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_forms() {
        let cases: &[(&str, Option<u64>)] = &[
            ("max-age=300", Some(300)),
            ("public, max-age=3600, must-revalidate", Some(3600)),
            ("Max-Age = 60", Some(60)),
            ("max-age=\"120\"", Some(120)),
            ("no-store", None),
            ("max-age=", None),
            ("max-age=-5", None),
            ("max-age=1e3", None),
            ("s-maxage=10", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_max_age(value), *want, "{value:?}");
        }
    }

    #[test]
    fn percent_encoding() {
        let cases: &[(&str, &str)] = &[
            ("plain-Name_1.2~", "plain-Name_1.2~"),
            ("a/b", "a%2Fb"),
            ("../x", "..%2Fx"),
            ("a b?c#d&e=f", "a%20b%3Fc%23d%26e%3Df"),
            ("é", "%C3%A9"),
            ("%", "%25"),
        ];
        for (raw, want) in cases {
            assert_eq!(percent_encode(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn url_policy() {
        let cases: &[(&str, Result<(), Error>)] = &[
            ("https://api.github.com/app", Ok(())),
            ("http://127.0.0.1:8080/x", Ok(())),
            ("http://127.9.9.9/x", Ok(())),
            ("http://localhost:1/x", Ok(())),
            ("http://[::1]:1/x", Ok(())),
            ("http://api.github.com/x", Err(Error::InsecureUrl)),
            ("http://10.0.0.1/x", Err(Error::InsecureUrl)),
            ("http://127.0.0.1.example.com/x", Err(Error::InsecureUrl)),
        ];
        for (url, want) in cases {
            assert_eq!(check_url(url), *want, "{url:?}");
        }
        assert!(matches!(
            check_url("ftp://example.com/x"),
            Err(Error::BadUrl(_))
        ));
        assert!(matches!(check_url("/relative"), Err(Error::BadUrl(_))));
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    /// (status, headers, seconds to back off)
    type RateCase = (u16, &'static [(&'static str, &'static str)], Option<u64>);

    #[test]
    fn rate_limit_answers() {
        let now = 1000;
        let cases: &[RateCase] = &[
            // GitHub: 403/429 with retry-after or x-ratelimit-remaining: 0.
            (403, &[("retry-after", "30")], Some(30)),
            (429, &[("retry-after", "0")], Some(1)),
            (
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1090"),
                ],
                Some(90),
            ),
            (
                403,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "900")],
                Some(1),
            ),
            (403, &[("x-ratelimit-remaining", "0")], Some(60)),
            (429, &[], Some(60)),
            (403, &[("retry-after", "999999")], Some(MAX_BACKOFF_SECS)),
            (403, &[], None),
            (403, &[("x-ratelimit-remaining", "10")], None),
            (500, &[("retry-after", "30")], None),
            // Buildkite: 429 with RateLimit-* headers (seconds until the window resets).
            (429, &[("ratelimit-reset", "42")], Some(42)),
            (
                429,
                &[("retry-after", "5"), ("ratelimit-reset", "42")],
                Some(5),
            ),
            (429, &[("ratelimit-reset", "0")], Some(1)),
            (
                429,
                &[("ratelimit-reset", "999999")],
                Some(MAX_BACKOFF_SECS),
            ),
            (429, &[("ratelimit-reset", "soon")], Some(60)),
            (403, &[("ratelimit-reset", "42")], None),
            (200, &[("ratelimit-reset", "42")], None),
        ];
        for (status, headers, want) in cases {
            assert_eq!(
                rate_limit_backoff(&response(*status, headers), now),
                *want,
                "{status} {headers:?}"
            );
        }
    }

    #[test]
    fn circuit_opens_and_closes_with_time() {
        let backoff = Backoff::new(Service::GitHub);
        let limited = |retry_after_secs| {
            Err(Failure::RateLimited {
                service: Service::GitHub,
                retry_after_secs,
            })
        };
        assert_eq!(backoff.check(100), Ok(()));
        assert_eq!(backoff.observe(&response(200, &[]), 100), Ok(()));
        assert_eq!(backoff.observe(&response(403, &[]), 100), Ok(()));
        assert_eq!(backoff.check(100), Ok(()));

        let thirty = response(429, &[("retry-after", "30")]);
        assert_eq!(backoff.observe(&thirty, 100), limited(30));
        assert_eq!(backoff.check(100), limited(30));
        let ten = response(429, &[("retry-after", "10")]);
        assert_eq!(
            backoff.observe(&ten, 100),
            limited(10),
            "this answer's wait"
        );
        assert_eq!(backoff.check(129), limited(1), "never shortened");
        assert_eq!(backoff.check(130), Ok(()));
    }

    #[test]
    fn failures_name_their_service() {
        let cases = [
            (
                Failure::RateLimited {
                    service: Service::GitHub,
                    retry_after_secs: 30,
                },
                "github rate limited: retry after 30s",
            ),
            (
                Failure::Unavailable {
                    service: Service::Buildkite,
                    detail: "timed out".into(),
                },
                "buildkite unavailable: timed out",
            ),
            (
                Failure::Refused {
                    service: Service::GitHub,
                    detail: "mint: github answered 422".into(),
                },
                "github refused: mint: github answered 422",
            ),
            (
                Failure::Unusable {
                    service: Service::Jwks,
                    detail: "unexpected status 404".into(),
                },
                "jwks answer unusable: unexpected status 404",
            ),
        ];
        for (failure, text) in &cases {
            assert_eq!(failure.to_string(), *text);
        }
        assert_eq!(cases[0].0.retry_after_secs(), Some(30));
        assert_eq!(cases[1].0.retry_after_secs(), None);
        assert_eq!(cases[1].0.service(), Service::Buildkite);
        assert_eq!(cases[3].0.service(), Service::Jwks);
    }

    #[test]
    fn transport_errors_are_classified_once() {
        let service = Service::Buildkite;
        let kind = |e: Error| match Failure::from_transport(service, e) {
            Failure::Unavailable { .. } => "unavailable",
            Failure::Refused { .. } => "refused",
            Failure::Unusable { .. } => "unusable",
            Failure::RateLimited { .. } => "rate limited",
        };
        let cases = [
            (Error::Timeout, "unavailable"),
            (Error::Connect("refused".into()), "unavailable"),
            (Error::Io("reset".into()), "unavailable"),
            (Error::Status { status: 503 }, "unavailable"),
            (Error::Status { status: 429 }, "unavailable"),
            (Error::InsecureUrl, "refused"),
            (Error::BadUrl("no host".into()), "refused"),
            (Error::Config("proxy".into()), "refused"),
            (Error::Tls("unknown issuer".into()), "unusable"),
            (Error::BodyTooLarge { max: 1 }, "unusable"),
            (Error::Redirect { status: 302 }, "unusable"),
            (Error::Status { status: 404 }, "unusable"),
        ];
        for (error, want) in cases {
            assert_eq!(kind(error.clone()), want, "{error:?}");
        }
        assert_eq!(
            Failure::from_transport(service, Error::Timeout),
            Failure::Unavailable {
                service,
                detail: "timed out".into()
            }
        );
    }

    #[test]
    fn json_errors_do_not_quote_the_input() {
        let e = serde_json::from_slice::<u64>(br#""ghs_secret""#).unwrap_err();
        assert!(
            e.to_string().contains("ghs_secret"),
            "serde quotes the input"
        );
        let text = json_error(&e);
        assert!(
            text.starts_with("invalid json (Data at line 1 column"),
            "{text}"
        );
        assert!(!text.contains("ghs_"), "{text}");
    }

    #[test]
    fn transient_classes() {
        assert!(Error::Timeout.is_transient());
        assert!(Error::Connect("refused".into()).is_transient());
        assert!(Error::Status { status: 503 }.is_transient());
        assert!(!Error::Status { status: 404 }.is_transient());
        assert!(!Error::Redirect { status: 302 }.is_transient());
        assert!(!Error::BodyTooLarge { max: 1 }.is_transient());
        assert!(!Error::InsecureUrl.is_transient());
    }
}
