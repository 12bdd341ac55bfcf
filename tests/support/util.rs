//! Small helpers the integration tests share: the clock, fixture paths, free ports, hex,
//! temporary directories, polling, child processes, threads released at once, idle connections.
//! Standard library only (and `ring` for SHA-256), so anything including `tests/support/mod.rs`
//! can use them.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Polls `attempt` until it gives a value or `within` has passed; the value, if one came. Tries
/// at once, then after 10 ms, backing off to every 100 ms (quick for cheap checks, gentle for
/// requests).
pub fn poll_for<T>(within: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Polls `done` (as [`poll_for`]) until it returns true or `within` has passed; whether it did.
pub fn poll_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    poll_for(within, || done().then_some(())).is_some()
}

/// [`poll_until`], panicking with "timed out waiting for `what`" when `within` runs out.
pub fn wait_until(what: &str, within: Duration, done: impl FnMut() -> bool) {
    assert!(poll_until(within, done), "timed out waiting for {what}");
}

/// Waits for `child` to exit, at most `within`: its exit code (`None` on a signal or timeout). A
/// child still running at the deadline is killed, so a failed test leaves no process behind.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let status = poll_for(within, || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
    }
    status.and_then(|s| s.code())
}

/// A command for `program` whose environment is `env` and `PATH`, nothing else inherited.
pub fn command_with_env(program: &str, env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `task` on `threads` threads released together by a barrier; their results in thread
/// order (a panicking thread fails the caller).
pub fn all_at_once<T: Send + 'static>(
    threads: usize,
    task: impl Fn() -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(threads));
    let task = Arc::new(task);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, task) = (Arc::clone(&barrier), Arc::clone(&task));
            std::thread::spawn(move || {
                barrier.wait();
                task()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Opens `count` connections to `addr`, writes `head` (may be empty) on each and leaves them
/// idle: every one that opened holds a connection slot until dropped. One result per attempt,
/// for a caller that expects some to fail; [`idle_connections`] insists on all.
pub fn try_idle_connections(
    addr: SocketAddr,
    count: usize,
    head: &[u8],
) -> Vec<std::io::Result<TcpStream>> {
    (0..count)
        .map(|_| {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(head)?;
            Ok(s)
        })
        .collect()
}

/// [`try_idle_connections`], panicking unless every connection opened and took `head`.
pub fn idle_connections(addr: SocketAddr, count: usize, head: &[u8]) -> Vec<TcpStream> {
    try_idle_connections(addr, count, head)
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.unwrap_or_else(|e| panic!("idle connection {i} of {count}: {e}")))
        .collect()
}

/// Sends `kill -NAME pid` and checks it was delivered.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends `requests` in turn on one keep-alive connection until `until`; the latencies.
pub fn drive(addr: SocketAddr, requests: &[Vec<u8>], until: Instant) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).ok();
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut latencies = Vec::new();
    let mut line = String::new();
    let mut i = 0;
    while Instant::now() < until {
        let t = Instant::now();
        writer
            .write_all(&requests[i % requests.len()])
            .expect("write");
        i += 1;
        let mut length = 0usize;
        line.clear();
        reader.read_line(&mut line).expect("status line");
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "unexpected answer: {line:?}"
        );
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        latencies.push(t.elapsed());
    }
    latencies
}
