//! `buildkite::parse_repository_url`: never panics; an accepted URL names a valid owner and
//! repository on the configured host, and its normal form (`https_url`) parses back to the same
//! repository.
#![forbid(unsafe_code)]

use kitebridge::{is_valid_owner, is_valid_repo_name, parse_repository_url};

const HOST: &str = "github.com";

pub fn check(data: &[u8]) {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(repo) = parse_repository_url(url, HOST) else {
        return;
    };
    assert_eq!(repo.host, HOST);
    assert!(is_valid_owner(&repo.owner), "owner {:?}", repo.owner);
    assert!(is_valid_repo_name(&repo.name), "name {:?}", repo.name);
    let normal = repo.https_url();
    match parse_repository_url(&normal, HOST) {
        Ok(again) => assert!(
            again.same_repo(&repo),
            "{url:?} names {repo:?} but its https_url {normal:?} names {again:?}"
        ),
        Err(error) => {
            panic!("{url:?} names {repo:?} but its https_url {normal:?} fails: {error:?}")
        }
    }
}
