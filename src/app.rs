//! The application: its shared state, built from the configuration. It knows no routes
//! ([`crate::routes`]) and runs nothing ([`crate::serve`]).
#![forbid(unsafe_code)]

use crate::audit::AuditLog;
use crate::buildkite;
use crate::config::{AuditTarget, Config, JwksSource, RateLimit};
use crate::github;
use crate::http::Limits;
use crate::metrics::{self, Metrics};
use crate::oidc::{self, FetchedJwks, KeySource, KeyStore, Verifier};
use crate::profiles::{self, Generation, Store};
use crate::ratelimit::RateLimiter;
use crate::readiness::Readiness;
use crate::revoke::{Revoker, Unfinished};
use crate::shared::{self, SharedCache};
use crate::time;
use crate::token;
use crate::upstream;
use std::fmt;
use std::io;
use std::sync::Arc;
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
    pub keys: Arc<KeyStore>,
    /// What the token routes need.
    pub token: token::Service,
    pub metrics: Arc<Metrics>,
    /// The profile generations; a request takes one with [`Store::current`] and uses only it.
    pub profiles: Arc<Store>,
    pub readiness: Arc<Readiness>,
}

fn limiter<K: Eq + std::hash::Hash + Clone>(limit: &RateLimit) -> Option<RateLimiter<K>> {
    match limit {
        RateLimit::Off => None,
        RateLimit::Limit { count, window_secs } => {
            Some(RateLimiter::new(*count, Duration::from_secs(*window_secs)))
        }
    }
}

/// The shared cache when `CACHE_URL` is set (connected once, its outcome logged; a cache server
/// that does not answer is no start error).
fn shared_cache(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<SharedCache>>, StartError> {
    let Some(endpoint) = &config.cache_url else {
        return Ok(None);
    };
    let keys = config
        .cache_encryption_keys
        .as_ref()
        .ok_or_else(|| StartError::Config("CACHE_ENCRYPTION_KEYS: required with CACHE_URL".into()))
        .and_then(|keys| {
            shared::seal::Keys::parse(keys.expose())
                .map_err(|e| StartError::Config(format!("CACHE_ENCRYPTION_KEYS: {e}")))
        })?;
    let roots = match endpoint.tls {
        true => upstream::trust_roots(config.ssl_cert_file.as_deref())
            .map_err(|e| StartError::Config(format!("CACHE_URL: {e}")))?,
        false => Vec::new(),
    };
    if !endpoint.tls && config.cache_password.is_some() && !upstream::is_loopback(&endpoint.host) {
        log::warn!(
            "CACHE_URL is plain redis:// to a host that is not loopback: CACHE_PASSWORD crosses \
             the network in clear text (entries are encrypted either way); prefer rediss://"
        );
    }
    let settings = shared::Settings {
        endpoint: endpoint.clone(),
        auth: shared::Auth {
            username: config.cache_username.clone(),
            password: config.cache_password.clone(),
        },
        keys,
        prefix: config.cache_prefix.clone(),
        timeout: Duration::from_millis(config.cache_timeout_ms),
        roots,
    };
    SharedCache::start(settings, Arc::clone(metrics))
        .map(Some)
        .map_err(|e| StartError::Config(format!("CACHE_URL: {e}")))
}

impl App {
    /// Builds the application: audit log, upstream clients, key store, token service, profiles.
    pub fn new(config: Config) -> Result<App, StartError> {
        let metrics = Arc::new(Metrics::default());
        let audit = match &config.audit_log {
            AuditTarget::Stdout => AuditLog::stdout()?,
            AuditTarget::Stderr => AuditLog::stderr()?,
            AuditTarget::File(path) => AuditLog::file(path)?,
        };
        let audit = Arc::new(
            audit
                .on_failure(config.audit_on_failure)
                .counted_in(Arc::clone(&metrics)),
        );
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
                reuse_max_entries: config.jwt_cache_max_entries,
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
                    // As many as the token cache: see the buildkite module.
                    cache_max_entries: config.token_cache_max_entries,
                    github_host: config.github_host.clone(),
                };
                Some(buildkite::Client::new(Arc::clone(&http), settings, token))
            }
            None => {
                log::warn!("BUILDKITE_API_TOKEN is not set: pipeline profiles will answer 500");
                None
            }
        };
        let trusts_anyone = config
            .trusted_proxies
            .iter()
            .flat_map(|set| set.ranges())
            .any(|range| range.prefix() == 0);
        if trusts_anyone {
            log::warn!(
                "SERVER_TRUSTED_PROXIES holds a /0 range: any client can name its own address in \
                 X-Forwarded-For or Forwarded, so source restrictions and the per-source rate \
                 limit can be evaded; list only the proxies' own addresses"
            );
        }
        let profiles = profiles::start(
            &config.profiles,
            Arc::clone(&github),
            config.profiles_refresh_secs,
            config.profiles_max_bytes,
        )?;
        let readiness = Arc::new(Readiness::default());
        let shared = shared_cache(&config, &metrics)?;
        let revoker = Arc::new(Revoker::start(
            Arc::clone(&github),
            Arc::clone(&audit),
            Arc::clone(&metrics),
            shared.clone(),
        )?);
        let token = token::Service::new(token::Parts {
            settings: token::Settings {
                github_host: config.github_host.clone(),
                token_min_remaining_secs: config.token_min_remaining_secs,
                token_cache_max_entries: config.token_cache_max_entries,
                github_ratelimit_reserve: config.github_ratelimit_reserve,
                allowed_sources: config.allowed_sources.clone(),
                trusted_proxies: config.trusted_proxies.clone().unwrap_or_default(),
            },
            verifier,
            per_source: limiter(&config.rate_limit_per_source),
            per_pipeline: limiter(&config.rate_limit_per_pipeline),
            mints: limiter(&config.rate_limit_mints),
            readiness: Arc::clone(&readiness),
            profiles: Arc::clone(&profiles),
            github,
            buildkite,
            metrics: Arc::clone(&metrics),
            audit,
            shared,
            revoker,
        });
        Ok(App {
            config,
            keys,
            token,
            metrics,
            profiles,
            readiness,
        })
    }

    /// The profile generation a request uses (one read per request), once loaded.
    pub fn generation(&self) -> Option<Arc<Generation>> {
        self.profiles.current()
    }

    /// Ready to vend: listening, the key set loaded once, the installation's account known, the
    /// first profile generation loaded; and not draining.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// One attempt at everything readiness waits for; returns whether all is there now.
    pub(crate) fn try_become_ready(&self) -> bool {
        let now = time::now_unix();
        if !self.keys.is_loaded() {
            // The key store logs the failure itself; readiness retries.
            let _ = self.keys.load(now);
        }
        if self.token.account().is_none() {
            match self.token.learn_account(now) {
                Ok(login) => log::info!(
                    "installation {} belongs to {login:?}",
                    self.config.github_installation_id
                ),
                Err(e) => log::warn!("installation account not known yet (retrying): {e}"),
            }
        }
        let ready =
            self.keys.is_loaded() && self.token.account().is_some() && self.generation().is_some();
        self.readiness.set_loaded(ready);
        ready
    }

    /// What readiness still waits for, in words (empty once everything is there).
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.keys.is_loaded() {
            missing.push("the OIDC key set");
        }
        if self.token.account().is_none() {
            missing.push("the GitHub installation's account");
        }
        if self.generation().is_none() {
            missing.push("the first profile generation");
        }
        missing
    }

    /// At shutdown: carries out the early revocations due by `deadline` (each at its time) and
    /// says what it did not carry out (`3 tokens left to GitHub's expiry`; each left one has its
    /// audit record).
    pub fn finish_revocations(&self, deadline: std::time::SystemTime) -> Unfinished {
        let deadline_ms = deadline
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.token.revoker().finish(deadline_ms)
    }

    /// The edge limits from the configuration.
    pub fn limits(&self) -> Limits {
        let c = &self.config;
        Limits {
            workers: c.server_workers,
            max_connections: c.max_connections,
            max_connections_per_source: c.max_connections_per_source,
            timeout_header: Duration::from_secs(c.timeout_header_secs),
            timeout_body: Duration::from_secs(c.timeout_body_secs),
            timeout_idle: Duration::from_secs(c.timeout_idle_secs),
            timeout_queue: Duration::from_secs(c.timeout_queue_secs),
            ..Limits::default()
        }
    }
}
