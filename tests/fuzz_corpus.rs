//! Replays every checked-in fuzz seed (`fuzz/corpus/<target>/*`) through the same property checks
//! the fuzz targets run (`fuzz/checks/`), on stable under plain `cargo test`. Generated corpora
//! (`fuzz/corpus/<target>/generated/`, not in git) are skipped. Seeds named `bug_*` reproduce a
//! known, unfixed finding: give each its own test, marked `#[ignore = "bug: ..."]` until
//! the bug is fixed.
#![forbid(unsafe_code)]

#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// A seed file of one target (`""`: the target's directory).
fn corpus_file(target: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
        .join(name)
}

/// The seed files of one target, sorted; the directory must exist and hold some.
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = corpus_file(target, "");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds only {} seeds",
        dir.display(),
        files.len()
    );
    files
}

/// Runs `check` over every seed of `target` except the known-bug ones, naming the failing file.
fn replay(target: &str, check: fn(&[u8])) {
    for path in seeds(target) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("bug_") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: seed {name} violates the property"
        );
    }
}

#[test]
fn http_head() {
    replay("http_head", checks::http_head::check);
}

#[test]
fn json_out() {
    replay("json_out", checks::json_out::check);
}

#[test]
fn http_chunked() {
    replay("http_chunked", checks::http_chunked::check);
}

#[test]
fn form_urlencoded() {
    replay("form_urlencoded", checks::form_urlencoded::check);
}

#[test]
fn git_credential() {
    replay("git_credential", checks::git_credential::check);
}

#[test]
fn client_address() {
    replay("client_address", checks::client_address::check);
}

#[test]
fn repository_url() {
    replay("repository_url", checks::repository_url::check);
}

#[test]
fn profiles_file() {
    replay("profiles_file", checks::profiles_file::check);
}

#[test]
fn profiles_yaml() {
    replay("profiles_yaml", checks::profiles_yaml::check);
}

#[test]
fn pem_key() {
    replay("pem_key", checks::pem_key::check);
}

#[test]
fn claims() {
    replay("claims", checks::claims::check);
}

#[test]
fn jwks() {
    replay("jwks", checks::jwks::check);
}

#[test]
fn jwt_verify() {
    replay("jwt_verify", checks::jwt_verify::check);
}

#[test]
fn jwt_verify_seeds_start_from_an_accepted_token() {
    let path = corpus_file("jwt_verify", "signed_buildkite_token.jwt");
    let verified = checks::jwt_verify::verify(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(
        verified.claims.organization_slug,
        checks::jwt_verify::ORGANIZATION
    );
}

#[test]
fn token_exchange() {
    replay("token_exchange", checks::token_exchange::check);
}

#[test]
fn resp_reply() {
    replay("resp_reply", checks::resp_reply::check);
}
