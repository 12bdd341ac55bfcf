//! The token request, as typed steps: ask → admit → authorize → mint → respond, and the audit
//! trail assembled from what each step returned.
//!
//! | step | module | proves / produces |
//! |---|---|---|
//! | ask | [`ask`] (+ [`exchange`], [`credential`]) | what is asked: [`ask::Ask`] |
//! | admit | [`admit`] | the caller may be heard and is verified: [`admit::Admitted`] |
//! | authorize | [`authorize`] (pure) | what the caller may have: [`authorize::Authorized`] |
//! | mint | [`mint`] | a token from the cache or GitHub: [`mint::Issued`] |
//! | respond | [`respond`] | the route's answer |
//! | trail | [`trail`] | the audit record |
//!
//! Every refusal is a [`Refusal`]; "not mine" is the typed [`authorize::NotMine`].
#![forbid(unsafe_code)]

pub mod admit;
pub mod ask;
pub mod authorize;
pub mod credential;
pub mod exchange;
pub mod mint;
pub mod refusal;
pub mod respond;
pub mod trail;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use ask::Route;
pub use mint::{DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_MIN_REMAINING_SECS, Issued, Settings};
pub use refusal::Refusal;

use crate::audit::{AuditLog, OnFailure};
use crate::buildkite;
use crate::cache::CoalescingCache;
use crate::github;
use crate::http::{Request, Response};
use crate::metrics::{self, Metrics};
use crate::oidc::Verifier;
use crate::profiles::Store;
use crate::ratelimit::RateLimiter;
use crate::readiness::Readiness;
use crate::revoke::Revoker;
use crate::shared::SharedCache;
use crate::time;
use crate::upstream::Failure;
use ask::{Ask, Target};
use authorize::{NotMine, Reach};
use mint::Cover;
use respond::Style;
use trail::Trail;

/// What the token steps need.
pub struct Service {
    settings: Settings,
    verifier: Verifier,
    per_source: Option<RateLimiter<IpAddr>>,
    per_pipeline: Option<RateLimiter<String>>,
    /// `RATE_LIMIT_MINTS`: GitHub mints across all pipelines.
    mints: Option<RateLimiter<()>>,
    readiness: Arc<Readiness>,
    profiles: Arc<Store>,
    github: Arc<github::Client>,
    buildkite: Option<buildkite::Client>,
    /// The installation's account, once known (readiness waits for it).
    account: OnceLock<String>,
    tokens: CoalescingCache<mint::TokenKey, mint::Vended, Refusal>,
    /// Ends tokens at their end of life, when that is before GitHub's expiry.
    revoker: Arc<Revoker>,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    /// The fleet's shared cache (`CACHE_URL`), behind the in-process one.
    shared: Option<Arc<SharedCache>>,
}

/// The parts a [`Service`] is built from.
pub struct Parts {
    pub settings: Settings,
    pub verifier: Verifier,
    pub per_source: Option<RateLimiter<IpAddr>>,
    pub per_pipeline: Option<RateLimiter<String>>,
    /// `RATE_LIMIT_MINTS`; `None` when off.
    pub mints: Option<RateLimiter<()>>,
    pub readiness: Arc<Readiness>,
    pub profiles: Arc<Store>,
    pub github: Arc<github::Client>,
    /// `None` when no Buildkite API token is configured: pipeline profiles then answer 500.
    pub buildkite: Option<buildkite::Client>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    /// `None` without `CACHE_URL`: the in-process cache and limits only.
    pub shared: Option<Arc<SharedCache>>,
    /// The revoker thread's handle.
    pub revoker: Arc<Revoker>,
}

impl Service {
    /// A service with an empty token cache.
    pub fn new(parts: Parts) -> Service {
        Service {
            tokens: CoalescingCache::new(parts.settings.token_cache_max_entries),
            settings: parts.settings,
            verifier: parts.verifier,
            per_source: parts.per_source,
            per_pipeline: parts.per_pipeline,
            mints: parts.mints,
            readiness: parts.readiness,
            profiles: parts.profiles,
            github: parts.github,
            buildkite: parts.buildkite,
            account: OnceLock::new(),
            metrics: parts.metrics,
            audit: parts.audit,
            shared: parts.shared,
            revoker: parts.revoker,
        }
    }

    /// The revoker (for the shutdown: [`Revoker::finish`]).
    pub fn revoker(&self) -> &Arc<Revoker> {
        &self.revoker
    }

    /// The shared cache, when configured.
    pub fn shared_cache(&self) -> Option<&Arc<SharedCache>> {
        self.shared.as_ref()
    }

    /// The installation's account (the owner of every repository it can mint for), once known.
    pub fn account(&self) -> Option<&str> {
        self.account.get().map(String::as_str)
    }

    /// Asks GitHub for the installation's account (once; readiness waits for it).
    pub fn learn_account(&self, now: u64) -> Result<&str, Failure> {
        if self.account.get().is_none() {
            let login = self.github.installation_account(now)?;
            let _ = self.account.set(login);
        }
        Ok(self.account().unwrap_or_default())
    }

    /// What GitHub's latest answer said about our rate limit (for the gauges).
    pub fn github_rate_limit(&self) -> Option<github::RateLimitState> {
        self.github.rate_limit()
    }

    /// The GitHub host of git URLs.
    pub fn github_host(&self) -> &str {
        &self.settings.github_host
    }

    /// The audit log the token records go to.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }
}

/// What the flow ends in, short of a refusal.
enum Outcome {
    Issued(Issued),
    NotMine(NotMine),
}

/// One token request, start to finish. The audit record of an answer that carries a token is
/// written before that answer leaves (and if it cannot be, the token is withheld: see
/// [`deliver`]); every other record once the response is sent.
pub fn handle(svc: &Service, route: Route, req: &Request) -> Response {
    let started = Instant::now();
    let now = time::now_unix();
    let mut trail = Trail::new(req);
    let style = Style::of(route);
    match flow(svc, route, req, now, &mut trail) {
        Ok((ask, organization_slug, Outcome::Issued(issued))) => {
            // The lifetime is counted from now, not from the request's start: a mint can take
            // longer than a second.
            let response =
                respond::issued(&ask.reply, &organization_slug, &issued, time::now_unix());
            deliver(svc, trail, style, &issued, response, started, now)
        }
        Ok((_, _, Outcome::NotMine(why))) => {
            trail.not_mine(&why);
            trail.write_when_sent(respond::not_mine(style), Arc::clone(&svc.audit))
        }
        Err(refusal) => refused(svc, trail, style, &refusal, now),
    }
}

fn refused(svc: &Service, mut trail: Trail, style: Style, refusal: &Refusal, now: u64) -> Response {
    trail.refused(refusal, now);
    trail.write_when_sent(respond::refused(style, refusal), Arc::clone(&svc.audit))
}

/// Sends `response`, which carries `issued`'s token, only once its audit record is written. If
/// the record cannot be written the token is withheld (503 `audit unavailable`): a token this
/// request minted is dropped from the cache and revoked, a cached one is simply not shown.
/// `AUDIT_ON_FAILURE=serve` sends it anyway (the record waits for the sink, the failure is logged).
fn deliver(
    svc: &Service,
    mut trail: Trail,
    style: Style,
    issued: &Issued,
    response: Response,
    started: Instant,
    now: u64,
) -> Response {
    trail.issued(issued);
    match trail.write_before_sending(response.status, started, &svc.audit) {
        Err(e) if svc.audit.policy() == OnFailure::Refuse => {
            let withdrawn = withdraw(svc, issued, now);
            let refusal = Refusal::AuditUnavailable {
                reason: e.to_string(),
                withdrawn,
            };
            trail.withheld();
            refused(svc, trail, style, &refusal, now)
        }
        _ => {
            svc.metrics
                .count(metrics::VENDS, &[("outcome", issued.cache.as_str())]);
            trail.delivery_when_sent(response, Arc::clone(&svc.audit))
        }
    }
}

/// What becomes of a token that is withheld: revoked if this request minted it, else left to
/// its cache entry. The answer is for the audit record.
fn withdraw(svc: &Service, issued: &Issued, now: u64) -> String {
    let hashed = &issued.minted.hashed_token;
    if issued.cache != mint::Served::Miss {
        return format!("the cached token (hashedToken {hashed}) was not shown");
    }
    mint::forget(svc, issued);
    match svc.github.revoke(&issued.minted.token, now) {
        Ok(()) => format!("the token minted for it (hashedToken {hashed}) was revoked"),
        Err(e) => {
            log::error!("could not revoke a withheld token (hashedToken {hashed}): {e}");
            format!("revoking the token minted for it (hashedToken {hashed}) failed: {e}")
        }
    }
}

/// Refuses a token that could not be shown because audit records are not being written (an
/// atomic read: asked before the cache, so a hit is not looked up for nothing).
fn audit_writing(svc: &Service) -> Result<(), Refusal> {
    if svc.audit.withholds_tokens() {
        return Err(Refusal::AuditUnavailable {
            reason: "audit records are not being written".into(),
            withdrawn: "no token was minted or shown".into(),
        });
    }
    Ok(())
}

/// Refuses upstream work for a client that has gone. Asked only on a cache miss, just before
/// the upstream call (the peek costs system calls a cache hit does not need).
fn client_there(req: &Request) -> Result<(), Refusal> {
    if req.client_gone() {
        return Err(Refusal::ClientGone);
    }
    Ok(())
}

/// The verified claims that name a Buildkite pipeline must be Buildkite slugs (checked before
/// they reach a rate-limit key, a cache key or an upstream URL).
fn check_slugs(claims: &crate::oidc::Claims) -> Result<(), Refusal> {
    if !buildkite::is_valid_slug(&claims.organization_slug) {
        return Err(Refusal::InvalidSlug {
            claim: "organization_slug",
        });
    }
    if !buildkite::is_valid_slug(&claims.pipeline_slug) {
        return Err(Refusal::InvalidSlug {
            claim: "pipeline_slug",
        });
    }
    Ok(())
}

/// The steps in order. Each step's output is recorded on the trail as it comes.
fn flow(
    svc: &Service,
    route: Route,
    req: &Request,
    now: u64,
    trail: &mut Trail,
) -> Result<(Ask, String, Outcome), Refusal> {
    let client = admit::client(svc, req)?;
    trail.source(client);
    admit::source(svc, client, Instant::now())?;
    let (admitted, ask) = match route {
        Route::Exchange => {
            let (subject_token, ask) = ask::exchange(req, svc.github_host())?;
            let admitted = admit::verify(svc, Ok(subject_token.as_bytes()), now)?;
            (admitted, Some(ask))
        }
        _ => (admit::verify(svc, ask::bearer(req), now)?, None),
    };
    trail.admitted(&admitted, now);
    check_slugs(&admitted.verified.claims)?;
    admit::pipeline(svc, &admitted, Instant::now())?;
    let ask = match ask {
        Some(ask) => ask,
        None => ask::read(route, req, svc.github_host())?,
    };
    let claims = &admitted.verified.claims;
    let organization_slug = claims.organization_slug.clone();
    if matches!(ask.target, Target::Elsewhere { .. }) {
        trail.requested(&ask.target);
        return Ok((ask, organization_slug, Outcome::NotMine(NotMine::OtherHost)));
    }
    let generation = &admitted.generation;
    trail.asked(&ask, generation.digest());
    let account = svc.account().unwrap_or_default();
    let authorized = authorize::authorize(
        generation,
        &ask.profile,
        claims,
        &ask.target,
        ask.scope.as_deref(),
        account,
    )?;
    trail.authorized(&authorized);
    authorize::source(authorized.profile, &ask.profile, client)?;
    trail.requested(&ask.target);
    let repository;
    let cover = match &authorized.reach {
        Reach::NotMine(why) => return Ok((ask, organization_slug, Outcome::NotMine(why.clone()))),
        Reach::All => Cover::All,
        Reach::Repositories(names) => Cover::Repositories(names),
        Reach::Pipeline => {
            audit_writing(svc)?;
            repository = match mint::cached_pipeline_repository(svc, claims, now) {
                Some(cached) => cached,
                None => {
                    client_there(req)?;
                    mint::pipeline_repository(svc, claims, now)?
                }
            };
            trail.pipeline_repository(&repository.full_name());
            if let Some(why) = authorize::pipeline_repository(&ask.target, &repository, account)? {
                return Ok((ask, organization_slug, Outcome::NotMine(why)));
            }
            Cover::Pipeline {
                claims,
                repository: &repository,
            }
        }
    };
    audit_writing(svc)?;
    let issued = mint::mint(
        svc,
        generation.digest(),
        &authorized,
        cover,
        ask.expires_in,
        mint::Caller {
            request_id: &req.request_id,
            before_upstream: &|| client_there(req),
        },
        now,
    )?;
    Ok((ask, organization_slug, Outcome::Issued(issued)))
}
