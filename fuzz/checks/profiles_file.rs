//! `profiles::Generation::parse` and `profiles::check`: never panic; an accepted file's digest is
//! the lowercase hex SHA-256 of its bytes, and `check` agrees with `parse` on acceptance.
#![forbid(unsafe_code)]

use kitebridge::{Generation, check_profile_file as check_file};

pub fn check(data: &[u8]) {
    let parsed = Generation::parse(data);
    let checked = check_file(data);
    let Ok(generation) = parsed else {
        assert!(checked.is_err(), "check accepts a file parse refuses");
        return;
    };
    let digest = generation.digest();
    assert_eq!(digest.len(), 64, "digest {digest:?}");
    assert!(
        digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "digest {digest:?}"
    );
    let want = ring::digest::digest(&ring::digest::SHA256, data);
    let want: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, want, "digest is not the SHA-256 of the file");
    if let Ok(summary) = checked {
        assert!(
            summary.contains(digest),
            "summary without the digest: {summary:?}"
        );
    }
}
