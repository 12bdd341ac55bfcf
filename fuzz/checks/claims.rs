//! `oidc::Claims::from_json`: never panics; accepted claims read back through `claim`, and
//! validating them (against settings that match their issuer, audience and organization) at any
//! time never panics and accepts only times inside the verifier's time rules.
#![forbid(unsafe_code)]

use kitebridge::{Audience, Claims, VerifierSettings as Settings};

pub fn check(data: &[u8]) {
    let Ok(claims) = Claims::from_json(data) else {
        return;
    };
    assert_eq!(claims.claim("exp"), Some(claims.exp.to_string()));
    assert_eq!(claims.claim("sub").as_ref(), Some(&claims.sub));
    assert_eq!(claims.claim("build_tag"), claims.build_tag);
    for (tag, value) in &claims.agent_tags {
        assert_eq!(
            claims.claim(&format!("agent_tag:{tag}")).as_ref(),
            Some(value)
        );
    }
    let audience = match &claims.aud {
        Audience::One(aud) => aud.clone(),
        Audience::Many(auds) => auds.first().cloned().unwrap_or_default(),
    };
    let mut settings = Settings::new(audience, claims.organization_slug.clone());
    settings.issuer = claims.iss.clone();
    for now in [
        0,
        claims.iat,
        claims.nbf,
        claims.exp.saturating_sub(1),
        claims.exp,
        u64::MAX,
    ] {
        if claims.validate(&settings, now).is_ok() {
            assert_time_rules(&claims, &settings, now);
        }
    }
}

/// What an accepted token's times must satisfy at `now`.
fn assert_time_rules(claims: &Claims, settings: &Settings, now: u64) {
    let leeway = settings.leeway_secs;
    let (exp, nbf, iat) = (claims.exp, claims.nbf, claims.iat);
    assert!(
        u128::from(now) < u128::from(exp) + u128::from(leeway),
        "expired at {now}: {exp}"
    );
    assert!(
        u128::from(nbf) <= u128::from(now) + u128::from(leeway),
        "not yet valid: {nbf}"
    );
    assert!(
        u128::from(iat) <= u128::from(now) + u128::from(leeway),
        "issued later: {iat}"
    );
    assert!(
        iat < exp,
        "expires at {exp}, before or when issued at {iat}"
    );
    assert!(
        exp - iat <= settings.max_lifetime_secs,
        "lifetime {}",
        exp - iat
    );
}
