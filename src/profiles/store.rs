//! The profile store: the current [`Generation`] and where it comes from.
//!
//! A request calls [`Store::current`] once and uses that one `Arc<Generation>` for everything it
//! decides (profile, digest, cache namespace), so no request ever mixes two generations. The
//! store is empty ([`Store::is_loaded`] false, token routes 503) until the first generation loads.
//!
//! Sources:
//! - built in ([`Store::builtin`]): loaded at once, never changes;
//! - a local file (`PROFILES_FILE`): re-read when its modification time, change time, size or
//!   inode changes (checked every [`DEFAULT_WATCH_INTERVAL`]) and unconditionally on `SIGHUP`
//!   ([`Store::reload_now`]);
//! - a GitHub file (`GITHUB_ORG_PROFILE`): fetched through the contents API with an
//!   installation token minted for that one repository (`contents:read`, `metadata:read`) and
//!   kept until it has less than [`TOKEN_MIN_REMAINING_SECS`] left; re-fetched every
//!   `PROFILES_REFRESH_SECS` with `If-None-Match` (304: unchanged).
//!
//! Until the first generation loads, every [`RETRY_INTERVAL`] brings a full attempt. A new
//! generation replaces the old one atomically; bytes with the current digest swap nothing. A
//! failed load keeps the previous generation. Every load logs its own outcome: the new digest
//! (info) and each quarantined profile (warn) once per load, or every problem of a failed load
//! with its JSON path (warn while a generation is kept, error while none is loaded).
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::generation::{DEFAULT_MAX_FILE_BYTES, FileError, Generation};
use crate::cache::CoalescingCache;
use crate::github::{self, Contents, MintRequest, Minted};
use crate::secret::Secret;
use crate::upstream::Failure;

/// Where the profile file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// Neither `PROFILES_FILE` nor `GITHUB_ORG_PROFILE` is set: the built-in profiles only.
    Builtin,
    /// `PROFILES_FILE`: a local file, JSON or YAML.
    File(PathBuf),
    /// `GITHUB_ORG_PROFILE=OWNER:REPO:PATH[@REF]`: a file fetched from GitHub's contents API.
    /// `owner` is `A-Z a-z 0-9 -`; `repo` is `A-Z a-z 0-9 - _ .` (not `.` or `..`); `path` is
    /// relative, `/`-separated segments of `A-Z a-z 0-9 - _ .` (none empty, `.` or `..`);
    /// `git_ref` is `A-Z a-z 0-9 - _ . /` without `..` or an empty segment. `None` means the
    /// repository's default branch.
    GitHub {
        /// The repository owner (user or organization).
        owner: String,
        /// The repository name.
        repo: String,
        /// The file's path in the repository, without a leading `/`.
        path: String,
        /// The branch, tag or commit, if given.
        git_ref: Option<String>,
    },
}

/// How often a local profile file is checked for changes (2 s).
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How often loading is retried while no generation is loaded (5 s).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// The contents token is re-minted once it has less than this long to live (300 s).
pub const TOKEN_MIN_REMAINING_SECS: u64 = 300;

/// Why a load failed; the previous generation stays.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The local file could not be opened or read.
    Read {
        /// The configured path.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The file was read but rejected as a whole.
    File(FileError),
    /// Minting the contents token or fetching the file from GitHub failed.
    GitHub(Failure),
}

impl LoadError {
    /// One line per problem (each whole-file problem with its JSON path), for the load log.
    pub fn problems(&self) -> Vec<String> {
        match self {
            LoadError::File(error) => error.problems(),
            other => vec![other.to_string()],
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, error } => write!(f, "cannot read {path:?}: {error}"),
            LoadError::File(error) => write!(f, "{error}"),
            LoadError::GitHub(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { error, .. } => Some(error),
            LoadError::File(error) => Some(error),
            LoadError::GitHub(error) => Some(error),
        }
    }
}

/// The current generation and its source. See the module documentation.
pub struct Store {
    current: RwLock<Option<Arc<Generation>>>,
    source: Source,
    /// The largest file accepted (`PROFILES_MAX_BYTES`).
    max_bytes: usize,
    /// Unix seconds when the current generation was installed (0: never).
    loaded_at: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("source", &self.source.describe())
            .field("status", &self.status_line())
            .finish()
    }
}

/// Where the bytes come from; each mutex also serializes that source's loads.
enum Source {
    Builtin,
    File {
        path: PathBuf,
        /// What the last attempt found, to skip an unchanged file.
        seen: Mutex<Option<Seen>>,
    },
    GitHub {
        file: Box<GitHubFile>,
        fetch: Mutex<Fetch>,
    },
}

/// `GITHUB_ORG_PROFILE`: where the file is, the client to fetch it with, and the contents token.
struct GitHubFile {
    client: Arc<github::Client>,
    owner: String,
    repo: String,
    path: String,
    git_ref: Option<String>,
    /// The contents token, under the unit key. Loads are already serialized by the source's
    /// mutex, so nothing coalesces here; it is the crate's single-flight mechanism all the same.
    token: CoalescingCache<(), Minted, Failure>,
}

/// What a GitHub fetch remembers between polls.
#[derive(Default)]
struct Fetch {
    etag: Option<String>,
}

/// What opening the local file found: its identity and version, or why it could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Stamp(Stamp),
    Unopenable(io::ErrorKind),
}

/// A file's identity and version: a rewrite changes the modification time (and size), `chmod`
/// the change time, a rename over it the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

impl Store {
    /// The built-in profiles only (no `PROFILES_FILE` or `GITHUB_ORG_PROFILE`): loaded at once.
    pub fn builtin() -> Store {
        Store {
            current: RwLock::new(Some(Arc::new(Generation::builtin()))),
            source: Source::Builtin,
            max_bytes: DEFAULT_MAX_FILE_BYTES,
            loaded_at: crate::time::now_unix().into(),
        }
    }

    /// A store for the local file at `path`, not loaded yet.
    pub fn file(path: PathBuf) -> Store {
        Store {
            current: RwLock::new(None),
            source: Source::File {
                path,
                seen: Mutex::new(None),
            },
            max_bytes: DEFAULT_MAX_FILE_BYTES,
            loaded_at: 0.into(),
        }
    }

    /// A store for `source`; `github` is the App's client, used by a GitHub source only. Not
    /// loaded yet, except the built-in source.
    pub fn new(source: &ProfileSource, github: Arc<github::Client>) -> Store {
        match source {
            ProfileSource::Builtin => Store::builtin(),
            ProfileSource::File(path) => Store::file(path.clone()),
            ProfileSource::GitHub {
                owner,
                repo,
                path,
                git_ref,
            } => Store {
                current: RwLock::new(None),
                source: Source::GitHub {
                    file: Box::new(GitHubFile {
                        client: github,
                        owner: owner.clone(),
                        repo: repo.clone(),
                        path: path.clone(),
                        git_ref: git_ref.clone(),
                        token: CoalescingCache::new(1),
                    }),
                    fetch: Mutex::new(Fetch::default()),
                },
                max_bytes: DEFAULT_MAX_FILE_BYTES,
                loaded_at: 0.into(),
            },
        }
    }

    /// The store with a file size limit of `max_bytes` instead of [`DEFAULT_MAX_FILE_BYTES`].
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Store {
        self.max_bytes = max_bytes;
        self
    }

    /// The current generation; `None` until the first one loads. Call once per request and use
    /// the result for everything.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Unix seconds when the current generation was installed; `None` before the first.
    pub fn loaded_at(&self) -> Option<u64> {
        Some(self.loaded_at.load(std::sync::atomic::Ordering::SeqCst)).filter(|&t| t > 0)
    }

    /// Whether a generation is loaded (the server is ready).
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// For systemd's `STATUS=`: `profiles digest 44136fa3…, 1 profiles, 0 unavailable`, or
    /// `profiles not loaded`.
    pub fn status_line(&self) -> String {
        match self.current() {
            Some(generation) => format!(
                "profiles digest {}, {} profiles, {} unavailable",
                short(generation.digest()),
                generation.profiles().count(),
                generation.quarantined().count()
            ),
            None => "profiles not loaded".to_owned(),
        }
    }

    /// Loads the source if it changed: a local file whose stamp differs from the last attempt's,
    /// a GitHub file whose ETag differs (sent as `If-None-Match`). `Ok(true)` when a new
    /// generation was installed; `Ok(false)` when nothing changed (including bytes with the
    /// current digest, and the built-in source). The outcome is already logged. `now` is Unix
    /// seconds, for GitHub calls.
    pub fn reload(&self, now: u64) -> Result<bool, LoadError> {
        self.load(false, now)
    }

    /// Like [`Store::reload`], but reads the file (or fetches it without `If-None-Match`) even
    /// when it looks unchanged: for `SIGHUP` and the start-up retries.
    pub fn reload_now(&self, now: u64) -> Result<bool, LoadError> {
        self.load(true, now)
    }

    fn load(&self, force: bool, now: u64) -> Result<bool, LoadError> {
        let loaded = match &self.source {
            Source::Builtin => return Ok(false),
            Source::File { path, seen } => read_file(path, &mut lock(seen), force, self.max_bytes),
            Source::GitHub { file, fetch } => {
                fetch_github(file, &mut lock(fetch), force, now, self.max_bytes)
            }
        };
        match loaded {
            Ok(None) => Ok(false),
            Ok(Some(generation)) => Ok(self.install(generation)),
            Err(error) => {
                self.log_failure(&error);
                Err(error)
            }
        }
    }

    /// Swaps in `generation` unless it has the current digest; `true` when swapped.
    fn install(&self, generation: Generation) -> bool {
        let generation = Arc::new(generation);
        {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            if current
                .as_ref()
                .is_some_and(|c| c.digest() == generation.digest())
            {
                log::debug!(
                    "profiles: {} unchanged (digest {})",
                    self.source.describe(),
                    generation.digest()
                );
                return false;
            }
            *current = Some(Arc::clone(&generation));
        }
        self.loaded_at
            .store(crate::time::now_unix(), std::sync::atomic::Ordering::SeqCst);
        log::info!(
            "profiles: loaded digest {} from {}: {} profiles, {} unavailable",
            generation.digest(),
            self.source.describe(),
            generation.profiles().count(),
            generation.quarantined().count()
        );
        for quarantined in generation.quarantined() {
            // The reason is composed by `profiles` with every untrusted part already escaped.
            log::warn!(
                "profiles: {} profile {:?} unavailable: {}",
                quarantined.family(),
                quarantined.name(),
                quarantined.reason()
            );
        }
        true
    }

    fn log_failure(&self, error: &LoadError) {
        let (level, keeping) = match self.current() {
            Some(kept) => (
                log::Level::Warn,
                format!("keeping digest {}", kept.digest()),
            ),
            None => (log::Level::Error, "no profiles loaded yet".to_owned()),
        };
        let problems = error.problems();
        log::log!(
            level,
            "profiles: loading {} failed ({keeping}), {} problem(s):",
            self.source.describe(),
            problems.len()
        );
        for problem in problems {
            log::log!(level, "profiles: {}: {problem}", self.source.describe());
        }
    }
}

impl Source {
    /// For log lines: `built-in`, `file "/etc/…"`, `github "acme/cfg:profiles.json@main"`.
    fn describe(&self) -> String {
        match self {
            Source::Builtin => "built-in".to_owned(),
            Source::File { path, .. } => format!("file {path:?}"),
            Source::GitHub { file, .. } => {
                let at = file
                    .git_ref
                    .as_deref()
                    .map_or(String::new(), |r| format!("@{r}"));
                let place = format!("{}/{}:{}{at}", file.owner, file.repo, file.path);
                format!("github {place:?}")
            }
        }
    }
}

/// Reads and parses the local file, unless `force` is false and it looks as at the last
/// attempt (`Ok(None)`). A failed attempt is remembered too, so a broken or missing file is
/// reported once, not at every check.
fn read_file(
    path: &Path,
    last: &mut Option<Seen>,
    force: bool,
    max_bytes: usize,
) -> Result<Option<Generation>, LoadError> {
    let opened = File::open(path).and_then(|file| {
        let stamp = Stamp::of(&file.metadata()?);
        Ok((file, stamp))
    });
    let seen = match &opened {
        Ok((_, stamp)) => Seen::Stamp(*stamp),
        Err(error) => Seen::Unopenable(error.kind()),
    };
    if !force && *last == Some(seen) {
        return Ok(None);
    }
    *last = Some(seen);
    let read_error = |error| LoadError::Read {
        path: path.to_owned(),
        error,
    };
    let (file, stamp) = opened.map_err(read_error)?;
    let len = usize::try_from(stamp.len).unwrap_or(usize::MAX);
    if len > max_bytes {
        return Err(LoadError::File(FileError::TooLarge {
            len,
            max: max_bytes,
        }));
    }
    // Bounded even if the file grows after the stamp; `parse` refuses anything over the limit.
    let mut bytes = Vec::with_capacity(len);
    file.take(
        u64::try_from(max_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1),
    )
    .read_to_end(&mut bytes)
    .map_err(read_error)?;
    Generation::parse_within(&bytes, max_bytes)
        .map(Some)
        .map_err(LoadError::File)
}

/// Fetches and parses the GitHub file; `Ok(None)` on 304. Without `force`, the last ETag is sent.
fn fetch_github(
    file: &GitHubFile,
    fetch: &mut Fetch,
    force: bool,
    now: u64,
    max_bytes: usize,
) -> Result<Option<Generation>, LoadError> {
    let token = contents_token(file, now)?;
    let etag = if force { None } else { fetch.etag.as_deref() };
    let answer = file.client.contents(
        &token,
        &file.owner,
        &file.repo,
        &file.path,
        file.git_ref.as_deref(),
        etag,
        now,
    );
    match answer {
        Ok(Contents::Unchanged) => Ok(None),
        Ok(Contents::File { bytes, etag }) => {
            // Remembered even when the bytes are rejected: the same file is not re-fetched.
            fetch.etag = etag;
            Generation::parse_within(&bytes, max_bytes)
                .map(Some)
                .map_err(LoadError::File)
        }
        Err(error) => {
            let transient = matches!(
                error,
                Failure::Unavailable { .. } | Failure::RateLimited { .. }
            );
            if !transient {
                // The token may be the problem (revoked, repository removed): mint afresh.
                file.token.invalidate(&());
            }
            Err(LoadError::GitHub(error))
        }
    }
}

/// The cached contents token while it has at least [`TOKEN_MIN_REMAINING_SECS`] left, else a
/// new one for exactly the profile repository with `contents:read` and `metadata:read`.
fn contents_token(file: &GitHubFile, now: u64) -> Result<Secret, LoadError> {
    let usable = |m: &Minted| m.expires_at.saturating_sub(now) >= TOKEN_MIN_REMAINING_SECS;
    let mint = || {
        let request = MintRequest {
            repositories: Some(vec![file.repo.clone()]),
            permissions: [("contents", "read"), ("metadata", "read")]
                .iter()
                .map(|(name, level)| (name.to_string(), level.to_string()))
                .collect(),
        };
        file.client.mint(&request, now)
    };
    let (minted, _) = file.token.get_or_load(&(), usable, mint);
    minted.map(|m| m.token.clone()).map_err(LoadError::GitHub)
}

/// Starts serving profiles from `source`: the first attempt happens here (a good file is
/// loaded on return), then a background thread re-checks every [`DEFAULT_WATCH_INTERVAL`]
/// (file) or `refresh_secs` (GitHub), retrying every [`RETRY_INTERVAL`] until the first
/// generation loads. The built-in source needs no thread.
pub fn start(
    source: &ProfileSource,
    github: Arc<github::Client>,
    refresh_secs: u64,
    max_bytes: usize,
) -> io::Result<Arc<Store>> {
    let interval = match source {
        ProfileSource::GitHub { .. } => Duration::from_secs(refresh_secs),
        _ => DEFAULT_WATCH_INTERVAL,
    };
    let store = Store::new(source, github).with_max_bytes(max_bytes);
    start_store(store, interval, RETRY_INTERVAL)
}

/// [`start`] with explicit intervals: `interval` between checks once loaded, `retry` between
/// attempts until then.
pub fn start_with(
    source: &ProfileSource,
    github: Arc<github::Client>,
    interval: Duration,
    retry: Duration,
) -> io::Result<Arc<Store>> {
    start_store(Store::new(source, github), interval, retry)
}

/// Loads `store` once (unless built-in) and starts its refresher.
fn start_store(store: Store, interval: Duration, retry: Duration) -> io::Result<Arc<Store>> {
    let store = Arc::new(store);
    if matches!(store.source, Source::Builtin) {
        return Ok(store);
    }
    let _ = store.reload_now(crate::time::now_unix());
    spawn_refresher(&store, interval, retry)?;
    Ok(store)
}

/// The background thread (`profiles`): sleeps `retry` and attempts a full load while nothing is
/// loaded, then sleeps `interval` and reloads if changed. It ends once the store is dropped.
pub fn spawn_refresher(
    store: &Arc<Store>,
    interval: Duration,
    retry: Duration,
) -> io::Result<JoinHandle<()>> {
    let store: Weak<Store> = Arc::downgrade(store);
    thread::Builder::new()
        .name("profiles".into())
        .spawn(move || refresh_loop(&store, interval, retry))
}

fn refresh_loop(store: &Weak<Store>, interval: Duration, retry: Duration) {
    loop {
        let Some(loaded) = store.upgrade().map(|s| s.is_loaded()) else {
            return;
        };
        thread::sleep(if loaded { interval } else { retry });
        let Some(store) = store.upgrade() else {
            return;
        };
        let now = crate::time::now_unix();
        // Failures are logged by the store and retried at the next tick.
        let _ = if loaded {
            store.reload(now)
        } else {
            store.reload_now(now)
        };
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first 8 hex digits and `…`.
fn short(digest: &str) -> String {
    format!("{}…", digest.get(..8).unwrap_or(digest))
}
