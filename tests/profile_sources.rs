//! The profile store and its sources: a local file (load at start, watcher, broken file kept
//! out, SIGHUP-style reload, a file that appears late), generation consistency under concurrent
//! swaps, and a GitHub file through the contents API stand-in (raw and base64 forms, ETag/304,
//! the one-repository `contents:read` token and its re-use).
#![forbid(unsafe_code)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use kitebridge::{
    AppKey, Failure, FileError, GitHubClient as Client, GitHubSettings as Settings, LoadError,
    Lookup, ProfileSource, Store, UpstreamClient, UpstreamSettings,
    start_profiles_with as start_with,
};
use serde_json::json;
use support::github::{APP_KEY_PEM, Fail, Route};
use support::kitebridge::{APP_ID, INSTALLATION_ID, github_stand_in};
use support::util::{now, sha256_hex, temp_dir, wait_until};

const FAST: Duration = Duration::from_millis(50);
const PATIENCE: Duration = Duration::from_secs(10);

const GOOD: &str = r#"{"pipeline":{"profiles":[{"name":"one","permissions":["contents:read"]}]}}"#;
const GOOD_TWO: &str = r#"{"pipeline":{"profiles":[{"name":"two","permissions":["contents:read"]}]},
  "organization":{"profiles":[{"name":"bad name","repositories":["cfg"],"permissions":["contents:read"]}]}}"#;
const BROKEN: &str = r#"{"organisation":{"profiles":[]}}"#;

fn digest(store: &Store) -> String {
    store.current().unwrap().digest().to_owned()
}

/// Writes `content` and sets the modification time to a distinct second per `version`, so a
/// rewrite within one clock tick is still a visible change.
fn write_version(path: &Path, content: &str, version: u64) {
    fs::write(path, content).unwrap();
    let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + version);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

fn github_client(api_url: &str) -> Arc<Client> {
    let http = UpstreamSettings {
        timeout_connect: Duration::from_millis(500),
        timeout_global: Duration::from_secs(2),
        ..UpstreamSettings::default()
    };
    let settings = Settings {
        api_url: api_url.to_owned(),
        app_id: APP_ID.to_owned(),
        installation_id: INSTALLATION_ID,
    };
    let key = AppKey::from_pem(APP_KEY_PEM.as_bytes()).unwrap();
    Arc::new(Client::new(
        Arc::new(UpstreamClient::new(&http).unwrap()),
        settings,
        key,
    ))
}

/// A client a file source never calls.
fn unused_client() -> Arc<Client> {
    github_client("http://127.0.0.1:9")
}

// ---------------------------------------------------------------- built in

#[test]
fn builtin_is_loaded_at_once() {
    let store = Store::builtin();
    assert!(store.is_loaded());
    assert_eq!(digest(&store), sha256_hex(b"{}"));
    assert_eq!(
        store.status_line(),
        "profiles digest 44136fa3…, 1 profiles, 0 unavailable"
    );
    assert!(!store.reload_now(now()).unwrap());
    let started = start_with(&ProfileSource::Builtin, unused_client(), FAST, FAST).unwrap();
    assert!(started.is_loaded());
}

// ---------------------------------------------------------------- local file

#[test]
fn good_file_is_loaded_before_start_returns() {
    let dir = temp_dir("at-start");
    let path = dir.join("profiles.json");
    write_version(&path, GOOD_TWO, 1);
    let source = ProfileSource::File(path);
    let store = start_with(&source, unused_client(), PATIENCE, PATIENCE).unwrap();

    assert!(store.is_loaded());
    assert_eq!(digest(&store), sha256_hex(GOOD_TWO.as_bytes()));
    let generation = store.current().unwrap();
    assert!(matches!(generation.pipeline("two"), Lookup::Found(_)));
    assert!(matches!(
        generation.organization("bad name"),
        Lookup::Unavailable(_)
    ));
    let short = &sha256_hex(GOOD_TWO.as_bytes())[..8];
    assert_eq!(
        store.status_line(),
        format!("profiles digest {short}…, 2 profiles, 1 unavailable")
    );
}

#[test]
fn watcher_picks_up_a_changed_file() {
    let dir = temp_dir("watch");
    let path = dir.join("profiles.json");
    write_version(&path, GOOD, 1);
    let source = ProfileSource::File(path.clone());
    let store = start_with(&source, unused_client(), FAST, FAST).unwrap();
    assert_eq!(digest(&store), sha256_hex(GOOD.as_bytes()));

    write_version(&path, GOOD_TWO, 2);
    let want = sha256_hex(GOOD_TWO.as_bytes());
    wait_until("the watcher to load the new file", PATIENCE, || {
        digest(&store) == want
    });
    assert!(matches!(
        store.current().unwrap().pipeline("two"),
        Lookup::Found(_)
    ));
}

#[test]
fn watcher_ends_when_the_store_is_dropped() {
    let dir = temp_dir("watch-end");
    let path = dir.join("profiles.json");
    write_version(&path, GOOD, 1);
    let store = Arc::new(Store::file(path));
    let handle = kitebridge::spawn_profile_refresher(&store, FAST, FAST).unwrap();
    wait_until("the first load", PATIENCE, || store.is_loaded());
    drop(store);
    wait_until("the thread to end", PATIENCE, || handle.is_finished());
}

#[test]
fn broken_file_keeps_the_previous_generation() {
    let dir = temp_dir("broken");
    let path = dir.join("profiles.json");
    write_version(&path, GOOD, 1);
    let store = Store::file(path.clone());
    assert!(!store.is_loaded());
    assert!(store.reload(now()).unwrap());
    let good = digest(&store);

    write_version(&path, BROKEN, 2);
    let error = store.reload(now()).unwrap_err();
    let LoadError::File(FileError::Invalid { .. }) = &error else {
        panic!("expected a schema error, got {error:?}");
    };
    assert_eq!(error.problems(), vec!["$.organisation: unknown key"]);
    assert_eq!(
        error.to_string(),
        "invalid profile file: $.organisation: unknown key"
    );
    assert!(store.is_loaded());
    assert_eq!(digest(&store), good);

    // Unchanged since the failed attempt: not re-read, not re-reported.
    assert!(!store.reload(now()).unwrap());

    write_version(&path, GOOD_TWO, 3);
    assert!(store.reload(now()).unwrap());
    assert_eq!(digest(&store), sha256_hex(GOOD_TWO.as_bytes()));
}

#[test]
fn reload_now_rereads_an_unchanged_file() {
    let dir = temp_dir("reload-now");
    let path = dir.join("profiles.json");
    write_version(&path, BROKEN, 1);
    let store = Store::file(path.clone());
    assert!(store.reload(now()).is_err());
    assert!(!store.reload(now()).unwrap(), "unchanged: skipped");
    assert!(
        matches!(store.reload_now(now()), Err(LoadError::File(_))),
        "reload_now reads it again"
    );
    assert!(!store.is_loaded());

    write_version(&path, GOOD, 2);
    assert!(store.reload_now(now()).unwrap());
    // Same bytes again: read, but the same digest swaps nothing and is no error.
    let before = store.current().unwrap();
    assert!(!store.reload_now(now()).unwrap());
    assert!(Arc::ptr_eq(&before, &store.current().unwrap()));
}

#[test]
fn unreadable_and_oversized_files_are_refused() {
    let dir = temp_dir("unreadable");
    let missing = dir.join("missing.json");
    let store = Store::file(missing.clone());
    let error = store.reload(now()).unwrap_err();
    let LoadError::Read { path, error: io } = &error else {
        panic!("expected a read error, got {error:?}");
    };
    assert_eq!(path, &missing);
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read {missing:?}: ")),
        "{error}"
    );

    let big = dir.join("big.json");
    let content = format!(
        "{{\"pipeline\":{{}}, \"x\":\"{}\"}}",
        "a".repeat(1024 * 1024)
    );
    write_version(&big, &content, 1);
    // PROFILES_MAX_BYTES, as the store is given it; the default (8 MiB) takes this file.
    let error = Store::file(big.clone())
        .with_max_bytes(1_048_576)
        .reload(now())
        .unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::File(FileError::TooLarge { len, max: 1_048_576 }) if len == content.len()
        ),
        "{error:?}"
    );
    assert!(
        matches!(
            Store::file(big).reload(now()),
            Err(LoadError::File(FileError::Invalid { .. }))
        ),
        "within the default limit the file is read (and refused for its unknown key)"
    );

    let error = Store::file(dir.to_path_buf()).reload(now()).unwrap_err();
    assert!(
        matches!(error, LoadError::Read { .. }),
        "a directory: {error:?}"
    );
}

#[test]
fn file_that_appears_later_is_loaded_by_the_retry_loop() {
    let dir = temp_dir("late");
    let path = dir.join("profiles.json");
    let source = ProfileSource::File(path.clone());
    // Once loaded, checks are far apart: only the retry loop can load it in time.
    let store = start_with(&source, unused_client(), PATIENCE * 10, FAST).unwrap();
    assert!(!store.is_loaded());
    assert!(store.current().is_none());
    assert_eq!(store.status_line(), "profiles not loaded");

    thread::sleep(FAST * 3);
    assert!(!store.is_loaded());
    write_version(&path, GOOD, 1);
    wait_until("the retry loop to load the file", PATIENCE, || {
        store.is_loaded()
    });
    assert_eq!(digest(&store), sha256_hex(GOOD.as_bytes()));
}

// ---------------------------------------------------------------- consistency

/// Generation `k` has exactly one pipeline profile, `gen-k`.
fn generation_file(k: usize) -> String {
    json!({"pipeline": {"profiles": [{"name": format!("gen-{k}"), "permissions": ["contents:read"]}]}})
        .to_string()
}

#[test]
fn readers_never_see_a_mixed_generation() {
    const GENERATIONS: usize = 8;
    const SWAPS: usize = 200;
    let dir = temp_dir("consistency");
    let path = dir.join("profiles.json");
    let files: Vec<String> = (0..GENERATIONS).map(generation_file).collect();
    let ordinal: Arc<HashMap<String, usize>> = Arc::new(
        files
            .iter()
            .enumerate()
            .map(|(k, file)| (sha256_hex(file.as_bytes()), k))
            .collect(),
    );
    let files = Arc::new(files);
    let content = files.first().unwrap().clone();
    write_version(&path, &content, 0);
    let store = Arc::new(Store::file(path.clone()));
    store.reload_now(now()).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let (store, done, seen, ordinal) = (
                Arc::clone(&store),
                Arc::clone(&done),
                Arc::clone(&seen),
                Arc::clone(&ordinal),
            );
            thread::spawn(move || {
                let mut reads = 0usize;
                let mut mine = BTreeSet::new();
                while !done.load(Ordering::SeqCst) || reads == 0 {
                    let generation = store.current().unwrap();
                    let k = ordinal[generation.digest()];
                    for j in 0..GENERATIONS {
                        let found = matches!(
                            generation.pipeline(&format!("gen-{j}")),
                            Lookup::Found(p) if p.name() == format!("gen-{j}")
                        );
                        assert_eq!(found, j == k, "digest of gen-{k} with gen-{j}");
                    }
                    mine.insert(k);
                    reads += 1;
                }
                seen.lock().unwrap().extend(mine);
                reads
            })
        })
        .collect();

    let mut swaps = 0;
    for i in 1..=SWAPS {
        write_version(&path, &files[i % GENERATIONS], i as u64);
        if store.reload_now(now()).unwrap() {
            swaps += 1;
        }
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(swaps, SWAPS, "every distinct file swapped");
    assert!(
        seen.lock().unwrap().len() >= 2,
        "readers saw the swaps: {:?}",
        seen.lock().unwrap()
    );
}

// ---------------------------------------------------------------- GitHub

fn github_source(git_ref: Option<&str>) -> ProfileSource {
    ProfileSource::GitHub {
        owner: "acme".into(),
        repo: "cfg".into(),
        path: "kitebridge/profiles.json".into(),
        git_ref: git_ref.map(str::to_owned),
    }
}

#[test]
fn github_raw_file_loads_at_start() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    let client = github_client(&github.api_url());
    let store = start_with(&github_source(Some("main")), client, PATIENCE, PATIENCE).unwrap();

    assert!(store.is_loaded());
    assert_eq!(digest(&store), sha256_hex(GOOD.as_bytes()));
    assert_eq!(github.contents_refs(), vec![Some("main".to_owned())]);
}

#[test]
fn github_base64_file_loads() {
    let github = github_stand_in();
    github.set_raw_media_type(false);
    // Long enough for the base64 to span several 60-character lines.
    github.set_contents(GOOD_TWO.as_bytes());
    let store = Store::new(&github_source(None), github_client(&github.api_url()));
    assert!(store.reload(now()).unwrap());
    assert_eq!(digest(&store), sha256_hex(GOOD_TWO.as_bytes()));
    assert_eq!(github.contents_refs(), vec![None]);
}

#[test]
fn github_token_is_for_the_one_repository_and_reused() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    let store = Store::new(&github_source(None), github_client(&github.api_url()));
    for _ in 0..4 {
        store.reload(now()).unwrap();
    }
    assert_eq!(github.calls(Route::Contents), 4);
    assert_eq!(github.mints(), 1, "one token for every poll");
    assert_eq!(
        github.mint_bodies(),
        vec![
            json!({"repositories": ["cfg"], "permissions": {"contents": "read", "metadata": "read"}})
        ]
    );
    let issued = github.issued();
    assert_eq!(issued[0].repositories, Some(vec!["cfg".to_owned()]));
}

#[test]
fn github_token_is_reminted_with_less_than_five_minutes_left() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    let t = now();
    github.set_now(Some(t));
    let store = Store::new(&github_source(None), github_client(&github.api_url()));
    store.reload(t).unwrap(); // the token expires at t + 3600
    github.set_now(Some(t + 3300));
    store.reload(t + 3300).unwrap();
    assert_eq!(github.mints(), 1, "300 s left: still used");
    github.set_now(Some(t + 3301));
    store.reload(t + 3301).unwrap();
    assert_eq!(github.mints(), 2, "299 s left: replaced");
    assert_eq!(github.calls(Route::Contents), 3);
}

#[test]
fn github_unchanged_etag_is_a_304_and_no_swap() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    let store = Store::new(&github_source(None), github_client(&github.api_url()));
    assert!(store.reload(now()).unwrap());
    let first = store.current().unwrap();
    assert!(!store.reload(now()).unwrap());
    assert!(Arc::ptr_eq(&first, &store.current().unwrap()));

    // A broken file proves the 304: without `If-None-Match` its bytes would be sent again and
    // rejected again; with it, GitHub answers 304 and the store reports no change.
    github.set_contents(BROKEN.as_bytes());
    assert!(matches!(store.reload(now()), Err(LoadError::File(_))));
    assert!(!store.reload(now()).unwrap(), "304 for the same etag");
    assert!(
        matches!(store.reload_now(now()), Err(LoadError::File(_))),
        "reload_now fetches without the etag"
    );
    assert_eq!(github.calls(Route::Contents), 5);
    assert_eq!(digest(&store), sha256_hex(GOOD.as_bytes()));
}

#[test]
fn github_changed_file_is_a_new_generation() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    let store = Store::new(&github_source(None), github_client(&github.api_url()));
    store.reload(now()).unwrap();
    github.set_contents(GOOD_TWO.as_bytes());
    assert!(store.reload(now()).unwrap());
    assert_eq!(digest(&store), sha256_hex(GOOD_TWO.as_bytes()));
}

#[test]
fn github_failures_keep_the_previous_generation() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    let store = Store::new(&github_source(None), github_client(&github.api_url()));
    store.reload(now()).unwrap();
    let good = digest(&store);

    github.set_fail(Fail::Status(502));
    let error = store.reload(now()).unwrap_err();
    assert!(
        matches!(error, LoadError::GitHub(Failure::Unavailable { .. })),
        "{error:?}"
    );
    assert_eq!(digest(&store), good);
    assert_eq!(github.mints(), 1, "a transient failure keeps the token");

    github.set_fail(Fail::Status(404));
    let error = store.reload(now()).unwrap_err();
    assert!(
        matches!(error, LoadError::GitHub(Failure::Refused { .. })),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("github refused: "), "{error}");
    github.set_fail(Fail::None);
    store.reload(now()).unwrap();
    assert_eq!(github.mints(), 2, "a refused call drops the token");
    assert_eq!(digest(&store), good);
}

#[test]
fn github_file_unavailable_at_start_is_retried() {
    let github = github_stand_in();
    github.set_contents(GOOD.as_bytes());
    github.set_fail(Fail::Status(503));
    let client = github_client(&github.api_url());
    let store = start_with(&github_source(None), client, PATIENCE * 10, FAST).unwrap();
    assert!(!store.is_loaded());
    github.set_fail(Fail::None);
    wait_until("the retry loop to fetch the file", PATIENCE, || {
        store.is_loaded()
    });
    assert_eq!(digest(&store), sha256_hex(GOOD.as_bytes()));
}
