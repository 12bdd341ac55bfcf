//! The audit record: one JSON object per line for every request on a token route. It carries the
//! precise reason for every denial; it never carries the GitHub token, the JWT or any secret (only
//! `hashedToken`, which is what GitHub's own audit log shows).
//!
//! Durability ([`AuditLog`]): a record is one `write` of the whole line; for a request that hands
//! out a token it is written before the response leaves, and if it cannot be written the token is
//! not sent ([`OnFailure::Refuse`], the default) — unless the operator chose availability
//! ([`OnFailure::Serve`]). Records that could not be written wait, in order, in a bounded queue
//! that [`AuditLog::retry_pending`] (called every [`RETRY_INTERVAL`]) and every later write try
//! first. A write cut short is never glued to the next record: a cut-off tail is removed from a
//! regular file, else the next record starts on a fresh line. A file is reopened (mode 0600) when
//! it has been renamed or removed, and on [`AuditLog::reopen`] (SIGHUP).
#![forbid(unsafe_code)]

use crate::buffers;
use crate::json;
use crate::metrics::{self, Metrics};
use crate::oidc::{Audience, Claims};
use crate::profiles::RuleMatch;
use crate::time;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest claim value, user agent or reason written, in bytes (longer ones are cut at a
/// character boundary).
pub const MAX_VALUE_BYTES: usize = 256;

/// Cuts `s` to at most [`MAX_VALUE_BYTES`] bytes at a character boundary.
pub fn truncate(s: &str) -> String {
    cut(s).to_owned()
}

/// `s` up to [`MAX_VALUE_BYTES`] bytes, cut at a character boundary.
pub fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_VALUE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Most `aud` values written.
pub const MAX_AUDIENCES: usize = 8;

/// What was read from the JWT: its `kid`, and the claims of a signature-verified payload (shared
/// with the verification, not copied: each value is cut to [`MAX_VALUE_BYTES`] as it is
/// written). Written as `kid`, `jti`, `sub`, `iss`, `aud` (at most [`MAX_AUDIENCES`]), `exp`
/// and `expiryRemainingSecs` (at `now`); all but `kid` null (`aud` empty) without claims.
#[derive(Debug, Clone)]
pub struct JwtInfo {
    pub kid: Option<String>,
    pub claims: Option<Arc<Claims>>,
    /// The request's time, for `expiryRemainingSecs`.
    pub now: u64,
}

impl Serialize for JwtInfo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = self.claims.as_deref();
        let remaining = c.map(|c| {
            i64::try_from(c.exp)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(self.now).unwrap_or(0))
        });
        let mut s = serializer.serialize_struct("JwtInfo", 7)?;
        s.serialize_field("kid", &self.kid.as_deref().map(cut))?;
        s.serialize_field("jti", &c.and_then(|c| c.jti.as_deref()).map(cut))?;
        s.serialize_field("sub", &c.map(|c| cut(&c.sub)))?;
        s.serialize_field("iss", &c.map(|c| cut(&c.iss)))?;
        s.serialize_field("aud", &Audiences(c.map(|c| &c.aud)))?;
        s.serialize_field("exp", &c.map(|c| time::rfc3339(c.exp)))?;
        s.serialize_field("expiryRemainingSecs", &remaining)?;
        s.end()
    }
}

/// `aud` as a list, each cut, at most [`MAX_AUDIENCES`].
struct Audiences<'a>(Option<&'a Audience>);

impl Serialize for Audiences<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list: &[String] = match self.0 {
            Some(Audience::One(a)) => std::slice::from_ref(a),
            Some(Audience::Many(list)) => list,
            None => &[],
        };
        serializer.collect_seq(list.iter().take(MAX_AUDIENCES).map(|a| cut(a)))
    }
}

/// The pipeline the JWT speaks for, from its verified claims (shared, cut as they are written):
/// `organizationSlug`, `pipelineSlug`, `pipelineId`, `buildNumber`, `buildBranch`, `jobId`,
/// `agentId`.
#[derive(Debug, Clone)]
pub struct PipelineInfo(pub Arc<Claims>);

impl Serialize for PipelineInfo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = &self.0;
        let mut s = serializer.serialize_struct("PipelineInfo", 7)?;
        s.serialize_field("organizationSlug", cut(&c.organization_slug))?;
        s.serialize_field("pipelineSlug", cut(&c.pipeline_slug))?;
        s.serialize_field("pipelineId", cut(&c.pipeline_id))?;
        s.serialize_field("buildNumber", &c.build_number)?;
        s.serialize_field("buildBranch", cut(&c.build_branch))?;
        s.serialize_field("jobId", cut(&c.job_id))?;
        s.serialize_field("agentId", cut(&c.agent_id))?;
        s.end()
    }
}

/// What was handed out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vended {
    pub repositories: Vec<String>,
    pub permissions: Vec<String>,
    /// The token's end of life, as the response reported it.
    pub expiry: String,
    pub hashed_token: String,
    /// `hit`, `miss` or `coalesced`.
    pub cache: &'static str,
    /// When kitebridge revokes the token (its end of life, before GitHub's expiry); absent when
    /// GitHub's expiry ends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_at: Option<String>,
}

/// One audit line. Field order is the documented one.
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
    /// The client's address (behind a trusted proxy, the one its forwarding headers name).
    pub source_ip: String,
    /// The TCP peer's address.
    pub peer_ip: String,
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
            peer_ip: source_ip.clone(),
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

/// The short second record of a token-bearing answer that did not reach its client (written
/// after the send, with the same request id).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub request_id: String,
    pub status: u16,
    /// Whether the whole response was written to the socket.
    pub delivered: bool,
    pub duration_ms: f64,
}

impl Delivery {
    /// The record of a response to `request_id` that was (not) `delivered`.
    pub fn new(
        request_id: &str,
        status: u16,
        delivered: bool,
        duration_ms: f64,
        time: String,
    ) -> Self {
        Delivery {
            kind: "delivery",
            time,
            request_id: request_id.to_owned(),
            status,
            delivered,
            duration_ms,
        }
    }
}

/// The record of one early revocation (a token vended under a ttl or `expires_in`): the mint's
/// request id, the token's hash, when it was due, when it was last tried, and how it ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// The request id of the mint.
    pub request_id: String,
    pub hashed_token: String,
    /// When the token was due to be revoked (its reported end of life).
    pub scheduled: String,
    /// When the last attempt was made; `None` if none was (left at shutdown).
    pub actual: Option<String>,
    /// `revoked`, `already_gone`, `expired` or `left`.
    pub outcome: &'static str,
    pub attempts: u32,
    /// The last attempt's failure, if it failed.
    pub error: Option<String>,
}

/// What to do with a token whose audit record cannot be written (`AUDIT_ON_FAILURE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// `refuse`: the token is not sent (503 `audit unavailable`; a fresh mint is revoked), and
    /// `/healthcheck` answers 503 until records are written again.
    Refuse,
    /// `serve`: the token is sent anyway and the failure logged, every time.
    Serve,
}

/// `AUDIT_ON_FAILURE`'s default.
pub const DEFAULT_ON_FAILURE: OnFailure = OnFailure::Refuse;
/// The most records kept waiting for the sink; beyond, records are dropped (and counted).
pub const MAX_PENDING: usize = 10_000;
/// How often waiting records are retried without new traffic.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a record was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The sink refused the write (disk full, file removed and not re-creatable, pipe closed, …).
    Sink { kind: io::ErrorKind, detail: String },
    /// The write took only part of the record.
    Short { written: usize, len: usize },
    /// Earlier records still wait for the sink; this one waits behind them.
    Behind { pending: usize },
    /// The record does not serialise (cannot happen for the record types here).
    Unserialisable(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Sink { detail, .. } => write!(f, "audit write failed: {detail}"),
            WriteError::Short { written, len } => {
                write!(f, "audit write cut short: {written} of {len} bytes")
            }
            WriteError::Behind { pending } => {
                write!(
                    f,
                    "audit sink failing: {pending} records wait to be written"
                )
            }
            WriteError::Unserialisable(e) => write!(f, "audit record not serialisable: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Sink {
            kind: e.kind(),
            detail: e.to_string(),
        }
    }
}

/// The file or stream records go to.
struct Sink {
    file: File,
    /// The path to reopen (a configured file); `None` for stdout, stderr and test writers.
    path: Option<PathBuf>,
    /// The (device, inode) `file` was opened as, to notice a rename or removal of `path`.
    identity: Option<(u64, u64)>,
    /// The last write was cut short and its tail could not be removed: the next record starts
    /// with a newline.
    cut: bool,
    /// Lines (newline included) not written yet, oldest first.
    pending: VecDeque<Vec<u8>>,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Sink {
    fn on(file: File, path: Option<PathBuf>) -> Sink {
        let identity = path
            .as_ref()
            .and_then(|_| file.metadata().ok())
            .map(|m| identity(&m));
        Sink {
            file,
            path,
            identity,
            cut: false,
            pending: VecDeque::new(),
        }
    }

    /// Opens the configured path anew (after a rotation).
    fn reopen(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = open_append(path)?;
        self.identity = Some(identity(&file.metadata()?));
        self.file = file;
        self.cut = false; // a new file starts on a fresh line
        Ok(())
    }

    /// Reopens the path if it no longer names the open file (renamed or removed).
    fn follow_rotation(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let now = match std::fs::metadata(path) {
            Ok(meta) => Some(identity(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if now.is_none() || now != self.identity {
            log::info!("audit file {path:?} was moved or removed; reopening it");
            self.reopen()?;
        }
        Ok(())
    }

    /// One `write` of the whole line (preceded by a newline after a cut), then flushed.
    fn write_line(&mut self, line: &[u8]) -> Result<(), WriteError> {
        self.follow_rotation()?;
        let after_cut;
        let bytes = if self.cut {
            after_cut = [b"\n", line].concat();
            after_cut.as_slice()
        } else {
            line
        };
        let written = loop {
            match self.file.write(bytes) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if written < bytes.len() {
            if written > 0 {
                let removed = self.remove_tail(written as u64);
                self.cut = self.cut || !removed;
            }
            return Err(WriteError::Short {
                written,
                len: bytes.len(),
            });
        }
        self.file.flush()?;
        self.cut = false;
        Ok(())
    }

    /// Takes the `written` bytes of a cut-off write back out of a regular file, when they are
    /// certainly the file's last bytes: the write ended at the file's end (an append, nothing
    /// written after it). Whether they were removed (if not, the next record starts on a new
    /// line).
    fn remove_tail(&mut self, written: u64) -> bool {
        use std::io::Seek;
        let Some(len) = self
            .file
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
        else {
            return false;
        };
        let Ok(end) = self.file.stream_position() else {
            return false;
        };
        match end.checked_sub(written) {
            Some(start) if end == len => self.file.set_len(start).is_ok(),
            _ => false,
        }
    }

    /// Writes waiting lines in order until one fails; whether none is left.
    fn drain(&mut self) -> Result<(), WriteError> {
        while let Some(line) = self.pending.front() {
            let line = line.clone();
            self.write_line(&line)?;
            self.pending.pop_front();
        }
        Ok(())
    }
}

/// Where audit lines go: stdout (the journal under systemd), stderr, or a file opened for append
/// with mode 0600. See the module documentation for what happens when writes fail.
pub struct AuditLog {
    sink: Mutex<Sink>,
    on_failure: OnFailure,
    /// `false` from a failed write until every waiting record is written.
    writing: AtomicBool,
    metrics: Option<Arc<Metrics>>,
}

impl AuditLog {
    fn with_sink(sink: Sink) -> Self {
        AuditLog {
            sink: Mutex::new(sink),
            on_failure: DEFAULT_ON_FAILURE,
            writing: AtomicBool::new(true),
            metrics: None,
        }
    }

    /// Audit lines to stdout (written straight to the descriptor, no buffer in between).
    pub fn stdout() -> io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(AuditLog::with_sink(Sink::on(File::from(fd), None)))
    }

    /// Audit lines to stderr (written straight to the descriptor, no buffer in between).
    pub fn stderr() -> io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = io::stderr().as_fd().try_clone_to_owned()?;
        Ok(AuditLog::with_sink(Sink::on(File::from(fd), None)))
    }

    /// Audit lines appended to `path` (created with mode 0600), reopened after a rotation.
    pub fn file(path: &Path) -> io::Result<Self> {
        let file = open_append(path)?;
        Ok(AuditLog::with_sink(Sink::on(file, Some(path.to_owned()))))
    }

    /// This log with the policy `on_failure` (default [`DEFAULT_ON_FAILURE`]).
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// This log counting its failed and dropped records in `metrics`.
    pub fn counted_in(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.declare(metrics::AUDIT_WRITE_FAILURES);
        metrics.declare(metrics::AUDIT_DROPPED);
        self.metrics = Some(metrics);
        self
    }

    /// The policy for tokens whose record cannot be written.
    pub fn policy(&self) -> OnFailure {
        self.on_failure
    }

    /// Whether records are being written: `false` from a failed write until every record that
    /// waited has been written.
    pub fn is_writing(&self) -> bool {
        self.writing.load(Ordering::SeqCst)
    }

    /// Whether tokens must be withheld now: the policy is [`OnFailure::Refuse`] and records are
    /// not being written.
    pub fn withholds_tokens(&self) -> bool {
        self.on_failure == OnFailure::Refuse && !self.is_writing()
    }

    fn lock(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, family: metrics::Family) {
        if let Some(metrics) = &self.metrics {
            metrics.count(family, &[]);
        }
    }

    /// Writes `record` now, after every record still waiting, or fails without keeping it: for
    /// the record of a token, which is not sent when this fails (the caller then writes the
    /// record of what it answered instead, with [`AuditLog::write`]).
    pub fn write_now(&self, record: &impl Serialize) -> Result<(), WriteError> {
        let line = line_of(record)?;
        let mut sink = self.lock();
        let result = sink.drain().and_then(|()| sink.write_line(&line));
        drop(sink);
        buffers::give(line);
        self.after(&result);
        result
    }

    /// Writes `record`, after every record still waiting; when it cannot be written it waits
    /// with them (dropped, and counted, beyond [`MAX_PENDING`]).
    pub fn write(&self, record: &impl Serialize) -> Result<(), WriteError> {
        let line = match line_of(record) {
            Ok(line) => line,
            Err(e) => {
                log::error!("{e}");
                return Err(e);
            }
        };
        let mut sink = self.lock();
        let result = sink.drain().and_then(|()| sink.write_line(&line));
        if result.is_err() && sink.pending.len() < MAX_PENDING {
            // Kept at its own length: the buffer may be a larger spare (up to 16 KiB), and up
            // to MAX_PENDING lines wait.
            sink.pending.push_back(line.as_slice().to_vec());
            buffers::give(line);
        } else {
            if result.is_err() {
                self.count(metrics::AUDIT_DROPPED);
                log::error!("audit record dropped: {MAX_PENDING} records already wait");
            }
            buffers::give(line);
        }
        drop(sink);
        self.after(&result);
        result
    }

    /// Writes the records that wait, in order (the retry thread calls this every
    /// [`RETRY_INTERVAL`]); whether none is left.
    pub fn retry_pending(&self) -> bool {
        let mut sink = self.lock();
        if sink.pending.is_empty() {
            return true;
        }
        let waiting = sink.pending.len();
        let result = sink.drain();
        drop(sink);
        if result.is_ok() {
            log::warn!("audit records are written again ({waiting} waiting records written)");
            self.writing.store(true, Ordering::SeqCst);
        }
        result.is_ok()
    }

    /// Reopens the file (SIGHUP, after a rotation); stdout and stderr are left as they are.
    pub fn reopen(&self) -> io::Result<()> {
        self.lock().reopen()
    }

    /// Records how a write went: failures counted and logged, the writing state kept.
    fn after(&self, result: &Result<(), WriteError>) {
        match result {
            Ok(()) => {
                if !self.writing.swap(true, Ordering::SeqCst) {
                    log::warn!("audit records are written again");
                }
            }
            Err(e) => {
                self.count(metrics::AUDIT_WRITE_FAILURES);
                let was_writing = self.writing.swap(false, Ordering::SeqCst);
                if self.on_failure == OnFailure::Serve {
                    log::error!("{e} (AUDIT_ON_FAILURE=serve: answers go out regardless)");
                } else if was_writing {
                    log::error!("{e}; tokens are withheld until records are written again");
                }
            }
        }
    }
}

/// A record as one line, newline included, in one of the thread's [`buffers`] (the writer
/// gives it back once written).
fn line_of(record: &impl Serialize) -> Result<Vec<u8>, WriteError> {
    // A token's record is about 1.5 KiB: room for it at once, not a string of reallocations.
    let mut line = buffers::take(2048);
    json::to_writer(&mut line, record).map_err(|e| WriteError::Unserialisable(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log on a temporary file (removed on drop).
    struct TempLog {
        dir: PathBuf,
        log: AuditLog,
    }

    impl Drop for TempLog {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn temp_log(tag: &str) -> TempLog {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "kitebridge-audit-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap();
        let log = AuditLog::file(&dir.join("audit.log")).unwrap();
        TempLog { dir, log }
    }

    fn record(id: &str) -> Record {
        Record::new(id, "POST", "/token", "127.0.0.1".into(), None)
    }

    fn ids(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["requestId"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn a_rotated_or_removed_file_is_reopened_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let t = temp_log("rotate");
        let path = t.dir.join("audit.log");
        t.log.write(&record("a")).unwrap();
        std::fs::rename(&path, t.dir.join("audit.log.1")).unwrap();
        t.log.write(&record("b")).unwrap();
        assert_eq!(ids(&t.dir.join("audit.log.1")), ["a"]);
        assert_eq!(ids(&path), ["b"]);
        std::fs::remove_file(&path).unwrap();
        t.log.write(&record("c")).unwrap();
        assert_eq!(ids(&path), ["c"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        t.log.reopen().unwrap();
        t.log.write(&record("d")).unwrap();
        assert_eq!(ids(&path), ["c", "d"]);
    }

    #[test]
    fn failed_records_wait_in_order_and_are_written_when_the_sink_recovers() {
        let t = temp_log("pending");
        let path = t.dir.join("audit.log");
        t.log.write(&record("a")).unwrap();
        // The directory goes away: the file cannot be re-created, writes fail.
        std::fs::remove_dir_all(&t.dir).unwrap();
        assert!(matches!(
            t.log.write(&record("b")),
            Err(WriteError::Sink { .. })
        ));
        assert!(!t.log.is_writing());
        assert!(t.log.withholds_tokens());
        assert!(t.log.write_now(&record("token")).is_err(), "not kept");
        assert!(matches!(
            t.log.write(&record("c")),
            Err(WriteError::Sink { .. })
        ));
        assert!(!t.log.retry_pending());
        std::fs::create_dir(&t.dir).unwrap();
        assert!(t.log.retry_pending());
        assert!(t.log.is_writing());
        t.log.write(&record("d")).unwrap();
        assert_eq!(
            ids(&path),
            ["b", "c", "d"],
            "in order, the unkept one absent"
        );
    }

    #[test]
    fn serve_policy_does_not_withhold() {
        let t = temp_log("serve");
        let log = AuditLog::file(&t.dir.join("x.log"))
            .unwrap()
            .on_failure(OnFailure::Serve);
        std::fs::remove_dir_all(&t.dir).unwrap();
        assert!(log.write(&record("a")).is_err());
        assert!(!log.is_writing());
        assert!(!log.withholds_tokens());
    }

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

    #[test]
    fn a_full_record_is_written_as_serde_json_writes_it() {
        let payload = serde_json::json!({
            "iss": "https://agent.buildkite.com", "aud": ["a", "b\u{0}"], "sub": "s\"ub\\",
            "exp": 1_700_000_100u64, "nbf": 1_700_000_000u64, "iat": 1_700_000_000u64,
            "jti": "j-1", "organization_slug": "acme", "organization_id": "o",
            "pipeline_slug": "widgets", "pipeline_id": "p-1", "build_number": 7,
            "build_branch": "feature/\u{7}é", "build_commit": "c", "job_id": "job-1",
            "agent_id": "agent-1",
        });
        let claims = Arc::new(Claims::from_json(payload.to_string().as_bytes()).unwrap());
        let mut r = Record::new("id", "POST", "/token\t", "::1".into(), Some(b"ua\x01"));
        r.time = "2023-11-14T22:15:00.123Z".into();
        r.status = 200;
        r.duration_ms = 12.5;
        r.authorized = true;
        r.jwt = Some(JwtInfo {
            kid: Some("kid".into()),
            claims: Some(Arc::clone(&claims)),
            now: 1_700_000_040,
        });
        r.pipeline = Some(PipelineInfo(claims));
        r.profile = Some("repo:widgets".into());
        r.profile_digest = Some("sha256:00ff".into());
        r.requested_repository = Some("acme/widgets".into());
        r.vended = Some(Vended {
            repositories: vec!["widgets".into(), "gadgets".into()],
            permissions: vec!["contents:read".into()],
            expiry: "2023-11-14T23:15:00Z".into(),
            hashed_token: "abc=".into(),
            cache: "hit",
            revoke_at: Some("2023-11-14T22:20:00Z".into()),
        });
        r.matches = vec![RuleMatch {
            claim: "pipeline_slug".into(),
            value: "wid\"gets".into(),
        }];
        r.error = Some("none\n".into());
        for duration in [0.0, 0.1, 12.5, 1234.0, 99_999.9] {
            r.duration_ms = duration;
            let mut want = serde_json::to_vec(&r).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(line_of(&r).unwrap()).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn jwt_and_pipeline_parts_are_written_from_the_claims_cut_and_in_order() {
        let long = "é".repeat(200);
        let auds: Vec<String> = (0..10).map(|i| format!("aud-{i}")).collect();
        let payload = serde_json::json!({
            "iss": "https://agent.buildkite.com", "aud": auds, "sub": long,
            "exp": 1_700_000_100u64, "nbf": 1_700_000_000u64, "iat": 1_700_000_000u64,
            "jti": "j-1", "organization_slug": "acme", "organization_id": "o",
            "pipeline_slug": "widgets", "pipeline_id": "p-1", "build_number": 7,
            "build_branch": long, "build_commit": "c", "job_id": "job-1", "agent_id": "agent-1",
            "step_key": null, "build_tag": null, "build_source": "ui",
        });
        let claims = Arc::new(Claims::from_json(payload.to_string().as_bytes()).unwrap());
        let jwt = JwtInfo {
            kid: Some("k\"1".into()),
            claims: Some(Arc::clone(&claims)),
            now: 1_700_000_040,
        };
        let line = serde_json::to_string(&jwt).unwrap();
        let cut_long = truncate(&long);
        let want = serde_json::json!({
            "kid": "k\"1", "jti": "j-1", "sub": cut_long, "iss": "https://agent.buildkite.com",
            "aud": auds[..MAX_AUDIENCES], "exp": "2023-11-14T22:15:00Z", "expiryRemainingSecs": 60,
        });
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            want
        );
        let order: Vec<usize> = [
            "kid",
            "jti",
            "sub",
            "iss",
            "aud",
            "exp",
            "expiryRemainingSecs",
        ]
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{line}");
        let bare = JwtInfo {
            kid: None,
            claims: None,
            now: 0,
        };
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({"kid": null, "jti": null, "sub": null, "iss": null, "aud": [],
                "exp": null, "expiryRemainingSecs": null})
        );
        let pipeline = serde_json::to_string(&PipelineInfo(claims)).unwrap();
        assert_eq!(
            pipeline,
            format!(
                "{{\"organizationSlug\":\"acme\",\"pipelineSlug\":\"widgets\",\"pipelineId\":\"p-1\",\
                 \"buildNumber\":7,\"buildBranch\":\"{cut_long}\",\"jobId\":\"job-1\",\"agentId\":\"agent-1\"}}"
            )
        );
    }
}
