//! The Buildkite claims: typed from a verified payload ([`Claims::from_json`]), then checked
//! against the [`Settings`] ([`Claims::validate`], step 8 of the module documentation).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::jws::{Segment, parse_json_object};
use super::{Error, Settings};

/// The prefix of the `agent_tag:<NAME>` claims.
const AGENT_TAG_PREFIX: &str = "agent_tag:";

/// The `aud` claim: RFC 7519 allows a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// `"aud": "x"`.
    One(String),
    /// `"aud": ["x", ...]` (possibly empty; [`Claims::validate`] accepts exactly one member).
    Many(Vec<String>),
}

/// The claims of a Buildkite OIDC token that kitebridge reads. Other claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: Audience,
    pub sub: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: Option<String>,
    pub organization_slug: String,
    pub organization_id: Option<String>,
    pub pipeline_slug: String,
    pub pipeline_id: String,
    pub build_number: u64,
    pub build_branch: String,
    pub build_tag: Option<String>,
    pub build_commit: String,
    pub build_source: Option<String>,
    pub step_key: Option<String>,
    pub job_id: String,
    pub agent_id: String,
    pub runner_environment: Option<String>,
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    pub queue_id: Option<String>,
    pub queue_key: Option<String>,
    /// The `agent_tag:<NAME>` claims by `NAME` (null ones left out).
    pub agent_tags: BTreeMap<String, String>,
}

impl Claims {
    /// Types a payload: one JSON object without duplicate claims; required claims present and
    /// non-null; times and `build_number` non-negative integers; optional claims absent, null or
    /// strings. Call it only on a signature-verified payload ([`super::Verifier`] does).
    pub fn from_json(payload: &[u8]) -> Result<Claims, Error> {
        let mut object = parse_json_object(payload, Segment::Payload)?;
        let mut take = |name| object.remove(name).filter(|v| !v.is_null());
        let claims = Claims {
            iss: required_string(take("iss"), "iss")?,
            aud: audience(take("aud"))?,
            sub: required_string(take("sub"), "sub")?,
            exp: required_u64(take("exp"), "exp")?,
            nbf: required_u64(take("nbf"), "nbf")?,
            iat: required_u64(take("iat"), "iat")?,
            jti: optional_string(take("jti"), "jti")?,
            organization_slug: required_string(take("organization_slug"), "organization_slug")?,
            organization_id: optional_string(take("organization_id"), "organization_id")?,
            pipeline_slug: required_string(take("pipeline_slug"), "pipeline_slug")?,
            pipeline_id: required_string(take("pipeline_id"), "pipeline_id")?,
            build_number: required_u64(take("build_number"), "build_number")?,
            build_branch: required_string(take("build_branch"), "build_branch")?,
            build_tag: optional_string(take("build_tag"), "build_tag")?,
            build_commit: required_string(take("build_commit"), "build_commit")?,
            build_source: optional_string(take("build_source"), "build_source")?,
            step_key: optional_string(take("step_key"), "step_key")?,
            job_id: required_string(take("job_id"), "job_id")?,
            agent_id: required_string(take("agent_id"), "agent_id")?,
            runner_environment: optional_string(take("runner_environment"), "runner_environment")?,
            cluster_id: optional_string(take("cluster_id"), "cluster_id")?,
            cluster_name: optional_string(take("cluster_name"), "cluster_name")?,
            queue_id: optional_string(take("queue_id"), "queue_id")?,
            queue_key: optional_string(take("queue_key"), "queue_key")?,
            agent_tags: agent_tags(object)?,
        };
        Ok(claims)
    }

    /// Step 8 at time `now`: issuer, audience, times, required non-empty strings, organization.
    pub fn validate(&self, settings: &Settings, now: u64) -> Result<(), Error> {
        if self.iss != settings.issuer {
            return Err(Error::IssuerMismatch);
        }
        let audience_ok = match &self.aud {
            Audience::One(aud) => *aud == settings.audience,
            Audience::Many(auds) => matches!(auds.as_slice(), [aud] if *aud == settings.audience),
        };
        if !audience_ok {
            return Err(Error::AudienceMismatch);
        }
        self.validate_times(settings, now)?;
        self.validate_required_non_empty()?;
        let id_ok = match &settings.organization_id {
            None => true,
            Some(id) => self.organization_id.as_ref() == Some(id),
        };
        if self.organization_slug != settings.organization_slug || !id_ok {
            return Err(Error::OrganizationMismatch);
        }
        Ok(())
    }

    /// The string form of a claim by its JWT name, for profile match rules: strings as they are,
    /// integers in decimal, `aud` when it is one string (or an array of exactly one), `agent_tag:NAME`
    /// by tag. `None` for absent or null claims and for names kitebridge does not read.
    pub fn claim(&self, name: &str) -> Option<String> {
        if let Some(tag) = name.strip_prefix(AGENT_TAG_PREFIX) {
            return self.agent_tags.get(tag).cloned();
        }
        let text = |s: &String| Some(s.clone());
        match name {
            "iss" => text(&self.iss),
            "aud" => match &self.aud {
                Audience::One(aud) => text(aud),
                Audience::Many(auds) => match auds.as_slice() {
                    [aud] => text(aud),
                    _ => None,
                },
            },
            "sub" => text(&self.sub),
            "exp" => Some(self.exp.to_string()),
            "nbf" => Some(self.nbf.to_string()),
            "iat" => Some(self.iat.to_string()),
            "jti" => self.jti.clone(),
            "organization_slug" => text(&self.organization_slug),
            "organization_id" => self.organization_id.clone(),
            "pipeline_slug" => text(&self.pipeline_slug),
            "pipeline_id" => text(&self.pipeline_id),
            "build_number" => Some(self.build_number.to_string()),
            "build_branch" => text(&self.build_branch),
            "build_tag" => self.build_tag.clone(),
            "build_commit" => text(&self.build_commit),
            "build_source" => self.build_source.clone(),
            "step_key" => self.step_key.clone(),
            "job_id" => text(&self.job_id),
            "agent_id" => text(&self.agent_id),
            "runner_environment" => self.runner_environment.clone(),
            "cluster_id" => self.cluster_id.clone(),
            "cluster_name" => self.cluster_name.clone(),
            "queue_id" => self.queue_id.clone(),
            "queue_key" => self.queue_key.clone(),
            _ => None,
        }
    }

    /// With leeway L: refuse `now ≥ exp + L`, `nbf > now + L`, `iat > now + L`, `exp ≤ iat`,
    /// `exp − iat > max`. Sums saturate: a sum beyond `u64::MAX` is beyond any `now`.
    fn validate_times(&self, settings: &Settings, now: u64) -> Result<(), Error> {
        let leeway = settings.leeway_secs;
        let (exp, nbf, iat) = (self.exp, self.nbf, self.iat);
        if now >= exp.saturating_add(leeway) {
            return Err(Error::Expired { now, exp });
        }
        if nbf > now.saturating_add(leeway) {
            return Err(Error::NotYetValid { now, nbf });
        }
        if iat > now.saturating_add(leeway) {
            return Err(Error::IssuedInFuture { now, iat });
        }
        let Some(lifetime) = exp.checked_sub(iat).filter(|&l| l > 0) else {
            return Err(Error::ExpiresBeforeIssued { iat, exp });
        };
        if lifetime > settings.max_lifetime_secs {
            return Err(Error::LifetimeTooLong {
                lifetime,
                max: settings.max_lifetime_secs,
            });
        }
        Ok(())
    }

    fn validate_required_non_empty(&self) -> Result<(), Error> {
        let required = [
            ("sub", &self.sub),
            ("organization_slug", &self.organization_slug),
            ("pipeline_slug", &self.pipeline_slug),
            ("pipeline_id", &self.pipeline_id),
            ("build_branch", &self.build_branch),
            ("build_commit", &self.build_commit),
            ("job_id", &self.job_id),
            ("agent_id", &self.agent_id),
        ];
        match required.into_iter().find(|(_, value)| value.is_empty()) {
            Some((name, _)) => Err(Error::EmptyClaim(name)),
            None => Ok(()),
        }
    }
}

const STRING: &str = "a string";
const INTEGER: &str = "a non-negative integer";

fn required_string(value: Option<Value>, name: &'static str) -> Result<String, Error> {
    optional_string(value, name)?.ok_or(Error::MissingClaim(name))
}

fn optional_string(value: Option<Value>, name: &'static str) -> Result<Option<String>, Error> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::ClaimType {
            name,
            expected: STRING,
        }),
    }
}

/// A JSON integer in `0..=u64::MAX`; floats (`1.0`, `1e3`), negatives and strings are refused.
fn required_u64(value: Option<Value>, name: &'static str) -> Result<u64, Error> {
    let value = value.ok_or(Error::MissingClaim(name))?;
    value.as_u64().ok_or(Error::ClaimType {
        name,
        expected: INTEGER,
    })
}

fn audience(value: Option<Value>) -> Result<Audience, Error> {
    const EXPECTED: &str = "a string or an array of strings";
    match value.ok_or(Error::MissingClaim("aud"))? {
        Value::String(aud) => Ok(Audience::One(aud)),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(aud) => Ok(aud),
                _ => Err(Error::ClaimType {
                    name: "aud",
                    expected: EXPECTED,
                }),
            })
            .collect::<Result<_, _>>()
            .map(Audience::Many),
        _ => Err(Error::ClaimType {
            name: "aud",
            expected: EXPECTED,
        }),
    }
}

/// The `agent_tag:<NAME>` claims among the claims not otherwise read.
fn agent_tags(rest: Map<String, Value>) -> Result<BTreeMap<String, String>, Error> {
    let mut tags = BTreeMap::new();
    for (name, value) in rest {
        let Some(tag) = name.strip_prefix(AGENT_TAG_PREFIX) else {
            continue;
        };
        if let Some(value) = optional_string(Some(value).filter(|v| !v.is_null()), "agent_tag:*")? {
            tags.insert(tag.to_owned(), value);
        }
    }
    Ok(tags)
}
