//! The audit record: one JSON object per line for every request on a token route, written when
//! the response is sent. It carries the precise reason for every denial; it never carries the
//! GitHub token, the JWT or any secret (only `hashedToken`, which is what GitHub's own audit log
//! shows).
#![forbid(unsafe_code)]

use crate::profiles::RuleMatch;
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

/// Longest claim value, user agent or reason written, in bytes (longer ones are cut at a
/// character boundary).
pub const MAX_VALUE_BYTES: usize = 256;

/// Cuts `s` to at most [`MAX_VALUE_BYTES`] bytes at a character boundary.
pub fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_VALUE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// What was read from the (verified) JWT.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtInfo {
    pub kid: Option<String>,
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<String>,
    pub expiry_remaining_secs: Option<i64>,
}

/// The pipeline the JWT speaks for.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInfo {
    pub organization_slug: String,
    pub pipeline_slug: String,
    pub pipeline_id: String,
    pub build_number: u64,
    pub build_branch: String,
    pub job_id: String,
    pub agent_id: String,
}

/// What was handed out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vended {
    pub repositories: Vec<String>,
    pub permissions: Vec<String>,
    pub expiry: String,
    pub hashed_token: String,
    /// `hit`, `miss` or `coalesced`.
    pub cache: &'static str,
}

/// One audit line. Field order is the order of `operations.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub authorized: bool,
    pub jwt: Option<JwtInfo>,
    pub pipeline: Option<PipelineInfo>,
    pub profile: Option<String>,
    pub profile_digest: Option<String>,
    pub requested_repository: Option<String>,
    pub vended: Option<Vended>,
    pub matches: Vec<RuleMatch>,
    pub error: Option<String>,
}

impl Record {
    /// A record for a request, before anything about it is known.
    pub fn new(
        request_id: &str,
        method: &str,
        path: &str,
        source_ip: String,
        user_agent: Option<&[u8]>,
    ) -> Self {
        Record {
            kind: "audit",
            time: String::new(),
            request_id: request_id.to_owned(),
            method: method.to_owned(),
            path: truncate(path),
            status: 0,
            duration_ms: 0.0,
            source_ip,
            user_agent: user_agent.map(|ua| truncate(&String::from_utf8_lossy(ua))),
            authorized: false,
            jwt: None,
            pipeline: None,
            profile: None,
            profile_digest: None,
            requested_repository: None,
            vended: None,
            matches: Vec::new(),
            error: None,
        }
    }
}

/// Where audit lines go: stdout (the journal under systemd), stderr, or a file opened for append
/// with mode 0600.
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    /// Audit lines to stdout.
    pub fn stdout() -> Self {
        AuditLog {
            out: Mutex::new(Box::new(io::stdout())),
        }
    }

    /// Audit lines to stderr.
    pub fn stderr() -> Self {
        AuditLog {
            out: Mutex::new(Box::new(io::stderr())),
        }
    }

    /// Audit lines appended to `path` (created with mode 0600).
    pub fn file(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            out: Mutex::new(Box::new(file)),
        })
    }

    /// Audit lines to any writer (tests).
    pub fn writer(out: impl Write + Send + 'static) -> Self {
        AuditLog {
            out: Mutex::new(Box::new(out)),
        }
    }

    /// Writes one record as one line. A failed write is logged, never fatal.
    pub fn write(&self, record: &Record) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                log::error!("audit record not serialisable: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
            log::error!("audit write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_a_character_boundary() {
        assert_eq!(truncate("abc"), "abc");
        let long = "é".repeat(200); // 400 bytes
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_VALUE_BYTES && cut.len() >= MAX_VALUE_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn record_serialises_in_the_documented_shape() {
        let mut r = Record::new(
            "abcd",
            "POST",
            "/token",
            "127.0.0.1".into(),
            Some(b"curl/8\n\x1b[31m"),
        );
        r.status = 401;
        r.error = Some("jwt: expired 42s ago".into());
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["type"], "audit");
        assert_eq!(v["requestId"], "abcd");
        assert_eq!(v["userAgent"], "curl/8\n\u{1b}[31m");
        assert_eq!(v["vended"], serde_json::Value::Null);
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            !line.contains('\n'),
            "control characters are escaped: one record is one line"
        );
        let keys: Vec<&str> = line
            .split("\":")
            .filter_map(|k| k.rsplit("\"").next())
            .collect();
        assert_eq!(keys.first(), Some(&"type"));
    }
}
