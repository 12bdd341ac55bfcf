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
//! [`RateCircuit`] is the shared "upstream told us to back off" breaker.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use ureq::http;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// The JWKS response cap (64 KiB), see `upstreams.md`.
pub const MAX_JWKS_BODY: usize = 64 * 1024;
/// Whole-call timeout of a JWKS fetch (`oidc.md`: 10 s, tighter than other calls; a tighter
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

/// The outbound client. Cheap to share behind an `Arc`; one connection pool for all callers.
pub struct Client {
    agent: ureq::Agent,
    max_body: usize,
    timeout_global: Duration,
    observer: Option<Observer>,
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
        self.observed(method, url, headers, body, max_body, None)
    }

    /// [`Client::request`] with an optional tighter whole-call timeout, reported to the observer.
    fn observed(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        max_body: usize,
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
        let started = std::time::Instant::now();
        let result = self.call(method, url, headers, body, max_body, timeout);
        if let Some(Observer(observe)) = &self.observer {
            let outcome = match &result {
                Ok(response) => format!("{}xx", response.status / 100),
                Err(Error::Timeout) => "timeout".into(),
                Err(Error::Connect(_)) => "connect".into(),
                Err(Error::Tls(_)) => "tls".into(),
                Err(_) => "error".into(),
            };
            observe(host_of(url), &outcome, started.elapsed());
        }
        result
    }

    fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        max_body: usize,
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
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

    /// Fetches a JWKS document: `GET` capped at 64 KiB, anything but 200 is an error. Returns the
    /// body and the `Cache-Control: max-age` in seconds when present (the caller clamps it).
    pub fn fetch_jwks(&self, url: &str) -> Result<(Vec<u8>, Option<u64>), Error> {
        let accept = [("Accept", "application/json")];
        let response = self.observed(
            Method::Get,
            url,
            &accept,
            None,
            MAX_JWKS_BODY,
            Some(JWKS_TIMEOUT.min(self.timeout_global)),
        )?;
        if response.status != 200 {
            return Err(Error::Status {
                status: response.status,
            });
        }
        let max_age = response.header("cache-control").and_then(parse_max_age);
        Ok((response.body, max_age))
    }
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

/// A rate-limit circuit: once an upstream says "back off until T", calls before T fail fast.
/// Time is passed in.
#[derive(Debug, Default)]
pub struct RateCircuit {
    open_until: Mutex<Option<u64>>,
}

impl RateCircuit {
    /// Opens (or extends) the circuit until `until` (Unix seconds).
    pub fn open(&self, until: u64) {
        let mut slot = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(slot.map_or(until, |old| old.max(until)));
    }

    /// Seconds left while open at `now` (at least 1), `None` when closed.
    pub fn remaining(&self, now: u64) -> Option<u64> {
        let slot = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        slot.filter(|until| *until > now).map(|until| until - now)
    }
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

    #[test]
    fn circuit_opens_and_closes_with_time() {
        let circuit = RateCircuit::default();
        assert_eq!(circuit.remaining(100), None);
        circuit.open(130);
        assert_eq!(circuit.remaining(100), Some(30));
        circuit.open(110); // never shortened
        assert_eq!(circuit.remaining(129), Some(1));
        assert_eq!(circuit.remaining(130), None);
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
