//! The OIDC verifier against a catalogue of JWT attacks: every token carries
//! exactly one defect and the test asserts the specific rule that refused it. Then the key policy
//! and the key store's refresh behaviour, with closure fetchers and logical time.
#![forbid(unsafe_code)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use kitebridge::{
    Audience, FetchedJwks, JwtError as Error, KeyPolicyViolation, KeySource, KeyStore, ParsedJwks,
    Rejected, Segment, Verified, Verifier, VerifierSettings as Settings, bearer_token, parse_jwks,
};
use serde_json::{Value, json};
use support::oidc::{Signer, assemble, b64, buildkite_claims, jwks_json, jwks_of};
use support::util::all_at_once;

const NOW: u64 = 1_763_632_800;
const ORG: &str = "acme";
const AUDIENCE: &str = "https://buildkite.com/acme";

static A: LazyLock<Signer> = LazyLock::new(Signer::a);
static B: LazyLock<Signer> = LazyLock::new(Signer::b);

fn settings() -> Settings {
    Settings::new(AUDIENCE, ORG)
}

fn static_store(signers: &[&Signer]) -> Arc<KeyStore> {
    let store = KeyStore::new(KeySource::Static(jwks_json(signers).into_bytes()));
    store.load(NOW).unwrap();
    Arc::new(store)
}

fn verify_with(settings: Settings, token: &str) -> Result<Verified, Rejected> {
    Verifier::new(settings, static_store(&[&A])).verify(token.as_bytes(), NOW)
}

fn verify(token: &str) -> Result<Verified, Rejected> {
    verify_with(settings(), token)
}

/// The rule that refused `token`.
fn refusal(token: &str) -> Error {
    verify(token).unwrap_err().error
}

fn claims() -> Value {
    buildkite_claims(ORG, "widgets", NOW)
}

/// The usual claims with one member replaced (or removed when `value` is `None`).
fn claims_with(name: &str, value: Option<Value>) -> Value {
    let mut claims = claims();
    let object = claims.as_object_mut().unwrap();
    match value {
        Some(value) => object.insert(name.to_owned(), value),
        None => object.remove(name),
    };
    claims
}

fn token_with(name: &str, value: Value) -> String {
    A.token(&claims_with(name, Some(value)))
}

fn times(iat: u64, nbf: u64, exp: u64) -> String {
    let mut claims = claims();
    let object = claims.as_object_mut().unwrap();
    object.insert("iat".into(), json!(iat));
    object.insert("nbf".into(), json!(nbf));
    object.insert("exp".into(), json!(exp));
    A.token(&claims)
}

/// A token whose header is `header` (any JSON text), correctly signed by key A.
fn token_with_header(header: &str) -> String {
    A.token_from_parts(header.as_bytes(), claims().to_string().as_bytes())
}

/// A token whose payload is exactly `payload`, correctly signed by key A.
fn token_with_payload(payload: &[u8]) -> String {
    A.token_from_parts(&A.header(), payload)
}

/// The three encoded segments of a token.
fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------
// The valid case

#[test]
fn accepts_a_buildkite_shaped_token() {
    let verified = verify(&A.token(&claims())).unwrap();
    assert_eq!(verified.kid, A.kid);
    assert_eq!(verified.kid.len(), 64);
    let c = &verified.claims;
    assert_eq!(c.organization_slug, ORG);
    assert_eq!(c.pipeline_slug, "widgets");
    assert_eq!(c.aud, Audience::One(AUDIENCE.to_owned()));
    assert_eq!(c.build_number, 42);
    assert_eq!(c.build_tag, None);
    assert_eq!(c.step_key, None);
    assert_eq!(c.queue_key.as_deref(), Some("default"));
    assert_eq!(
        c.jti.as_deref(),
        Some("0c5e2f4a-8b1d-4e7f-9a3c-6d2b1e0f7a9c")
    );
    assert_eq!(
        c.agent_tags.get("queue").map(String::as_str),
        Some("default")
    );
}

#[test]
fn claim_gives_the_string_form_by_jwt_name() {
    let c = verify(&A.token(&claims())).unwrap().claims;
    assert_eq!(c.claim("build_number").as_deref(), Some("42"));
    assert_eq!(c.claim("build_branch").as_deref(), Some("main"));
    assert_eq!(c.claim("pipeline_slug").as_deref(), Some("widgets"));
    assert_eq!(c.claim("agent_tag:queue").as_deref(), Some("default"));
    assert_eq!(c.claim("aud").as_deref(), Some(AUDIENCE));
    assert_eq!(c.claim("exp"), Some((NOW + 300).to_string()));
    assert_eq!(c.claim("build_tag"), None, "null claim");
    assert_eq!(c.claim("agent_tag:missing"), None);
    assert_eq!(
        c.claim("https://aws.amazon.com/tags"),
        None,
        "not a claim kitebridge reads"
    );
}

#[test]
fn accepts_typ_jwt_in_any_case_and_ignores_unknown_header_members() {
    for header in [
        format!(r#"{{"kid":"{}","alg":"RS256","typ":"JWT"}}"#, A.kid),
        format!(r#"{{"kid":"{}","alg":"RS256","typ":"jwt"}}"#, A.kid),
        format!(
            r#"{{"kid":"{}","alg":"RS256","x-extra":{{"deep":[1,2]}}}}"#,
            A.kid
        ),
    ] {
        assert!(verify(&token_with_header(&header)).is_ok(), "{header}");
    }
}

#[test]
fn refuses_any_other_typ() {
    for typ in [r#""at+jwt""#, r#""JOSE""#, "null", "1"] {
        let header = format!(r#"{{"kid":"{}","alg":"RS256","typ":{typ}}}"#, A.kid);
        assert!(
            matches!(refusal(&token_with_header(&header)), Error::TypeNotAllowed),
            "{typ}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// alg

#[test]
fn refuses_alg_none_with_an_empty_signature() {
    for alg in ["none", "None", "NONE"] {
        let header = format!(r#"{{"kid":"{}","alg":"{alg}"}}"#, A.kid);
        let token = assemble(&[
            &b64(header.as_bytes()),
            &b64(claims().to_string().as_bytes()),
            "",
        ]);
        let error = refusal(&token);
        assert!(
            matches!(
                error,
                Error::EmptySegment {
                    segment: Segment::Signature
                }
            ),
            "{alg}: {error:?}"
        );
    }
}

#[test]
fn refuses_alg_none_even_with_a_valid_rsa_signature() {
    for alg in ["none", "None", "NONE"] {
        let header = format!(r#"{{"kid":"{}","alg":"{alg}"}}"#, A.kid);
        assert!(
            matches!(
                refusal(&token_with_header(&header)),
                Error::AlgorithmNotAllowed
            ),
            "{alg}"
        );
    }
}

#[test]
fn refuses_hs256_signed_with_the_public_key_as_secret() {
    let secrets: [(&str, Vec<u8>); 4] = [
        ("pem", A.public_pem().into_bytes()),
        ("der", A.public_der()),
        ("jwk", A.jwk().to_string().into_bytes()),
        ("jwks", jwks_json(&[&A]).into_bytes()),
    ];
    for (form, secret) in secrets {
        let header = b64(format!(r#"{{"kid":"{}","alg":"HS256"}}"#, A.kid).as_bytes());
        let payload = b64(claims().to_string().as_bytes());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let tag = ring::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
        let token = assemble(&[&header, &payload, &b64(tag.as_ref())]);
        assert!(
            matches!(refusal(&token), Error::AlgorithmNotAllowed),
            "{form}"
        );
    }
}

#[test]
fn refuses_every_other_algorithm() {
    for alg in [
        "RS384", "RS512", "PS256", "ES256", "EdDSA", "HS256", "rs256", "RS256 ", "",
    ] {
        let header = format!(r#"{{"kid":"{}","alg":"{alg}"}}"#, A.kid);
        assert!(
            matches!(
                refusal(&token_with_header(&header)),
                Error::AlgorithmNotAllowed
            ),
            "{alg:?}"
        );
    }
}

#[test]
fn refuses_a_missing_or_non_string_alg() {
    for header in [
        format!(r#"{{"kid":"{}"}}"#, A.kid),
        format!(r#"{{"kid":"{}","alg":["RS256"]}}"#, A.kid),
    ] {
        assert!(
            matches!(
                refusal(&token_with_header(&header)),
                Error::AlgorithmNotAllowed
            ),
            "{header}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// kid

#[test]
fn refuses_missing_null_and_non_string_kid() {
    let cases = [
        (r#"{"alg":"RS256"}"#.to_owned(), "missing"),
        (r#"{"alg":"RS256","kid":null}"#.to_owned(), "null"),
        (r#"{"alg":"RS256","kid":42}"#.to_owned(), "number"),
        (format!(r#"{{"alg":"RS256","kid":["{}"]}}"#, A.kid), "array"),
    ];
    for (header, case) in cases {
        let error = refusal(&token_with_header(&header));
        let expected = match case {
            "missing" | "null" => matches!(error, Error::MissingKid),
            _ => matches!(error, Error::KidNotString),
        };
        assert!(expected, "{case}: {error:?}");
    }
}

#[test]
fn refuses_a_kid_over_128_bytes() {
    let kid = "k".repeat(4096);
    let error = refusal(&token_with_header(&format!(
        r#"{{"kid":"{kid}","alg":"RS256"}}"#
    )));
    assert!(
        matches!(error, Error::KidTooLong { len: 4096 }),
        "{error:?}"
    );
    let kid = "k".repeat(129);
    let error = refusal(&token_with_header(&format!(
        r#"{{"kid":"{kid}","alg":"RS256"}}"#
    )));
    assert!(matches!(error, Error::KidTooLong { len: 129 }), "{error:?}");
    let kid = "k".repeat(128);
    let error = refusal(&token_with_header(&format!(
        r#"{{"kid":"{kid}","alg":"RS256"}}"#
    )));
    assert!(
        matches!(error, Error::UnknownKid),
        "128 bytes is allowed, and unknown: {error:?}"
    );
}

#[test]
fn hostile_kids_are_only_looked_up_and_never_echoed_raw() {
    for kid in [
        "../../etc/passwd",
        "\"quoted\"",
        "a\u{0}b\nc\u{1b}[31m",
        "/dev/zero",
    ] {
        let header = json!({"kid": kid, "alg": "RS256"}).to_string();
        let rejected = verify(&token_with_header(&header)).unwrap_err();
        assert!(
            matches!(rejected.error, Error::UnknownKid),
            "{kid:?}: {:?}",
            rejected.error
        );
        assert_eq!(
            rejected.kid.as_deref(),
            Some(kid),
            "the audit record gets it, to escape"
        );
        let shown = rejected.to_string();
        assert!(
            !shown.contains(kid) && !shown.chars().any(char::is_control),
            "{shown:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Forbidden header parameters and duplicates

#[test]
fn refuses_key_selecting_and_processing_header_parameters() {
    let values = [
        json!("https://evil.example/jwks"),
        json!({"kty": "RSA"}),
        json!(["a"]),
        json!(false),
        Value::Null,
    ];
    for name in ["jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64"] {
        for value in &values {
            let header = json!({"kid": A.kid, "alg": "RS256", name: value}).to_string();
            let error = refusal(&token_with_header(&header));
            assert!(
                matches!(error, Error::ForbiddenHeaderParameter(n) if n == name),
                "{name}: {error:?}"
            );
        }
    }
}

#[test]
fn refuses_duplicate_header_members_also_when_escaped() {
    let kid = &A.kid;
    let cases = [
        (
            format!(r#"{{"kid":"{kid}","alg":"RS256","alg":"RS256"}}"#),
            "alg",
        ),
        (
            format!(r#"{{"kid":"{kid}","alg":"none","\u0061lg":"RS256"}}"#),
            "alg",
        ),
        (
            format!(r#"{{"kid":"{kid}","alg":"RS256","\u006bid":"{kid}"}}"#),
            "kid",
        ),
        (
            format!(r#"{{"kid":"{kid}","alg":"RS256","x":1,"x":2}}"#),
            "x",
        ),
    ];
    for (header, name) in cases {
        let error = refusal(&token_with_header(&header));
        assert!(
            matches!(&error, Error::DuplicateMember { segment: Segment::Header, name: n } if n == name),
            "{header}: {error:?}"
        );
    }
}

#[test]
fn refuses_duplicate_claims_also_when_escaped() {
    let body = claims().to_string();
    let rest = body.strip_prefix('{').unwrap();
    let cases = [
        (r#""iss":"https://agent.buildkite.com","#.to_owned(), "iss"),
        (
            r#""\u0069ss":"https://agent.buildkite.com","#.to_owned(),
            "iss",
        ),
        (format!(r#""aud":"{AUDIENCE}","#), "aud"),
        (format!(r#""exp":{},"#, NOW + 300), "exp"),
        (
            format!(r#""organization_slug":"{ORG}","#),
            "organization_slug",
        ),
        (
            r#""organization_\u0073lug":"other","#.to_owned(),
            "organization_slug",
        ),
        (
            r#""https://aws.amazon.com/tags":{},"#.to_owned(),
            "https://aws.amazon.com/tags",
        ),
    ];
    for (extra, name) in cases {
        let payload = format!("{{{extra}{rest}");
        let error = refusal(&token_with_payload(payload.as_bytes()));
        assert!(
            matches!(&error, Error::DuplicateMember { segment: Segment::Payload, name: n } if n == name),
            "{extra}: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding and structure

#[test]
fn refuses_base64_padding() {
    // Pick a header whose encoding needs padding, then pad it.
    let header = ["x", "xy"]
        .map(|p| format!(r#"{{"kid":"{}","alg":"RS256","p":"{p}"}}"#, A.kid))
        .into_iter()
        .find(|h| h.len() % 3 != 0)
        .unwrap();
    let padded = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE,
        header.as_bytes(),
    );
    assert!(padded.ends_with('='));
    let token = A.sign_encoded(&padded, &b64(claims().to_string().as_bytes()));
    assert!(matches!(
        refusal(&token),
        Error::Base64 {
            segment: Segment::Header
        }
    ));
}

#[test]
fn refuses_the_standard_alphabet() {
    let token = A.token(&claims());
    let parts = segments(&token);
    let standard = parts[2].replace('-', "+").replace('_', "/");
    assert_ne!(
        standard, parts[2],
        "the signature must contain - or _ for this test"
    );
    let error = refusal(&assemble(&[&parts[0], &parts[1], &standard]));
    assert!(
        matches!(
            error,
            Error::Base64 {
                segment: Segment::Signature
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_whitespace_inside_a_segment() {
    let parts = segments(&A.token(&claims()));
    for ws in [" ", "\n", "\t", "\r\n"] {
        let (left, right) = parts[1].split_at(10);
        let payload = format!("{left}{ws}{right}");
        let error = refusal(&assemble(&[&parts[0], &payload, &parts[2]]));
        assert!(
            matches!(
                error,
                Error::Base64 {
                    segment: Segment::Payload
                }
            ),
            "{ws:?}: {error:?}"
        );
    }
}

#[test]
fn refuses_non_zero_trailing_bits() {
    let parts = segments(&A.token(&claims()));
    // 256 signature bytes encode to 342 characters; the last carries 2 data bits and 4 zero bits.
    assert_eq!(parts[2].len() % 4, 2);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = parts[2].as_bytes()[parts[2].len() - 1];
    let index = alphabet.iter().position(|&c| c == last).unwrap();
    assert_eq!(index & 0b1111, 0);
    let mut signature = parts[2][..parts[2].len() - 1].to_owned();
    signature.push(alphabet[index | 1] as char);
    let error = refusal(&assemble(&[&parts[0], &parts[1], &signature]));
    assert!(
        matches!(
            error,
            Error::Base64 {
                segment: Segment::Signature
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_a_segment_of_length_one_mod_four() {
    let parts = segments(&A.token(&claims()));
    let header = b64(&A.header());
    let header = (0..4)
        .map(|i| format!("{header}{}", "A".repeat(i)))
        .find(|h| h.len() % 4 == 1)
        .unwrap();
    let error = refusal(&assemble(&[&header, &parts[1], &parts[2]]));
    assert!(
        matches!(
            error,
            Error::Base64 {
                segment: Segment::Header
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_empty_segments() {
    let parts = segments(&A.token(&claims()));
    let error = refusal(&assemble(&["", &parts[1], &parts[2]]));
    assert!(
        matches!(
            error,
            Error::EmptySegment {
                segment: Segment::Header
            }
        ),
        "{error:?}"
    );
    let error = refusal(&assemble(&[&parts[0], "", &parts[2]]));
    assert!(
        matches!(
            error,
            Error::EmptySegment {
                segment: Segment::Payload
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_two_four_and_five_segments() {
    let parts = segments(&A.token(&claims()));
    let cases = [
        assemble(&[&parts[0], &parts[1]]),
        format!("{}.{}", parts[0], parts[1]),
        assemble(&[&parts[0], &parts[1], &parts[2], &parts[2]]),
        assemble(&[&parts[0], &parts[1], &parts[2], ""]),
        // A JWE: protected header, encrypted key, IV, ciphertext, tag.
        assemble(&[
            &b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#),
            "a2V5",
            "aXY",
            "Y3Q",
            "dGFn",
        ]),
        String::new(),
    ];
    for token in cases {
        assert!(matches!(refusal(&token), Error::SegmentCount), "{token:?}");
    }
}

#[test]
fn refuses_the_json_serialization() {
    let parts = segments(&A.token(&claims()));
    let general = json!({"payload": parts[1], "signatures": [{"protected": parts[0], "signature": parts[2]}]});
    let flattened = json!({"payload": parts[1], "protected": parts[0], "signature": parts[2]});
    for token in [general.to_string(), flattened.to_string()] {
        assert!(matches!(refusal(&token), Error::SegmentCount), "{token}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sizes and malformed JSON

/// A validly signed token of exactly `len` bytes (unknown header and payload members pad it).
fn token_of_len(len: usize) -> String {
    let signature_len = 342;
    for header_pad in 0..4 {
        let header = format!(
            r#"{{"kid":"{}","alg":"RS256","pad":"{}"}}"#,
            A.kid,
            "p".repeat(header_pad)
        );
        let header = b64(header.as_bytes());
        for payload_pad in 0..len {
            let payload = claims_with("pad", Some(json!("p".repeat(payload_pad))));
            let payload = b64(payload.to_string().as_bytes());
            let total = header.len() + 1 + payload.len() + 1 + signature_len;
            if total == len {
                let token = A.sign_encoded(&header, &payload);
                assert_eq!(token.len(), len);
                return token;
            }
            if total > len {
                break;
            }
        }
    }
    panic!("no padding gives {len} bytes");
}

#[test]
fn token_size_limit_is_8_kib_exactly() {
    assert!(verify(&token_of_len(8192)).is_ok());
    let error = refusal(&token_of_len(8193));
    assert!(
        matches!(error, Error::TokenTooLarge { len: 8193 }),
        "{error:?}"
    );
    let error = refusal(&"a".repeat(1 << 20));
    assert!(
        matches!(error, Error::TokenTooLarge { len } if len == 1 << 20),
        "{error:?}"
    );
}

#[test]
fn refuses_deeply_nested_json() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let payload = format!(
        r#"{{"x":{deep},{}"#,
        claims().to_string().strip_prefix('{').unwrap()
    );
    let error = refusal(&token_with_payload(payload.as_bytes()));
    assert!(
        matches!(&error, Error::MalformedJson { segment: Segment::Payload, detail } if detail.contains("recursion")),
        "{error:?}"
    );
    let header = format!(r#"{{"kid":"{}","alg":"RS256","x":{deep}}}"#, A.kid);
    let error = refusal(&token_with_header(&header));
    assert!(
        matches!(
            error,
            Error::MalformedJson {
                segment: Segment::Header,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_a_byte_order_mark() {
    let mut payload = b"\xEF\xBB\xBF".to_vec();
    payload.extend_from_slice(claims().to_string().as_bytes());
    let error = refusal(&token_with_payload(&payload));
    assert!(
        matches!(
            error,
            Error::MalformedJson {
                segment: Segment::Payload,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_invalid_utf8_even_in_ignored_claims() {
    let body = claims().to_string();
    let mut payload = b"{\"ignored\":\"\xFF\xFE\",".to_vec();
    payload.extend_from_slice(body.strip_prefix('{').unwrap().as_bytes());
    let error = refusal(&token_with_payload(&payload));
    assert!(
        matches!(
            error,
            Error::InvalidUtf8 {
                segment: Segment::Payload
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_lone_surrogates_even_in_ignored_claims() {
    let body = claims().to_string();
    for member in [r#""ignored":"\ud800","#, r#""nested":{"x":["\udc00"]},"#] {
        let payload = format!("{{{member}{}", body.strip_prefix('{').unwrap());
        let error = refusal(&token_with_payload(payload.as_bytes()));
        assert!(
            matches!(
                error,
                Error::MalformedJson {
                    segment: Segment::Payload,
                    ..
                }
            ),
            "{member}: {error:?}"
        );
    }
}

#[test]
fn refuses_trailing_bytes_after_the_json() {
    for trailer in [" x", "{}", ",", "\u{0}", "]"] {
        let payload = format!("{}{trailer}", claims());
        let error = refusal(&token_with_payload(payload.as_bytes()));
        assert!(
            matches!(
                error,
                Error::MalformedJson {
                    segment: Segment::Payload,
                    ..
                }
            ),
            "{trailer:?}: {error:?}"
        );
    }
}

#[test]
fn refuses_a_payload_that_is_not_an_object() {
    for payload in ["[]", "\"claims\"", "null", "42"] {
        let error = refusal(&token_with_payload(payload.as_bytes()));
        assert!(
            matches!(
                error,
                Error::NotJsonObject {
                    segment: Segment::Payload
                }
            ),
            "{payload}: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Times

#[test]
fn expiry_edge_with_leeway() {
    // Refused when now >= exp + 5.
    let error = refusal(&times(NOW - 300, NOW - 300, NOW - 5));
    assert!(
        matches!(error, Error::Expired { now: NOW, exp } if exp == NOW - 5),
        "{error:?}"
    );
    assert!(verify(&times(NOW - 300, NOW - 300, NOW - 4)).is_ok());
    let error = refusal(&times(NOW - 400, NOW - 400, NOW - 42));
    assert_eq!(error.to_string(), "jwt: expired 42s ago");
}

#[test]
fn not_before_edge_with_leeway() {
    assert!(verify(&times(NOW, NOW + 5, NOW + 300)).is_ok());
    let error = refusal(&times(NOW, NOW + 6, NOW + 300));
    assert!(
        matches!(error, Error::NotYetValid { now: NOW, nbf } if nbf == NOW + 6),
        "{error:?}"
    );
}

#[test]
fn issued_at_edge_with_leeway() {
    assert!(verify(&times(NOW + 5, NOW, NOW + 305)).is_ok());
    let error = refusal(&times(NOW + 6, NOW, NOW + 306));
    assert!(
        matches!(error, Error::IssuedInFuture { now: NOW, iat } if iat == NOW + 6),
        "{error:?}"
    );
}

#[test]
fn refuses_exp_not_after_iat() {
    let error = refusal(&times(NOW + 3, NOW, NOW + 3));
    assert!(
        matches!(error, Error::ExpiresBeforeIssued { .. }),
        "{error:?}"
    );
    let error = refusal(&times(NOW + 4, NOW, NOW + 3));
    assert!(
        matches!(error, Error::ExpiresBeforeIssued { .. }),
        "{error:?}"
    );
}

#[test]
fn lifetime_limit() {
    assert!(verify(&times(NOW, NOW, NOW + 7200)).is_ok());
    let error = refusal(&times(NOW, NOW, NOW + 7201));
    assert!(
        matches!(
            error,
            Error::LifetimeTooLong {
                lifetime: 7201,
                max: 7200
            }
        ),
        "{error:?}"
    );
    let error = refusal(&times(NOW, NOW, u64::MAX));
    assert!(matches!(error, Error::LifetimeTooLong { .. }), "{error:?}");
    let lower = Settings {
        max_lifetime_secs: 600,
        ..settings()
    };
    assert!(verify_with(lower.clone(), &times(NOW, NOW, NOW + 600)).is_ok());
    let error = verify_with(lower, &times(NOW, NOW, NOW + 601))
        .unwrap_err()
        .error;
    assert!(
        matches!(
            error,
            Error::LifetimeTooLong {
                lifetime: 601,
                max: 600
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refuses_times_that_are_not_non_negative_integers() {
    let body = claims().to_string();
    let exp = (NOW + 300).to_string();
    assert!(body.contains(&format!(r#""exp":{exp}"#)));
    for bad in [
        format!("{exp}.0"),
        format!("{exp}.5"),
        "1.7e9".to_owned(),
        "-1".to_owned(),
        "18446744073709551616".to_owned(),
        "1e400".to_owned(),
        format!(r#""{exp}""#),
        "true".to_owned(),
        "[]".to_owned(),
    ] {
        let payload = body.replace(&format!(r#""exp":{exp}"#), &format!(r#""exp":{bad}"#));
        let error = refusal(&token_with_payload(payload.as_bytes()));
        let expected = if bad == "1e400" {
            matches!(error, Error::MalformedJson { .. }) // serde_json refuses numbers out of f64 range
        } else {
            matches!(error, Error::ClaimType { name: "exp", .. })
        };
        assert!(expected, "{bad}: {error:?}");
    }
    for name in ["nbf", "iat"] {
        let error = refusal(&token_with(name, json!(-5)));
        assert!(
            matches!(error, Error::ClaimType { name: n, .. } if n == name),
            "{name}: {error:?}"
        );
    }
}

#[test]
fn refuses_missing_times() {
    for name in ["exp", "nbf", "iat"] {
        for value in [None, Some(Value::Null)] {
            let error = refusal(&A.token(&claims_with(name, value)));
            assert!(
                matches!(error, Error::MissingClaim(n) if n == name),
                "{name}: {error:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audience, issuer, organization

#[test]
fn audience_string_or_single_member_array() {
    assert!(verify(&token_with("aud", json!(AUDIENCE))).is_ok());
    assert!(verify(&token_with("aud", json!([AUDIENCE]))).is_ok());
    for aud in [
        json!([AUDIENCE, "chinmina:default"]),
        json!([]),
        json!("https://buildkite.com/other"),
        json!(["https://buildkite.com/other"]),
        json!(format!("{AUDIENCE}/")),
    ] {
        assert!(
            matches!(
                refusal(&token_with("aud", aud.clone())),
                Error::AudienceMismatch
            ),
            "{aud}"
        );
    }
    for aud in [json!(1), json!([AUDIENCE, 1]), json!({"aud": AUDIENCE})] {
        let error = refusal(&token_with("aud", aud.clone()));
        assert!(
            matches!(error, Error::ClaimType { name: "aud", .. }),
            "{aud}: {error:?}"
        );
    }
}

#[test]
fn issuer_must_match_byte_for_byte() {
    for iss in [
        "https://agent.buildkite.com/",
        "http://agent.buildkite.com",
        "https://Agent.Buildkite.com",
        "https://agent.buildkite.com.evil.example",
        "",
    ] {
        assert!(
            matches!(
                refusal(&token_with("iss", json!(iss))),
                Error::IssuerMismatch
            ),
            "{iss}"
        );
    }
}

#[test]
fn refuses_a_valid_token_from_another_organization() {
    let mut other = buildkite_claims("other-org", "widgets", NOW);
    other["aud"] = json!(AUDIENCE); // the audience alone does not bind a token to an organization
    assert!(matches!(
        refusal(&A.token(&other)),
        Error::OrganizationMismatch
    ));
    assert!(matches!(
        refusal(&token_with("organization_slug", json!("ACME"))),
        Error::OrganizationMismatch
    ));
}

#[test]
fn organization_id_is_checked_when_configured() {
    let id = claims()["organization_id"].as_str().unwrap().to_owned();
    let pinned = Settings {
        organization_id: Some(id),
        ..settings()
    };
    assert!(verify_with(pinned.clone(), &A.token(&claims())).is_ok());
    let other = A.token(&claims_with(
        "organization_id",
        Some(json!("0190f3a1-0000-0000-0000-000000000000")),
    ));
    let error = verify_with(pinned.clone(), &other).unwrap_err().error;
    assert!(matches!(error, Error::OrganizationMismatch), "{error:?}");
    let absent = A.token(&claims_with("organization_id", None));
    let error = verify_with(pinned, &absent).unwrap_err().error;
    assert!(matches!(error, Error::OrganizationMismatch), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Required and optional claims

const REQUIRED: [&str; 14] = [
    "iss",
    "aud",
    "sub",
    "exp",
    "nbf",
    "iat",
    "organization_slug",
    "pipeline_slug",
    "pipeline_id",
    "build_number",
    "build_branch",
    "build_commit",
    "job_id",
    "agent_id",
];

#[test]
fn refuses_each_missing_required_claim() {
    for name in REQUIRED {
        let error = refusal(&A.token(&claims_with(name, None)));
        assert!(
            matches!(error, Error::MissingClaim(n) if n == name),
            "{name}: {error:?}"
        );
    }
}

#[test]
fn refuses_each_empty_required_string() {
    for name in [
        "sub",
        "organization_slug",
        "pipeline_slug",
        "pipeline_id",
        "build_branch",
        "build_commit",
        "job_id",
        "agent_id",
    ] {
        let error = refusal(&token_with(name, json!("")));
        assert!(
            matches!(error, Error::EmptyClaim(n) if n == name),
            "{name}: {error:?}"
        );
    }
}

#[test]
fn refuses_build_number_as_string_or_float() {
    for value in [json!("42"), json!(42.0), json!(-1)] {
        let error = refusal(&token_with("build_number", value.clone()));
        assert!(
            matches!(
                error,
                Error::ClaimType {
                    name: "build_number",
                    ..
                }
            ),
            "{value}: {error:?}"
        );
    }
}

#[test]
fn optional_claims_may_be_absent_or_null_but_not_another_type() {
    for name in [
        "build_tag",
        "step_key",
        "cluster_id",
        "cluster_name",
        "queue_id",
        "queue_key",
        "organization_id",
        "build_source",
        "runner_environment",
        "jti",
        "agent_tag:queue",
    ] {
        assert!(
            verify(&A.token(&claims_with(name, None))).is_ok(),
            "{name} absent"
        );
        let verified = verify(&token_with(name, Value::Null)).unwrap();
        assert_eq!(verified.claims.claim(name), None, "{name} null");
        let error = refusal(&token_with(name, json!(7)));
        assert!(
            matches!(error, Error::ClaimType { .. }),
            "{name}: {error:?}"
        );
    }
}

#[test]
fn tolerates_unknown_nested_claims() {
    let mut claims = claims();
    claims["https://aws.amazon.com/tags"]["deeper"] = json!({"a": [{"b": {"c": null}}]});
    claims["build_id"] = json!("0190f3a7-aaaa-4bbb-8ccc-dddddddddddd");
    claims["future_claim"] = json!([1, 2.5, false]);
    assert!(verify(&A.token(&claims)).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Signatures

#[test]
fn refuses_a_signature_one_byte_short_or_long() {
    let parts = segments(&A.token(&claims()));
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[2])
            .unwrap();
    let short = b64(&signature[..255]);
    let error = refusal(&assemble(&[&parts[0], &parts[1], &short]));
    assert!(
        matches!(
            error,
            Error::SignatureLength {
                expected: 256,
                actual: 255
            }
        ),
        "{error:?}"
    );
    let mut long = signature.clone();
    long.push(0);
    let error = refusal(&assemble(&[&parts[0], &parts[1], &b64(&long)]));
    assert!(
        matches!(
            error,
            Error::SignatureLength {
                expected: 256,
                actual: 257
            }
        ),
        "{error:?}"
    );
    let mut leading = vec![0];
    leading.extend_from_slice(&signature);
    let error = refusal(&assemble(&[&parts[0], &parts[1], &b64(&leading)]));
    assert!(matches!(error, Error::SignatureLength { .. }), "{error:?}");
}

#[test]
fn refuses_degenerate_signatures() {
    let parts = segments(&A.token(&claims()));
    let n = A.public().n;
    let mut above_n = n.clone();
    *above_n.last_mut().unwrap() = above_n.last().unwrap().wrapping_add(1);
    for (case, signature) in [
        ("zeros", vec![0; 256]),
        ("one", [vec![0; 255], vec![1]].concat()),
        ("n", n.clone()),
        ("n+1", above_n),
        ("ones", vec![0xff; 256]),
    ] {
        let error = refusal(&assemble(&[&parts[0], &parts[1], &b64(&signature)]));
        assert!(matches!(error, Error::BadSignature), "{case}: {error:?}");
    }
}

#[test]
fn refuses_a_signature_by_another_key_or_over_other_bytes() {
    // Signed by B, claiming A's kid.
    let header = A.header();
    let token = B.token_from_parts(&header, claims().to_string().as_bytes());
    assert!(matches!(refusal(&token), Error::BadSignature));
    // Payload swapped after signing.
    let parts = segments(&A.token(&claims()));
    let other = b64(claims_with("pipeline_slug", Some(json!("secrets")))
        .to_string()
        .as_bytes());
    let rejected = verify(&assemble(&[&parts[0], &other, &parts[2]])).unwrap_err();
    assert!(matches!(rejected.error, Error::BadSignature));
    assert_eq!(rejected.kid.as_deref(), Some(A.kid.as_str()));
    assert_eq!(
        rejected.claims, None,
        "claims come only from a verified payload"
    );
}

#[test]
fn rejected_carries_claims_only_after_the_signature_verified() {
    let rejected = verify(&token_with("iss", json!("https://evil.example"))).unwrap_err();
    assert!(matches!(rejected.error, Error::IssuerMismatch));
    assert_eq!(
        rejected.claims.unwrap().jti.as_deref(),
        Some("0c5e2f4a-8b1d-4e7f-9a3c-6d2b1e0f7a9c")
    );
}

// ---------------------------------------------------------------------------------------------
// The Authorization header

/// Header values, and the token expected (`None`: malformed).
type Case<'a> = (&'a [&'a [u8]], Option<&'a [u8]>);

#[test]
fn bearer_token_rules() {
    let long = format!("Bearer {}", "a".repeat(8 * 1024));
    let exact = format!("Bearer {}", "a".repeat(8 * 1024 - 7));
    assert!(matches!(
        bearer_token(&[]),
        Err(Error::MissingAuthorization)
    ));
    let cases: [Case; 13] = [
        (&[b"Bearer abc.def.ghi"], Some(b"abc.def.ghi")),
        (&[b"bearer abc"], Some(b"abc")),
        (&[b"BEARER abc"], Some(b"abc")),
        (&[b"Bearer  abc "], Some(b"abc")),
        (&[exact.as_bytes()], Some(&exact.as_bytes()[7..])),
        (&[b"Bearer abc", b"Bearer abc"], None),
        (&[b"Basic YWxhZGRpbjpvcGVu"], None),
        (&[b"Bearer"], None),
        (&[b"Bearer "], None),
        (&[b"Bearerabc"], None),
        (&[b"Bearer abc def"], None),
        (&[b""], None),
        (&[long.as_bytes()], None),
    ];
    for (values, expected) in cases {
        match expected {
            Some(token) => assert_eq!(bearer_token(values).unwrap(), token),
            None => assert!(
                matches!(bearer_token(values), Err(Error::MalformedAuthorization)),
                "{values:?}"
            ),
        }
    }
}

#[test]
fn whitespace_anywhere_inside_the_token_is_refused() {
    // Every ASCII whitespace byte, at every place of tokens around the 8-byte words the check
    // reads at once; the same tokens without it pass. Other bytes pass this step untouched.
    for len in [1usize, 2, 31, 32, 33, 63, 64, 65, 100] {
        let token = "a".repeat(len);
        let header = format!("Bearer {token}");
        assert_eq!(
            bearer_token(&[header.as_bytes()]).unwrap(),
            token.as_bytes()
        );
        // Inside: leading and trailing whitespace is trimmed.
        for at in 1..len.saturating_sub(1) {
            for ws in [b' ', b'\t', b'\n', b'\x0c', b'\r'] {
                let mut bytes = header.clone().into_bytes();
                bytes[7 + at] = ws;
                assert!(
                    matches!(bearer_token(&[&bytes]), Err(Error::MalformedAuthorization)),
                    "{ws:#x} at {at} of {len}"
                );
            }
            let mut bytes = header.clone().into_bytes();
            bytes[7 + at] = 0x0b; // vertical tab: not ASCII whitespace to Rust, nor here
            assert_eq!(bearer_token(&[&bytes]).unwrap().len(), len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit-safe messages

#[test]
fn error_messages_never_echo_the_token_or_raw_untrusted_bytes() {
    let token = A.token(&claims());
    let parts = segments(&token);
    let evil = "\u{1b}[2J\nforged log line\"";
    let cases = [
        token_with_header(&format!(
            r#"{{"kid":"{}","alg":"RS256",{e}:1,{e}:2}}"#,
            A.kid,
            e = json!(evil)
        )),
        token_with_payload(format!(r#"{{{e}:1,{e}:2}}"#, e = json!(evil)).as_bytes()),
        assemble(&[&parts[0], &parts[1], &parts[2][..100]]),
        format!("{token}.x"),
    ];
    for token in cases {
        let rejected = verify(&token).unwrap_err();
        let shown = rejected.to_string();
        assert!(shown.starts_with("jwt: "), "{shown}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            !shown.contains(&parts[1][..20]) && !shown.contains(&token[..20]),
            "{shown}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Key policy

/// A fabricated modulus of exactly `bits` bits (no private key is needed to test the policy).
fn modulus(bits: usize) -> Vec<u8> {
    let mut n = vec![0xA5; bits.div_ceil(8)];
    let top_bits = bits - (n.len() - 1) * 8;
    n[0] = 0x80 >> (8 - top_bits) | 1;
    n
}

fn rsa_jwk(kid: &str, n: &[u8], e: &[u8]) -> Value {
    json!({"kty": "RSA", "kid": kid, "n": b64(n), "e": b64(e)})
}

const E: [u8; 3] = [1, 0, 1];

fn policy(bad: Value) -> ParsedJwks {
    parse_jwks(jwks_of(&[A.jwk(), bad]).as_bytes()).unwrap()
}

#[test]
fn key_policy_skips_bad_keys_at_load() {
    let with = |f: fn(&mut Value)| {
        let mut jwk = rsa_jwk("bad", &modulus(2048), &E);
        f(&mut jwk);
        jwk
    };
    let cases = [
        (
            rsa_jwk("bad", &modulus(2048), &[3]),
            KeyPolicyViolation::Exponent,
        ),
        (
            rsa_jwk("bad", &modulus(2048), &[0, 1, 0, 1]),
            KeyPolicyViolation::Exponent,
        ),
        (
            rsa_jwk("bad", &modulus(2047), &E),
            KeyPolicyViolation::ModulusBits { bits: 2047 },
        ),
        (
            rsa_jwk("bad", &modulus(2041), &E),
            KeyPolicyViolation::ModulusBits { bits: 2041 },
        ),
        (
            rsa_jwk("bad", &modulus(1024), &E),
            KeyPolicyViolation::ModulusBits { bits: 1024 },
        ),
        (
            rsa_jwk("bad", &modulus(4097), &E),
            KeyPolicyViolation::ModulusBits { bits: 4097 },
        ),
        (
            rsa_jwk("bad", &modulus(8192), &E),
            KeyPolicyViolation::ModulusBits { bits: 8192 },
        ),
        (
            rsa_jwk("bad", &[vec![0], modulus(2048)].concat(), &E),
            KeyPolicyViolation::ModulusLeadingZero,
        ),
        (with(|j| j["use"] = json!("enc")), KeyPolicyViolation::Use),
        (
            with(|j| j["kty"] = json!("EC")),
            KeyPolicyViolation::KeyType,
        ),
        (
            with(|j| j["alg"] = json!("RS384")),
            KeyPolicyViolation::Algorithm,
        ),
        (
            with(|j| j["key_ops"] = json!(["sign"])),
            KeyPolicyViolation::KeyOps,
        ),
        (
            with(|j| j["key_ops"] = json!("verify")),
            KeyPolicyViolation::KeyOps,
        ),
        (
            with(|j| j["n"] = json!("AQAB=")),
            KeyPolicyViolation::Encoding,
        ),
        (
            with(|j| j["e"] = json!(65537)),
            KeyPolicyViolation::Encoding,
        ),
        (
            with(|j| {
                j.as_object_mut().unwrap().remove("kid");
            }),
            KeyPolicyViolation::Kid,
        ),
        (
            with(|j| j["kid"] = json!("k".repeat(129))),
            KeyPolicyViolation::Kid,
        ),
    ];
    for (jwk, why) in cases {
        let parsed = policy(jwk.clone());
        assert_eq!(parsed.keys.len(), 1, "{jwk}");
        assert!(parsed.keys.contains_key(&A.kid));
        assert_eq!(parsed.skipped.len(), 1, "{jwk}");
        assert_eq!(parsed.skipped[0].1, why, "{jwk}");
    }
}

#[test]
fn key_policy_accepts_2048_to_4096_bits_and_optional_members() {
    for bits in [2048, 3072, 4096] {
        let parsed = policy(rsa_jwk("fabricated", &modulus(bits), &E));
        assert_eq!(parsed.keys["fabricated"].bits(), bits);
        assert!(parsed.skipped.is_empty());
    }
    let full = json!({"kty": "RSA", "kid": "full", "use": "sig", "alg": "RS256", "key_ops": ["verify", "sign"],
        "n": b64(&modulus(2048)), "e": "AQAB"});
    assert!(policy(full).keys.contains_key("full"));
}

#[test]
fn duplicate_kids_are_all_skipped() {
    let parsed =
        parse_jwks(jwks_of(&[A.jwk(), rsa_jwk(&A.kid, &modulus(2048), &E), B.jwk()]).as_bytes())
            .unwrap();
    assert_eq!(parsed.keys.keys().collect::<Vec<_>>(), [&B.kid]);
    assert!(
        parsed
            .skipped
            .iter()
            .all(|(kid, why)| kid.as_deref() == Some(A.kid.as_str())
                && *why == KeyPolicyViolation::DuplicateKid)
    );
    assert_eq!(parsed.skipped.len(), 2);
}

#[test]
fn a_set_without_usable_keys_or_with_too_many_is_a_failed_load() {
    let bad = rsa_jwk("bad", &modulus(2048), &[3]);
    assert!(matches!(
        parse_jwks(jwks_of(&[bad]).as_bytes()),
        Err(Error::JwksNoUsableKey)
    ));
    assert!(matches!(
        parse_jwks(br#"{"keys":[]}"#),
        Err(Error::JwksNoUsableKey)
    ));
    let many: Vec<Value> = (0..21)
        .map(|i| rsa_jwk(&format!("k{i}"), &modulus(2048), &E))
        .collect();
    assert!(matches!(
        parse_jwks(jwks_of(&many).as_bytes()),
        Err(Error::JwksTooManyKeys { count: 21 })
    ));
    assert!(parse_jwks(jwks_of(&many[..20]).as_bytes()).is_ok());
    for body in [
        &b"[]"[..],
        b"{}",
        b"{\"keys\":{}}",
        b"not json",
        b"{\"keys\":[1]}",
    ] {
        assert!(
            matches!(parse_jwks(body), Err(Error::JwksMalformed { .. })),
            "{body:?}"
        );
    }
}

#[test]
fn a_skipped_key_is_never_used() {
    let weak = json!({"kty": "RSA", "kid": A.kid, "use": "enc", "n": A.jwk()["n"], "e": "AQAB"});
    let store = KeyStore::new(KeySource::Static(jwks_of(&[weak, B.jwk()]).into_bytes()));
    store.load(NOW).unwrap();
    let verifier = Verifier::new(settings(), Arc::new(store));
    let error = verifier
        .verify(A.token(&claims()).as_bytes(), NOW)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::UnknownKid), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Key store

/// A fetcher serving whatever document is current, counting calls.
#[derive(Clone)]
struct Upstream {
    body: Arc<Mutex<Result<FetchedJwks, String>>>,
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Upstream {
    fn new(signers: &[&Signer], max_age_secs: Option<u64>) -> Self {
        let upstream = Upstream {
            body: Arc::new(Mutex::new(Err(String::new()))),
            calls: Arc::default(),
            delay: Duration::ZERO,
        };
        upstream.serve(signers, max_age_secs);
        upstream
    }

    fn serve(&self, signers: &[&Signer], max_age_secs: Option<u64>) {
        *self.body.lock().unwrap() = Ok(FetchedJwks {
            body: jwks_json(signers).into_bytes(),
            max_age_secs,
        });
    }

    fn fail(&self) {
        *self.body.lock().unwrap() = Err("connection refused".to_owned());
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn store(&self) -> Arc<KeyStore> {
        let upstream = self.clone();
        Arc::new(KeyStore::new(KeySource::Fetch(Box::new(move || {
            upstream.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(upstream.delay);
            match &*upstream.body.lock().unwrap() {
                Ok(f) => Ok(FetchedJwks {
                    body: f.body.clone(),
                    max_age_secs: f.max_age_secs,
                }),
                Err(e) => Err(e.clone()),
            }
        }))))
    }
}

fn token_at(signer: &Signer, now: u64) -> String {
    signer.token(&buildkite_claims(ORG, "widgets", now))
}

#[test]
fn rotation_new_kid_is_accepted_after_one_refresh() {
    let upstream = Upstream::new(&[&A], None);
    let store = upstream.store();
    assert!(!store.is_loaded());
    store.load(NOW).unwrap();
    assert!(store.is_loaded());
    let verifier = Verifier::new(settings(), store);
    upstream.serve(&[&A, &B], None);
    let later = NOW + 30;
    let verified = verifier
        .verify(token_at(&B, later).as_bytes(), later)
        .unwrap();
    assert_eq!(verified.kid, B.kid);
    assert_eq!(upstream.calls(), 2);
    assert!(
        verifier
            .verify(token_at(&A, later).as_bytes(), later)
            .is_ok()
    );
    assert_eq!(upstream.calls(), 2, "known kids cost no fetch");
}

#[test]
fn unknown_kids_cost_at_most_one_fetch_per_30_seconds() {
    let upstream = Upstream::new(&[&A], None);
    let store = upstream.store();
    store.load(NOW - 100).unwrap();
    let verifier = Verifier::new(settings(), store);
    for i in 0..20 {
        let now = NOW + i;
        let error = verifier
            .verify(token_at(&B, now).as_bytes(), now)
            .unwrap_err()
            .error;
        assert!(matches!(error, Error::UnknownKid), "{error:?}");
    }
    assert_eq!(
        upstream.calls(),
        2,
        "the load, then one refresh for the first miss"
    );
    let now = NOW + 29;
    assert!(verifier.verify(token_at(&B, now).as_bytes(), now).is_err());
    assert_eq!(upstream.calls(), 2);
    let now = NOW + 30;
    assert!(verifier.verify(token_at(&B, now).as_bytes(), now).is_err());
    assert_eq!(
        upstream.calls(),
        3,
        "30 s later one more refresh is allowed"
    );
}

#[test]
fn concurrent_misses_share_one_fetch() {
    let mut upstream = Upstream::new(&[&A], None);
    upstream.delay = Duration::from_millis(200);
    let store = upstream.store();
    store.load(NOW - 100).unwrap();
    upstream.serve(&[&A, &B], None);
    let verifier = Arc::new(Verifier::new(settings(), store));
    let token = token_at(&B, NOW);
    let kids = all_at_once(8, move || {
        verifier.verify(token.as_bytes(), NOW).map(|v| v.kid)
    });
    for kid in kids {
        assert_eq!(
            kid.unwrap(),
            B.kid,
            "every waiter looks again after the fetch"
        );
    }
    assert_eq!(upstream.calls(), 2, "the load, then exactly one refresh");
}

#[test]
fn a_failing_refresh_keeps_the_last_good_set_for_24_hours() {
    let upstream = Upstream::new(&[&A], None);
    let store = upstream.store();
    store.load(NOW).unwrap();
    upstream.fail();
    let verifier = Verifier::new(settings(), store.clone());
    let hour = NOW + 3600;
    assert!(store.refresh_due(hour));
    assert!(matches!(store.load(hour), Err(Error::JwksFetch { .. })));
    assert!(!store.refresh_due(hour + 29), "retries wait 30 s");
    assert!(store.refresh_due(hour + 30));
    assert!(verifier.verify(token_at(&A, hour).as_bytes(), hour).is_ok());
    let last = NOW + 24 * 3600 - 1;
    assert!(verifier.verify(token_at(&A, last).as_bytes(), last).is_ok());
    let stale = NOW + 24 * 3600;
    let error = verifier
        .verify(token_at(&A, stale).as_bytes(), stale)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::KeySetUnavailable), "{error:?}");
    assert!(store.is_loaded(), "it did load once");
    upstream.serve(&[&A], None);
    assert!(
        verifier
            .verify(token_at(&A, stale + 30).as_bytes(), stale + 30)
            .is_ok(),
        "a lookup refetches"
    );
}

#[test]
fn max_age_is_clamped_both_ways() {
    for (max_age, life) in [
        (None, 3600),
        (Some(10), 60),
        (Some(0), 60),
        (Some(600), 600),
        (Some(10_000_000), 86_400),
    ] {
        let upstream = Upstream::new(&[&A], max_age);
        let store = upstream.store();
        assert!(store.refresh_due(NOW), "never loaded");
        store.load(NOW).unwrap();
        assert!(!store.refresh_due(NOW + life - 1), "{max_age:?}");
        assert!(store.refresh_due(NOW + life), "{max_age:?}");
    }
}

#[test]
fn without_a_good_set_verification_fails_closed() {
    let upstream = Upstream::new(&[&A], None);
    upstream.fail();
    let store = upstream.store();
    assert!(matches!(store.load(NOW), Err(Error::JwksFetch { .. })));
    assert!(!store.is_loaded());
    let verifier = Verifier::new(settings(), store);
    let error = verifier
        .verify(token_at(&A, NOW).as_bytes(), NOW)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::KeySetUnavailable), "{error:?}");

    let bad = KeyStore::new(KeySource::Static(
        jwks_of(&[rsa_jwk("bad", &modulus(2048), &[3])]).into_bytes(),
    ));
    assert!(matches!(bad.load(NOW), Err(Error::JwksNoUsableKey)));
    let verifier = Verifier::new(settings(), Arc::new(bad));
    let error = verifier
        .verify(token_at(&A, NOW).as_bytes(), NOW)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::KeySetUnavailable), "{error:?}");
}

#[test]
fn a_panicking_fetcher_is_a_failed_fetch() {
    let store = KeyStore::new(KeySource::Fetch(Box::new(|| panic!("fetcher bug"))));
    assert!(matches!(store.load(NOW), Err(Error::JwksFetch { .. })));
    assert!(matches!(
        store.key("kid", NOW + 30),
        Err(Error::KeySetUnavailable)
    ));
}

#[test]
fn a_static_set_never_expires_nor_refetches() {
    let store = static_store(&[&A]);
    let later = NOW + 30 * 24 * 3600;
    assert!(!store.refresh_due(later));
    let verifier = Verifier::new(settings(), store);
    assert!(
        verifier
            .verify(token_at(&A, later).as_bytes(), later)
            .is_ok()
    );
    let error = verifier
        .verify(token_at(&B, later).as_bytes(), later)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::UnknownKid), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Verified-token reuse: the same bytes skip the signature, never the claims checks

/// A verifier over a key store that serves what `upstream` holds, loaded at `NOW`.
fn reusing(upstream: &Upstream) -> Verifier {
    // One store per verifier: the tests that change the key set keep their own handle.
    let store = upstream.store();
    store.load(NOW).unwrap();
    Verifier::new(settings(), store)
}

#[test]
fn the_same_token_is_verified_once_then_reused() {
    let verifier = Verifier::new(settings(), static_store(&[&A]));
    let token = A.token(&claims());
    let first = verifier.verify(token.as_bytes(), NOW).unwrap();
    assert!(!first.reused);
    let again = verifier.verify(token.as_bytes(), NOW + 10).unwrap();
    assert!(again.reused, "the same bytes are not verified again");
    assert_eq!((again.kid, again.claims), (first.kid, first.claims));
}

#[test]
fn reuse_off_verifies_every_presentation() {
    let settings = Settings {
        reuse_max_entries: 0,
        ..settings()
    };
    let verifier = Verifier::new(settings, static_store(&[&A]));
    let token = A.token(&claims());
    for _ in 0..3 {
        assert!(!verifier.verify(token.as_bytes(), NOW).unwrap().reused);
    }
}

#[test]
fn a_reused_token_never_outlives_its_exp() {
    let verifier = Verifier::new(settings(), static_store(&[&A]));
    let token = A.token(&claims()); // exp = NOW + 300, leeway 5
    verifier.verify(token.as_bytes(), NOW).unwrap();
    assert!(verifier.verify(token.as_bytes(), NOW + 299).unwrap().reused);
    // At exp the entry is gone: verified afresh (the leeway still admits it, unreused).
    let at_exp = verifier.verify(token.as_bytes(), NOW + 300).unwrap();
    assert!(!at_exp.reused, "dropped at exp");
    let error = verifier.verify(token.as_bytes(), NOW + 305).unwrap_err();
    assert!(matches!(error.error, Error::Expired { .. }), "{error:?}");
    assert!(error.claims.is_some(), "refused on its verified claims");
}

#[test]
fn time_dependent_claims_are_checked_on_every_use() {
    let verifier = Verifier::new(settings(), static_store(&[&A]));
    let token = A.token(&claims()); // iat = nbf = NOW
    verifier.verify(token.as_bytes(), NOW).unwrap();
    // The clock stepped back past the leeway: the remembered token is judged at this `now`.
    let error = verifier
        .verify(token.as_bytes(), NOW - 6)
        .unwrap_err()
        .error;
    assert!(
        matches!(
            error,
            Error::NotYetValid { .. } | Error::IssuedInFuture { .. }
        ),
        "{error:?}"
    );
    assert!(
        verifier.verify(token.as_bytes(), NOW - 5).is_ok(),
        "within the leeway"
    );
    // Settings-dependent checks too: another verifier with a stricter rule refuses it, since
    // each verifier remembers only what it verified itself.
    let strict = Settings {
        organization_id: Some("another".into()),
        ..settings()
    };
    let other = Verifier::new(strict, static_store(&[&A]));
    let error = other.verify(token.as_bytes(), NOW).unwrap_err().error;
    assert!(matches!(error, Error::OrganizationMismatch), "{error:?}");
}

#[test]
fn a_different_token_with_the_same_claims_is_verified_afresh() {
    let verifier = Verifier::new(settings(), static_store(&[&A, &B]));
    let token = A.token(&claims());
    verifier.verify(token.as_bytes(), NOW).unwrap();
    // Same header and payload, a signature with one byte flipped.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut forged =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .unwrap();
    forged[10] ^= 1;
    let forged = format!("{signed}.{}", b64(&forged));
    let error = verifier.verify(forged.as_bytes(), NOW).unwrap_err().error;
    assert!(matches!(error, Error::BadSignature), "{error:?}");
    // The same claims signed by another valid key: new bytes, a full verification.
    let by_b = verifier.verify(B.token(&claims()).as_bytes(), NOW).unwrap();
    assert!(!by_b.reused);
    assert_eq!(by_b.kid, B.kid);
    // And the original is still remembered.
    assert!(verifier.verify(token.as_bytes(), NOW).unwrap().reused);
}

#[test]
fn a_kid_leaving_the_set_drops_the_entry() {
    let upstream = Upstream::new(&[&A, &B], None);
    let store = upstream.store();
    store.load(NOW).unwrap();
    let verifier = Verifier::new(settings(), Arc::clone(&store));
    let token = A.token(&claims());
    verifier.verify(token.as_bytes(), NOW).unwrap();
    assert!(verifier.verify(token.as_bytes(), NOW + 1).unwrap().reused);
    upstream.serve(&[&B], None);
    store.load(NOW + 2).unwrap();
    let error = verifier
        .verify(token.as_bytes(), NOW + 2)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::UnknownKid), "{error:?}");
    // The key back: verified afresh, not served from the dropped entry.
    upstream.serve(&[&A, &B], None);
    store.load(NOW + 40).unwrap();
    assert!(!verifier.verify(token.as_bytes(), NOW + 40).unwrap().reused);
}

#[test]
fn a_kid_naming_another_key_drops_the_entry() {
    let upstream = Upstream::new(&[&A], None);
    let store = upstream.store();
    store.load(NOW).unwrap();
    let verifier = Verifier::new(settings(), Arc::clone(&store));
    let token = A.token(&claims());
    verifier.verify(token.as_bytes(), NOW).unwrap();
    assert!(verifier.verify(token.as_bytes(), NOW).unwrap().reused);
    // The same kid now publishes B's modulus: A's signature no longer verifies.
    let mut impostor = B.jwk();
    impostor["kid"] = json!(A.kid);
    *upstream.body.lock().unwrap() = Ok(FetchedJwks {
        body: jwks_of(&[impostor]).into_bytes(),
        max_age_secs: None,
    });
    store.load(NOW + 1).unwrap();
    let error = verifier
        .verify(token.as_bytes(), NOW + 1)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::BadSignature), "{error:?}");
}

#[test]
fn a_key_set_past_its_last_good_age_drops_the_entries() {
    let upstream = Upstream::new(&[&A], None);
    let verifier = reusing(&upstream); // fetched at NOW
    upstream.fail();
    // A token verified just before the set turns 24 hours old without a good refresh…
    let t1 = NOW + 24 * 3600 - 100;
    let token = token_at(&A, t1);
    verifier.verify(token.as_bytes(), t1).unwrap();
    assert!(verifier.verify(token.as_bytes(), t1 + 99).unwrap().reused);
    // …is refused with it, although the token itself is still valid.
    let error = verifier
        .verify(token.as_bytes(), t1 + 100)
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::KeySetUnavailable), "{error:?}");
}
