//! The application: its shared state built from the configuration, and the process lifecycle
//! (listen, become ready, serve, drain) that `main` and the tests share. The routes are in
//! [`crate::routes`].
#![forbid(unsafe_code)]

use crate::audit::AuditLog;
use crate::buildkite;
use crate::config::{AuditTarget, Config, JwksSource, Metrics as MetricsConfig, RateLimit};
use crate::github;
use crate::http::{ErrorStyle, Limits, Method, Pool, Request, Router, Server, ServerHandle};
use crate::metrics::{self, Metrics};
use crate::oidc::{self, FetchedJwks, KeySource, KeyStore, Verifier};
use crate::profiles::{self, Generation, Store};
use crate::ratelimit::RateLimiter;
use crate::time;
use crate::upstream;
use crate::vend::{self, Vendor};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Why the application could not be built from a (syntactically valid) configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A configuration value that only fails when used (exit status 2).
    Config(String),
    /// An I/O failure (audit file, listener, threads).
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(what) => write!(f, "invalid configuration: {what}"),
            StartError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// Shared state of a running kitebridge.
pub struct App {
    pub config: Config,
    pub audit: AuditLog,
    pub keys: Arc<KeyStore>,
    pub(crate) verifier: Verifier,
    pub vendor: Vendor,
    pub metrics: Arc<Metrics>,
    /// The profile generations; a request takes one with [`Store::current`] and uses only it.
    pub profiles: Arc<Store>,
    pub(crate) per_source: Option<RateLimiter<IpAddr>>,
    pub(crate) per_pipeline: Option<RateLimiter<String>>,
    ready: AtomicBool,
    pub(crate) server: OnceLock<ServerHandle>,
}

fn limiter<K: Eq + std::hash::Hash + Clone>(limit: &RateLimit) -> Option<RateLimiter<K>> {
    match limit {
        RateLimit::Off => None,
        RateLimit::Limit { count, window_secs } => {
            Some(RateLimiter::new(*count, Duration::from_secs(*window_secs)))
        }
    }
}

impl App {
    /// Builds the application: audit log, upstream clients, key store, vendor, profiles.
    pub fn new(config: Config) -> Result<App, StartError> {
        let audit = match &config.audit_log {
            AuditTarget::Stdout => AuditLog::stdout(),
            AuditTarget::Stderr => AuditLog::stderr(),
            AuditTarget::File(path) => AuditLog::file(path)?,
        };
        let metrics = Arc::new(Metrics::default());
        let observer = {
            let metrics = Arc::clone(&metrics);
            upstream::Observer(Arc::new(
                move |host: &str, outcome: &str, elapsed: Duration| {
                    metrics.upstream(host, outcome, elapsed)
                },
            ))
        };
        let http = Arc::new(
            upstream::Client::new(&upstream::Settings {
                user_agent: format!("kitebridge/{}", crate::VERSION),
                ssl_cert_file: config.ssl_cert_file.clone(),
                https_proxy: config.https_proxy.clone(),
                no_proxy: config.no_proxy.clone(),
                observer: Some(observer),
                ..upstream::Settings::default()
            })
            .map_err(|e| StartError::Config(format!("upstream client: {e}")))?,
        );
        let keys = Arc::new(KeyStore::new(match &config.jwks {
            JwksSource::Static(doc) => KeySource::Static(doc.clone()),
            JwksSource::Url(url) => {
                let (http, url, metrics) = (Arc::clone(&http), url.clone(), Arc::clone(&metrics));
                KeySource::Fetch(Box::new(move || {
                    let fetched = http.fetch_jwks(&url);
                    let outcome = if fetched.is_ok() { "ok" } else { "error" };
                    metrics.count(metrics::JWKS_FETCHES, &[("outcome", outcome)]);
                    fetched
                        .map(|(body, max_age_secs)| FetchedJwks { body, max_age_secs })
                        .map_err(|e| e.to_string())
                }))
            }
        }));
        if matches!(config.jwks, JwksSource::Static(_)) {
            keys.load(time::now_unix())
                .map_err(|e| StartError::Config(format!("JWT_JWKS_STATIC: {e}")))?;
        }
        let verifier = Verifier::new(
            oidc::Settings {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                organization_slug: config.organization_slug.clone(),
                organization_id: config.organization_id.clone(),
                leeway_secs: config.leeway_secs,
                max_lifetime_secs: config.max_lifetime_secs,
            },
            Arc::clone(&keys),
        );
        let key = github::AppKey::from_pem(config.github_app_private_key.expose().as_bytes())
            .map_err(|e| StartError::Config(format!("GITHUB_APP_PRIVATE_KEY: {e}")))?;
        let github = Arc::new(github::Client::new(
            Arc::clone(&http),
            github::Settings {
                api_url: config.github_api_url.clone(),
                app_id: config.github_app_id.clone(),
                installation_id: config.github_installation_id,
            },
            key,
        ));
        let buildkite = match &config.buildkite_api_token {
            Some(token) => {
                let token = crate::secret::Secret::header_safe(token.expose().to_owned())
                    .ok_or_else(|| StartError::Config("BUILDKITE_API_TOKEN: unusable".into()))?;
                let settings = buildkite::Settings {
                    api_url: config.buildkite_api_url.clone(),
                    cache_secs: config.pipeline_cache_secs,
                    github_host: config.github_host.clone(),
                };
                Some(buildkite::Client::new(Arc::clone(&http), settings, token))
            }
            None => {
                log::warn!("BUILDKITE_API_TOKEN is not set: pipeline profiles will answer 500");
                None
            }
        };
        let vendor = Vendor::new(
            vend::Settings {
                github_host: config.github_host.clone(),
                token_min_remaining_secs: config.token_min_remaining_secs,
                token_cache_max_entries: config.token_cache_max_entries,
            },
            Arc::clone(&github),
            buildkite,
        );
        let profiles = profiles::start(
            &config.profiles,
            Arc::clone(&github),
            config.profiles_refresh_secs,
        )?;
        Ok(App {
            per_source: limiter(&config.rate_limit_per_source),
            per_pipeline: limiter(&config.rate_limit_per_pipeline),
            config,
            audit,
            keys,
            verifier,
            vendor,
            metrics,
            profiles,
            ready: AtomicBool::new(false),
            server: OnceLock::new(),
        })
    }

    /// The profile generation a request uses (one read per request), once loaded.
    pub fn generation(&self) -> Option<Arc<Generation>> {
        self.profiles.current()
    }

    /// Ready to vend: listening, the key set loaded once, the installation's account known, the
    /// first profile generation loaded; and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && !self.server.get().is_some_and(ServerHandle::is_draining)
    }

    /// One attempt at everything readiness waits for; returns whether all is there now.
    fn try_become_ready(&self) -> bool {
        let now = time::now_unix();
        if !self.keys.is_loaded() {
            // The key store logs the failure itself; readiness retries.
            let _ = self.keys.load(now);
        }
        if self.vendor.account().is_none() {
            match self.vendor.learn_account(now) {
                Ok(login) => log::info!(
                    "installation {} belongs to {login:?}",
                    self.config.github_installation_id
                ),
                Err(e) => log::warn!("installation account not known yet (retrying): {e}"),
            }
        }
        let ready =
            self.keys.is_loaded() && self.vendor.account().is_some() && self.generation().is_some();
        self.ready.store(ready, Ordering::SeqCst);
        ready
    }

    /// The edge limits from the configuration.
    pub fn limits(&self) -> Limits {
        let c = &self.config;
        Limits {
            workers: c.server_workers,
            max_connections: c.max_connections,
            timeout_header: Duration::from_secs(c.timeout_header_secs),
            timeout_body: Duration::from_secs(c.timeout_body_secs),
            timeout_idle: Duration::from_secs(c.timeout_idle_secs),
            timeout_write: Duration::from_secs(10),
        }
    }
}

/// A running server: its address and handle, and the thread accepting connections.
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    accept: std::thread::JoinHandle<()>,
}

impl Running {
    /// Blocks until the accept loop ends (after [`ServerHandle::begin_shutdown`]).
    pub fn wait(self) {
        let _ = self.accept.join();
    }
}

/// Opens the listener from the configuration (used when systemd passed none).
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(config.server_host, config.server_port))
}

/// Starts serving on `listener` in a background thread, and a readiness thread that retries what
/// readiness waits for (first after 200 ms, backing off to every 5 s) and then calls `on_ready`
/// with the profile status line.
pub fn start(
    app: App,
    listener: TcpListener,
    on_ready: impl FnOnce(String) + Send + 'static,
) -> io::Result<Running> {
    let app = Arc::new(app);
    let server = Server::new(listener, crate::routes::router(&app), app.limits())?;
    let addr = server.local_addr()?;
    let handle = server.handle();
    let _ = app.server.set(handle.clone());
    let accept = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || server.run())?;
    log::info!("kitebridge {} listening on http://{addr}", crate::VERSION);
    let ready_app = Arc::clone(&app);
    std::thread::Builder::new()
        .name("readiness".into())
        .spawn(move || {
            let mut wait = Duration::from_millis(200);
            while !ready_app.try_become_ready() {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            let status = ready_app.profiles.status_line();
            log::info!("ready: {status}");
            on_ready(status);
        })?;
    if matches!(app.config.jwks, JwksSource::Url(_)) {
        oidc::spawn_refresher(Arc::clone(&app.keys))?;
    }
    if let MetricsConfig::Listen(metrics_addr) = app.config.metrics {
        let metrics_app = Arc::clone(&app);
        let router = Router::new(None).route(
            Method::Get,
            "/metrics",
            Pool::Inline,
            ErrorStyle::Json,
            move |_: &Request| crate::routes::metrics_response(&metrics_app),
        );
        let limits = Limits {
            workers: 1,
            max_connections: 16,
            ..app.limits()
        };
        let server = Server::new(TcpListener::bind(metrics_addr)?, router, limits)?;
        log::info!("metrics on http://{}/metrics", server.local_addr()?);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || server.run())?;
    }
    Ok(Running {
        app,
        addr,
        handle,
        accept,
    })
}

/// Calls `ping` every `interval` while the server is healthy: the accept loop is running and it
/// answers its own `/healthcheck` over loopback (any status counts), or every connection slot is
/// taken (then a self-check cannot get in, and a restart would only lose the token cache). A hung
/// server stops pinging, and systemd's watchdog restarts it.
pub fn spawn_watchdog(running: &Running, interval: Duration, ping: impl Fn() + Send + 'static) {
    let addr = match running.addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    };
    let handle = running.handle.clone();
    let max_connections = running.app.config.max_connections;
    let base = running
        .app
        .config
        .server_base_path
        .clone()
        .unwrap_or_default();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while !handle.is_draining() {
                let at_cap = handle.open_connections() >= max_connections;
                if at_cap || self_check(addr, &base, interval) {
                    ping();
                } else {
                    log::warn!("watchdog: /healthcheck did not answer; not pinging systemd");
                }
                std::thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the watchdog thread: {e}");
    }
}

fn self_check(addr: SocketAddr, base: &str, timeout: Duration) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let request =
        format!("GET {base}/healthcheck HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 ")
}
