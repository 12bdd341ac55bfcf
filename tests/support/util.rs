//! Small helpers the integration tests share: the clock, fixture paths, free ports, hex,
//! temporary directories. Standard library only (and `ring` for SHA-256), so anything including
//! `tests/support/mod.rs` can use them.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the system clock (0 before 1970), as kitebridge reads it.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The path of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lowercase hex SHA-256 of `bytes` (what a profile generation's digest is).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// A fresh, empty directory of this test process under the system temp dir, removed with its
/// contents when dropped (unless [`TempDir::keep`] hands it over). Derefs to its [`Path`].
#[derive(Debug)]
pub struct TempDir(PathBuf);

/// A new [`TempDir`] named `kitebridge-<tag>-<pid>-<n>-<nanos>`: unique within the process and
/// across runs, so no test finds another's leftovers.
pub fn temp_dir(tag: &str) -> TempDir {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "kitebridge-{tag}-{}-{n}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    TempDir(dir)
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory, no longer removed on drop (for a file that must outlive its creator).
    pub fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }

    /// Removes the directory now, reporting a failure (dropping ignores it).
    pub fn close(self) -> std::io::Result<()> {
        std::fs::remove_dir_all(self.keep())
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
