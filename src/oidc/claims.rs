//! The Buildkite claims: typed from a verified payload ([`Claims::from_json`]), then checked
//! against the [`Settings`] ([`Claims::validate`], step 8 of the module documentation).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::MapAccess;

use super::jws::{IgnoredValue, MemberFailure, MemberReader, Segment, parse_json_object};
use super::{Error, Settings};

/// The prefix of the `agent_tag:<NAME>` claims.
const AGENT_TAG_PREFIX: &str = "agent_tag:";

/// The `aud` claim: RFC 7519 allows a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
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
        parse_json_object(payload, Segment::Payload, RawClaims::default())?.into_claims()
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
const STRINGS: &str = "a string or an array of strings";

/// The claims as read, before presence is checked. Absent and null are both `None`.
#[derive(Default)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    organization_slug: Option<String>,
    organization_id: Option<String>,
    pipeline_slug: Option<String>,
    pipeline_id: Option<String>,
    build_number: Option<u64>,
    build_branch: Option<String>,
    build_tag: Option<String>,
    build_commit: Option<String>,
    build_source: Option<String>,
    step_key: Option<String>,
    job_id: Option<String>,
    agent_id: Option<String>,
    runner_environment: Option<String>,
    cluster_id: Option<String>,
    cluster_name: Option<String>,
    queue_id: Option<String>,
    queue_key: Option<String>,
    agent_tags: BTreeMap<String, String>,
}

/// Where a known claim's value goes.
enum Slot<'a> {
    Text(&'a mut Option<String>),
    Integer(&'a mut Option<u64>),
    Audience(&'a mut Option<Audience>),
}

impl RawClaims {
    /// The field for a known claim, with the claim's static name.
    fn slot(&mut self, name: &str) -> Option<(&'static str, Slot<'_>)> {
        use Slot::{Integer, Text};
        Some(match name {
            "iss" => ("iss", Text(&mut self.iss)),
            "aud" => ("aud", Slot::Audience(&mut self.aud)),
            "sub" => ("sub", Text(&mut self.sub)),
            "exp" => ("exp", Integer(&mut self.exp)),
            "nbf" => ("nbf", Integer(&mut self.nbf)),
            "iat" => ("iat", Integer(&mut self.iat)),
            "jti" => ("jti", Text(&mut self.jti)),
            "organization_slug" => ("organization_slug", Text(&mut self.organization_slug)),
            "organization_id" => ("organization_id", Text(&mut self.organization_id)),
            "pipeline_slug" => ("pipeline_slug", Text(&mut self.pipeline_slug)),
            "pipeline_id" => ("pipeline_id", Text(&mut self.pipeline_id)),
            "build_number" => ("build_number", Integer(&mut self.build_number)),
            "build_branch" => ("build_branch", Text(&mut self.build_branch)),
            "build_tag" => ("build_tag", Text(&mut self.build_tag)),
            "build_commit" => ("build_commit", Text(&mut self.build_commit)),
            "build_source" => ("build_source", Text(&mut self.build_source)),
            "step_key" => ("step_key", Text(&mut self.step_key)),
            "job_id" => ("job_id", Text(&mut self.job_id)),
            "agent_id" => ("agent_id", Text(&mut self.agent_id)),
            "runner_environment" => ("runner_environment", Text(&mut self.runner_environment)),
            "cluster_id" => ("cluster_id", Text(&mut self.cluster_id)),
            "cluster_name" => ("cluster_name", Text(&mut self.cluster_name)),
            "queue_id" => ("queue_id", Text(&mut self.queue_id)),
            "queue_key" => ("queue_key", Text(&mut self.queue_key)),
            _ => return None,
        })
    }

    fn into_claims(self) -> Result<Claims, Error> {
        Ok(Claims {
            iss: required(self.iss, "iss")?,
            aud: required(self.aud, "aud")?,
            sub: required(self.sub, "sub")?,
            exp: required(self.exp, "exp")?,
            nbf: required(self.nbf, "nbf")?,
            iat: required(self.iat, "iat")?,
            jti: self.jti,
            organization_slug: required(self.organization_slug, "organization_slug")?,
            organization_id: self.organization_id,
            pipeline_slug: required(self.pipeline_slug, "pipeline_slug")?,
            pipeline_id: required(self.pipeline_id, "pipeline_id")?,
            build_number: required(self.build_number, "build_number")?,
            build_branch: required(self.build_branch, "build_branch")?,
            build_tag: self.build_tag,
            build_commit: required(self.build_commit, "build_commit")?,
            build_source: self.build_source,
            step_key: self.step_key,
            job_id: required(self.job_id, "job_id")?,
            agent_id: required(self.agent_id, "agent_id")?,
            runner_environment: self.runner_environment,
            cluster_id: self.cluster_id,
            cluster_name: self.cluster_name,
            queue_id: self.queue_id,
            queue_key: self.queue_key,
            agent_tags: self.agent_tags,
        })
    }
}

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, Error> {
    value.ok_or(Error::MissingClaim(name))
}

/// Reads each claim straight into its typed field: strings and `null`, integers in
/// `0..=u64::MAX` (serde_json refuses floats such as `1.0` or `1e3`, negatives and strings for a
/// `u64`), `aud` as a string or array of strings. Unknown claims are parsed as [`IgnoredValue`]
/// (so they too must be valid JSON with valid escapes) and dropped.
impl MemberReader for RawClaims {
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        name: &str,
        access: &mut A,
        failure: &mut Option<MemberFailure>,
    ) -> Result<(), A::Error> {
        match self.slot(name) {
            Some((name, Slot::Text(field))) => {
                *field = access
                    .next_value()
                    .map_err(|e| wrong_type(failure, name, STRING, e))?;
            }
            Some((name, Slot::Integer(field))) => {
                *field = access
                    .next_value()
                    .map_err(|e| wrong_type(failure, name, INTEGER, e))?;
            }
            Some((name, Slot::Audience(field))) => {
                *field = access
                    .next_value()
                    .map_err(|e| wrong_type(failure, name, STRINGS, e))?;
            }
            None => match name.strip_prefix(AGENT_TAG_PREFIX) {
                Some(tag) => {
                    let value: Option<String> = access
                        .next_value()
                        .map_err(|e| wrong_type(failure, "agent_tag:*", STRING, e))?;
                    if let Some(value) = value {
                        self.agent_tags.insert(tag.to_owned(), value);
                    }
                }
                None => {
                    access.next_value::<IgnoredValue>()?;
                }
            },
        }
        Ok(())
    }
}

/// Records that claim `name` did not hold `expected`, and passes the error on.
fn wrong_type<E>(
    failure: &mut Option<MemberFailure>,
    name: &'static str,
    expected: &'static str,
    error: E,
) -> E {
    *failure = Some(MemberFailure::WrongType { name, expected });
    error
}
