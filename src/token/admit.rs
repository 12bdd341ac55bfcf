//! Admit: who may be heard at all. In order: the client's address (behind trusted proxies) and
//! `SERVER_ALLOWED_SOURCES`, the per-source rate limit (both before any JWT work), readiness,
//! the caller's token verified, the per-pipeline rate limit.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use super::Service;
use super::refusal::{Limit, Refusal};
use crate::forwarded;
use crate::http::Request;
use crate::metrics;
use crate::oidc::Verified;
use crate::profiles::Generation;
use crate::time;

/// A verified caller, and the one profile generation its request uses throughout.
#[derive(Debug)]
pub struct Admitted {
    pub generation: Arc<Generation>,
    pub verified: Verified,
}

/// The client's address: the TCP peer, or behind a trusted proxy the client its forwarding
/// headers name.
pub fn client(svc: &Service, req: &Request) -> Result<IpAddr, Refusal> {
    forwarded::client_address(
        req.peer.ip(),
        &svc.settings.trusted_proxies,
        &req.header_values("x-forwarded-for"),
        &req.header_values("forwarded"),
    )
    .map_err(Refusal::MalformedForwarding)
}

/// The source limits of the client's address: `SERVER_ALLOWED_SOURCES`, then the per-source
/// rate limit.
pub fn source(svc: &Service, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
    if let Some(allowed) = &svc.settings.allowed_sources {
        if !allowed.contains(ip) {
            return Err(Refusal::SourceNotAllowed { source: ip });
        }
    }
    match &svc.per_source {
        Some(limiter) => limiter
            .check(&source_key(ip), now)
            .map_err(|secs| rate_limited(svc, Limit::Source, secs)),
        None => Ok(()),
    }
}

/// Readiness, then the presented token (`token`, already read from the header or the form, so a
/// malformed header is answered only once ready), then its verification at `now`.
pub fn verify(svc: &Service, token: Result<&[u8], Refusal>, now: u64) -> Result<Admitted, Refusal> {
    // Loaded, not "ready": while draining, the connections already accepted are still answered.
    let Some(generation) = svc.profiles.current().filter(|_| svc.readiness.is_loaded()) else {
        return Err(Refusal::NotReady);
    };
    let verified = svc
        .verifier
        .verify(token?, now)
        .map_err(|rejected| Refusal::InvalidToken(Box::new(rejected)))?;
    Ok(Admitted {
        generation,
        verified,
    })
}

/// The per-pipeline rate limit, by the verified `organization/pipeline`: across the fleet while
/// the shared cache answers, else in this process. The local bucket is charged either way, so a
/// shared-cache outage starts from this instance's recent traffic.
pub fn pipeline(svc: &Service, admitted: &Admitted, now: Instant) -> Result<(), Refusal> {
    let Some(limiter) = &svc.per_pipeline else {
        return Ok(());
    };
    let claims = &admitted.verified.claims;
    let key = format!("{}/{}", claims.organization_slug, claims.pipeline_slug);
    let local = limiter.check(&key, now);
    let fleet = svc.shared.as_ref().and_then(|shared| {
        let now_ms = time::now_unix_millis();
        shared.rate(key.as_bytes(), limiter.count(), limiter.window(), now_ms)
    });
    fleet
        .unwrap_or(local)
        .map_err(|secs| rate_limited(svc, Limit::Pipeline, secs))
}

fn rate_limited(svc: &Service, limit: Limit, retry_after_secs: u64) -> Refusal {
    svc.metrics
        .count(metrics::RATE_LIMITED, &[("limit", limit.as_str())]);
    Refusal::RateLimited {
        limit,
        retry_after_secs,
    }
}

/// The per-source rate-limit key: an IPv4 address, or the /64 of an IPv6 address (one host
/// usually holds a whole /64, so per-address keys would not limit it).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !0xffff_ffff_ffff_ffff)),
        },
        v4 => v4,
    }
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
