//! The routes of `api.md`: the route table, and each handler from a parsed request to a
//! response and its audit record. Every token route runs the same steps: admit (per-source limit,
//! readiness, verification, per-pipeline limit) → authorize → cache → mint ([`crate::vend`]).
#![forbid(unsafe_code)]

use crate::app::App;
use crate::audit::{self, Record};
use crate::config::Metrics as MetricsConfig;
use crate::credential;
use crate::exchange::{self, ErrorCode};
use crate::github;
use crate::http::{
    ErrorStyle, Method, Pool, Request, Response, Router, Sent, ServerHandle, json_string,
};
use crate::metrics;
use crate::oidc::{self, Claims};
use crate::profiles::{self, Family, Generation};
use crate::time;
use crate::vend::{self, Ask, Denial, Issued, OrgTarget};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Which token route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenRoute {
    PipelineToken,
    PipelineGit,
    OrgToken,
    OrgGit,
}

impl TokenRoute {
    fn family(self) -> Family {
        match self {
            TokenRoute::PipelineToken | TokenRoute::PipelineGit => Family::Pipeline,
            TokenRoute::OrgToken | TokenRoute::OrgGit => Family::Organization,
        }
    }

    fn is_git(self) -> bool {
        matches!(self, TokenRoute::PipelineGit | TokenRoute::OrgGit)
    }
}

/// The route table of `api.md`.
pub fn router(app: &Arc<App>) -> Router {
    let counted = Arc::clone(&app.metrics);
    let mut router = Router::new(app.config.server_base_path.clone()).observe(Arc::new(
        move |route: &str, status: u16| {
            counted.count(
                metrics::HTTP_REQUESTS,
                &[("route", route), ("status", &status.to_string())],
            )
        },
    ));
    if app.config.metrics == MetricsConfig::On {
        let metrics_app = Arc::clone(app);
        router = router.route(
            Method::Get,
            "/metrics",
            Pool::Inline,
            ErrorStyle::Json,
            move |_: &Request| metrics_response(&metrics_app),
        );
    }
    let exchange_app = Arc::clone(app);
    router = router.route(
        Method::Post,
        "/oauth/token",
        Pool::Worker,
        ErrorStyle::Json,
        move |req: &Request| oauth_token(&exchange_app, req),
    );
    let health = Arc::clone(app);
    router = router.route(
        Method::Get,
        "/healthcheck",
        Pool::Inline,
        ErrorStyle::Json,
        move |_: &Request| healthcheck(&health),
    );
    let routes: [(&str, TokenRoute); 6] = [
        ("/token", TokenRoute::PipelineToken),
        ("/token/{profile}", TokenRoute::PipelineToken),
        ("/git-credentials", TokenRoute::PipelineGit),
        ("/git-credentials/{profile}", TokenRoute::PipelineGit),
        ("/organization/token/{profile}", TokenRoute::OrgToken),
        (
            "/organization/git-credentials/{profile}",
            TokenRoute::OrgGit,
        ),
    ];
    for (pattern, route) in routes {
        let app = Arc::clone(app);
        let style = if route.is_git() {
            ErrorStyle::Text
        } else {
            ErrorStyle::Json
        };
        router = router.route(
            Method::Post,
            pattern,
            Pool::Worker,
            style,
            move |req: &Request| token_route(&app, req, route),
        );
    }
    router
}

/// `POST /oauth/token`: RFC 8693 token exchange onto the same admit → authorize → mint steps.
fn oauth_token(app: &Arc<App>, req: &Request) -> Response {
    let now = time::now_unix();
    let mut record = audit_record(req);
    let response = match exchange_request(app, req, &mut record, now) {
        Ok(issued) => {
            record.authorized = true;
            let vended = vended_record(app, &issued);
            #[derive(Serialize)]
            struct Body<'a> {
                access_token: &'a str,
                issued_token_type: &'static str,
                token_type: &'static str,
                expires_in: u64,
                scope: String,
                repositories: &'a [String],
                hashed_token: &'a str,
            }
            let body = Body {
                access_token: issued.minted.token.expose(),
                issued_token_type: exchange::ACCESS_TOKEN_TYPE,
                token_type: "Bearer",
                expires_in: issued.minted.expires_at.saturating_sub(now),
                scope: issued.permissions.join(" "),
                repositories: issued.repositories(),
                hashed_token: &vended.hashed_token,
            };
            let response = match serde_json::to_vec(&body) {
                Ok(bytes) => Response::json(200, bytes),
                Err(_) => Response::json_error(500, "internal error"),
            };
            record.vended = Some(vended);
            response
        }
        Err((denial, code)) => {
            record.error = Some(denial.reason.clone());
            let (status, code) = match denial.status {
                429 | 503 => (denial.status, "temporarily_unavailable"),
                status @ 500..=599 => (status, "server_error"),
                _ => (400, code.as_str()),
            };
            let body = format!(
                "{{\"error\":\"{code}\",\"error_description\":{}}}",
                json_string(denial.message)
            );
            with_retry_after(Response::json(status, body), &denial)
        }
    };
    let app = Arc::clone(app);
    response
        .with_header("Pragma", "no-cache")
        .on_sent(move |sent| finish_audit(&app, record, sent))
}

/// The exchange flow; an error carries the OAuth error code used when it is a 4xx. A malformed
/// request still counts against the per-source limit first.
fn exchange_request(
    app: &App,
    req: &Request,
    record: &mut Record,
    now: u64,
) -> Result<Issued, (Denial, ErrorCode)> {
    admit_source(app, req).map_err(|d| (d, ErrorCode::InvalidRequest))?;
    let request = exchange::parse_request(
        req.header("content-type"),
        &req.body,
        app.vendor.github_host(),
    )
    .map_err(|e| (Denial::new(400, e.description, e.to_string()), e.code))?;
    let (generation, claims) = admit_token(app, Ok(request.subject_token.as_bytes()), record, now)
        .map_err(|d| match d.status {
            401 => (
                Denial {
                    message: "the subject token is invalid",
                    ..d
                },
                ErrorCode::InvalidRequest,
            ),
            _ => (d, ErrorCode::InvalidRequest),
        })?;
    let ask = Ask {
        generation: &generation,
        reference: &request.profile,
        claims: &claims,
        permissions: request.scope.as_deref(),
    };
    let resource = request
        .resource
        .as_ref()
        .map(|(o, n)| (o.as_str(), n.as_str()));
    let vendor = &app.vendor;
    let issued = match (request.profile.family(), resource) {
        (Family::Pipeline, requested) => vendor.pipeline(ask, requested, record, now),
        (Family::Organization, Some((owner, name))) => {
            vendor.organization(ask, OrgTarget::Git { owner, name }, record, now)
        }
        (Family::Organization, None) => {
            vendor.organization(ask, OrgTarget::Token { scope: None }, record, now)
        }
    };
    match issued {
        Ok(Some(issued)) => Ok(issued),
        Ok(None) => {
            let reason = record
                .error
                .take()
                .unwrap_or_else(|| "resource not covered".into());
            Err((
                Denial::new(400, "the resource is not available to this subject", reason),
                ErrorCode::InvalidTarget,
            ))
        }
        Err(d) if d.message == vend::INVALID_SCOPE => Err((
            Denial {
                message: "the scope is beyond the profile",
                ..d
            },
            ErrorCode::InvalidScope,
        )),
        Err(d) if matches!(d.status, 400 | 403 | 404) => Err((
            Denial {
                message: "the audience is not available to this subject",
                ..d
            },
            ErrorCode::InvalidTarget,
        )),
        Err(d) => Err((d, ErrorCode::InvalidTarget)),
    }
}

/// A fresh audit record for a token-route request.
fn audit_record(req: &Request) -> Record {
    Record::new(
        &req.request_id,
        req.method.as_str(),
        &req.path,
        req.peer.ip().to_string(),
        req.header("user-agent"),
    )
}

/// Adds `Retry-After` when the denial knows it.
fn with_retry_after(response: Response, denial: &Denial) -> Response {
    match denial.retry_after_secs {
        Some(secs) => response.with_header("Retry-After", secs.max(1).to_string()),
        None => response,
    }
}

/// The audit record's `vended` for a token handed out (and the vend counter).
fn vended_record(app: &App, issued: &Issued) -> audit::Vended {
    app.metrics
        .count(metrics::VENDS, &[("outcome", issued.cache.as_str())]);
    audit::Vended {
        repositories: issued.repositories().to_vec(),
        permissions: issued.permissions.clone(),
        expiry: time::rfc3339(issued.minted.expires_at),
        hashed_token: issued.minted.hashed_token.clone(),
        cache: issued.cache.as_str(),
    }
}

/// Completes the audit record once the response is sent, and writes it.
fn finish_audit(app: &App, mut record: Record, sent: &Sent) {
    record.status = sent.status;
    record.duration_ms = (sent.duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    record.time = time::rfc3339_millis(time::now_unix_millis());
    app.audit.write(&record);
}

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) fn metrics_response(app: &App) -> Response {
    let gauge =
        |name: &'static str, help: &'static str, labels: String, value: f64| metrics::Gauge {
            name,
            help,
            labels,
            value,
        };
    let open = app.server.get().map_or(0, ServerHandle::open_connections);
    let mut gauges = vec![
        gauge(
            "kitebridge_open_connections",
            "Open client connections.",
            String::new(),
            open as f64,
        ),
        gauge(
            "kitebridge_ready",
            "1 when ready to vend.",
            String::new(),
            if app.is_ready() { 1.0 } else { 0.0 },
        ),
    ];
    if let Some(generation) = app.generation() {
        gauges.push(gauge(
            "kitebridge_profiles_info",
            "The loaded profile generation.",
            format!("digest=\"{}\"", generation.digest()),
            1.0,
        ));
        let unavailable = generation.quarantined().count() as f64;
        gauges.push(gauge(
            "kitebridge_profiles_unavailable",
            "Profiles quarantined in the loaded generation.",
            String::new(),
            unavailable,
        ));
    }
    if let Some(loaded_at) = app.profiles.loaded_at() {
        gauges.push(gauge(
            "kitebridge_profiles_loaded_timestamp_seconds",
            "When the loaded generation was installed.",
            String::new(),
            loaded_at as f64,
        ));
    }
    Response::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render(&gauges),
    )
}

/// `GET/HEAD /healthcheck`: 200 `OK` while serving, 503 `not ready` before readiness and while draining.
fn healthcheck(app: &App) -> Response {
    if app.is_ready() {
        Response::text(200, "OK")
    } else {
        Response::text(503, "not ready")
    }
}

/// What a token route answers on success.
enum Answer {
    Issued(Issued),
    /// The git "not mine" answer (and the organization token route's): 200 with an empty body.
    NotMine,
}

/// A token route: the whole flow, then the audit record once the response is sent.
fn token_route(app: &Arc<App>, req: &Request, route: TokenRoute) -> Response {
    let now = time::now_unix();
    let mut record = audit_record(req);
    let mut credential_request = None;
    let result = vend_request(app, req, route, &mut record, &mut credential_request, now);
    let response = match result {
        Ok(Answer::Issued(issued)) => {
            record.authorized = true;
            let vended = vended_record(app, &issued);
            let org = record
                .pipeline
                .as_ref()
                .map_or("", |p| p.organization_slug.as_str());
            let response = match &credential_request {
                Some(cred) => git_success(cred, &issued),
                None => json_success(org, &issued, &vended),
            };
            record.vended = Some(vended);
            response
        }
        Ok(Answer::NotMine) => {
            // Authorized only if a profile's rules were evaluated (not for another host).
            record.authorized = record.profile.is_some();
            Response::new(
                200,
                if route.is_git() {
                    "text/plain"
                } else {
                    "application/json"
                },
                Vec::new(),
            )
        }
        Err(denial) => {
            record.error = Some(denial.reason.clone());
            denial_response(&denial, route.is_git())
        }
    };
    let app = Arc::clone(app);
    response.on_sent(move |sent| finish_audit(&app, record, sent))
}

/// The per-source rate limit: first, before any JWT work.
fn admit_source(app: &App, req: &Request) -> Result<(), Denial> {
    match &app.per_source {
        Some(limiter) => limiter
            .check(&source_key(req.peer.ip()), Instant::now())
            .map_err(|secs| rate_limited(app, secs, "source")),
        None => Ok(()),
    }
}

/// After [`admit_source`], the steps every token route shares, in order: readiness, the caller's
/// token (`token`, already extracted from the header or form), its verification, the per-pipeline
/// limit. Returns the generation this request uses throughout and the verified claims, and
/// records what it learned.
fn admit_token(
    app: &App,
    token: Result<&[u8], Denial>,
    record: &mut Record,
    now: u64,
) -> Result<(Arc<Generation>, Claims), Denial> {
    let Some(generation) = app.generation().filter(|_| app.is_ready()) else {
        return Err(Denial::new(
            503,
            "not ready",
            "not ready (profiles, key set or installation account not loaded yet, or draining)",
        ));
    };
    let claims = match app.verifier.verify(token?, now) {
        Ok(verified) => {
            record.jwt = Some(jwt_info(
                Some(verified.kid.clone()),
                Some(&verified.claims),
                now,
            ));
            record.pipeline = Some(pipeline_info(&verified.claims));
            verified.claims
        }
        Err(rejected) => {
            record.jwt = Some(jwt_info(
                rejected.kid.clone(),
                rejected.claims.as_deref(),
                now,
            ));
            record.pipeline = rejected.claims.as_deref().map(pipeline_info);
            return Err(Denial::new(
                401,
                "invalid token",
                rejected.error.to_string(),
            ));
        }
    };
    if let Some(limiter) = &app.per_pipeline {
        let key = format!("{}/{}", claims.organization_slug, claims.pipeline_slug);
        limiter
            .check(&key, Instant::now())
            .map_err(|secs| rate_limited(app, secs, "pipeline"))?;
    }
    Ok((generation, claims))
}

/// The per-source rate-limit key: an IPv4 address, or the /64 of an IPv6 address (one host
/// usually holds a whole /64, so per-address keys would not limit it).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !0xffff_ffff_ffff_ffff,
            )),
        },
        v4 => v4,
    }
}

/// The bearer token of the `Authorization` header (401 without one, or with a malformed one).
fn bearer(req: &Request) -> Result<&[u8], Denial> {
    oidc::bearer_token(&req.header_values("authorization")).map_err(|e| {
        let message = if matches!(e, oidc::Error::MissingAuthorization) {
            "missing authorization"
        } else {
            "invalid token"
        };
        Denial::new(401, message, e.to_string())
    })
}

fn vend_request(
    app: &App,
    req: &Request,
    route: TokenRoute,
    record: &mut Record,
    credential_request: &mut Option<credential::CredentialRequest>,
    now: u64,
) -> Result<Answer, Denial> {
    admit_source(app, req)?;
    let (generation, claims) = admit_token(app, bearer(req), record, now)?;
    let segment = req.param(0).unwrap_or("default");
    let reference = profiles::parse_profile_ref(route.family(), segment).map_err(|e| {
        Denial::new(
            400,
            "malformed profile reference",
            format!("profile reference: {e}"),
        )
    })?;
    let ask = Ask {
        generation: &generation,
        reference: &reference,
        claims: &claims,
        permissions: None,
    };
    let vendor = &app.vendor;
    let issued = match route {
        TokenRoute::PipelineToken => vendor.pipeline(ask, None, record, now)?,
        TokenRoute::OrgToken => {
            let scope = repository_scope(req)?;
            vendor.organization(
                ask,
                OrgTarget::Token {
                    scope: scope.as_deref(),
                },
                record,
                now,
            )?
        }
        TokenRoute::PipelineGit | TokenRoute::OrgGit => {
            let cred = credential::parse_request(&req.body)
                .map_err(|e| Denial::new(400, "malformed git credential request", e.to_string()))?;
            let ours =
                cred.protocol == "https" && cred.host.eq_ignore_ascii_case(vendor.github_host());
            let issued = match (ours, vend::repository_from_path(&cred.path)) {
                (true, Some(repo)) if route == TokenRoute::PipelineGit => {
                    vendor.pipeline(ask, Some(repo), record, now)?
                }
                (true, Some((owner, name))) => {
                    vendor.organization(ask, OrgTarget::Git { owner, name }, record, now)?
                }
                _ => {
                    record.requested_repository = Some(audit::truncate(&format!(
                        "{}://{}/{}",
                        cred.protocol, cred.host, cred.path
                    )));
                    record.error = Some("not a repository on the configured GitHub host".into());
                    None
                }
            };
            *credential_request = Some(cred);
            issued
        }
    };
    Ok(issued.map_or(Answer::NotMine, Answer::Issued))
}

fn rate_limited(app: &App, retry_after_secs: u64, limit: &'static str) -> Denial {
    app.metrics
        .count(metrics::RATE_LIMITED, &[("limit", limit)]);
    let what = format!("per-{limit} rate limit");
    Denial {
        retry_after_secs: Some(retry_after_secs),
        ..Denial::new(429, "rate limited", format!("{what} exceeded"))
    }
}

/// `repository-scope` from the query, at most once: a GitHub repository name (letters, digits,
/// `-`, `_`, `.`; at most 100 bytes; not `.`, `..` or ending in `.git`), so a caller's typo is a
/// 400, never an upstream 422 answered 500. Other parameters are ignored.
fn repository_scope(req: &Request) -> Result<Option<String>, Denial> {
    let bad = |why: &str| Denial::new(400, "malformed query", format!("query: {why}"));
    let pairs = req.query_pairs().map_err(|e| bad(&e.to_string()))?;
    let mut scopes = pairs
        .into_iter()
        .filter(|(k, _)| k == "repository-scope")
        .map(|(_, v)| v);
    let scope = scopes.next();
    if scopes.next().is_some() {
        return Err(bad("repository-scope given more than once"));
    }
    match scope {
        None => Ok(None),
        Some(s) if github::is_valid_repo_name(&s) => Ok(Some(s)),
        Some(_) => Err(bad("repository-scope is not a bare repository name")),
    }
}

fn jwt_info(kid: Option<String>, claims: Option<&Claims>, now: u64) -> audit::JwtInfo {
    let mut info = audit::JwtInfo {
        kid: kid.as_deref().map(audit::truncate),
        ..audit::JwtInfo::default()
    };
    if let Some(c) = claims {
        info.jti = c.jti.as_deref().map(audit::truncate);
        info.sub = Some(audit::truncate(&c.sub));
        info.iss = Some(audit::truncate(&c.iss));
        info.aud = match &c.aud {
            oidc::Audience::One(a) => vec![audit::truncate(a)],
            oidc::Audience::Many(list) => list.iter().take(8).map(|a| audit::truncate(a)).collect(),
        };
        info.exp = Some(time::rfc3339(c.exp));
        info.expiry_remaining_secs = Some(
            i64::try_from(c.exp)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(now).unwrap_or(0)),
        );
    }
    info
}

fn pipeline_info(c: &Claims) -> audit::PipelineInfo {
    audit::PipelineInfo {
        organization_slug: audit::truncate(&c.organization_slug),
        pipeline_slug: audit::truncate(&c.pipeline_slug),
        pipeline_id: audit::truncate(&c.pipeline_id),
        build_number: c.build_number,
        build_branch: audit::truncate(&c.build_branch),
        job_id: audit::truncate(&c.job_id),
        agent_id: audit::truncate(&c.agent_id),
    }
}

/// The JSON body of the token routes (key order as `api.md` lists it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody<'a> {
    organization_slug: &'a str,
    profile: &'a str,
    repository_url: &'a str,
    repositories: &'a [String],
    repository_selection: &'a str,
    permissions: &'a [String],
    token: &'a str,
    hashed_token: &'a str,
    expiry: &'a str,
    expires_at: &'a str,
}

fn json_success(organization_slug: &str, issued: &Issued, vended: &audit::Vended) -> Response {
    let body = TokenBody {
        organization_slug,
        profile: &issued.profile,
        repository_url: &issued.repository_url,
        repositories: &vended.repositories,
        repository_selection: issued.repository_selection(),
        permissions: &vended.permissions,
        token: issued.minted.token.expose(),
        hashed_token: &vended.hashed_token,
        expiry: &vended.expiry,
        expires_at: &vended.expiry,
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => Response::json(200, bytes),
        Err(_) => Response::json_error(500, "internal error"),
    }
}

fn git_success(cred: &credential::CredentialRequest, issued: &Issued) -> Response {
    let expiry = issued.minted.expires_at.to_string();
    let body = credential::format_pairs(&[
        ("protocol", &cred.protocol),
        ("host", &cred.host),
        ("path", &cred.path),
        ("username", "x-access-token"),
        ("password", issued.minted.token.expose()),
        ("password_expiry_utc", &expiry),
    ]);
    Response::new(200, "text/plain", body)
}

fn denial_response(denial: &Denial, git: bool) -> Response {
    let response = match (denial.status, git) {
        (401, false) if denial.message == "missing authorization" => {
            Response::json(401, r#"{"error":"invalid_token"}"#)
                .with_header("WWW-Authenticate", r#"Bearer realm="kitebridge""#)
        }
        (401, false) => Response::json(
            401,
            r#"{"error":"invalid_token","error_description":"The access token is invalid"}"#,
        )
        .with_header(
            "WWW-Authenticate",
            r#"Bearer realm="kitebridge", error="invalid_token""#,
        ),
        (401, true) => Response::new(401, "text/plain", "invalid token\n").with_header(
            "WWW-Authenticate",
            r#"Bearer realm="kitebridge", error="invalid_token""#,
        ),
        (status, false) => Response::json_error(status, denial.message),
        (status, true) => Response::new(status, "text/plain", format!("{}\n", denial.message)),
    };
    with_retry_after(response, denial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_group_ipv6_by_64_and_unmap_ipv4() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
    }
}
