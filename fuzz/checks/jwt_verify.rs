//! `oidc::Verifier::verify` over a fixed key set (the test-only key
//! `tests/fixtures/test-oidc-key-a.pkcs8.pem`, published as a static JWKS) at a fixed time:
//! never panics, and a token it accepts was signed by that key — re-checked with `ring` alone on
//! the token's own `header.payload` bytes.
#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kitebridge::{KeySource, KeyStore, Rejected, Verified, Verifier, VerifierSettings as Settings};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;

/// The verifier's clock: 2026-01-01T00:00:00Z. The seed token is issued at this time.
pub const NOW: u64 = 1_767_225_600;
/// The organization the verifier accepts.
pub const ORGANIZATION: &str = "acme";
/// The audience the verifier accepts.
pub const AUDIENCE: &str = "https://buildkite.com/acme";

/// The test-only signing key (never a real key; see `tests/fixtures/README.md`).
const TEST_KEY_PEM: &[u8] = include_bytes!("../../tests/fixtures/test-oidc-key-a.pkcs8.pem");

/// The test key's public half and its `kid` (hex SHA-256 of the modulus, as the test signer in
/// `tests/support/oidc.rs` names it).
struct TestKey {
    public: RsaPublicKeyComponents<Vec<u8>>,
    kid: String,
}

fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let der = PrivatePkcs8KeyDer::from_pem_slice(TEST_KEY_PEM).expect("test key pem");
        let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("test key");
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let kid = ring::digest::digest(&ring::digest::SHA256, &public.n)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        TestKey { public, kid }
    })
}

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let key = test_key();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"RSA","use":"sig","alg":"RS256","kid":"{}","n":"{}","e":"{}"}}]}}"#,
            key.kid,
            URL_SAFE_NO_PAD.encode(&key.public.n),
            URL_SAFE_NO_PAD.encode(&key.public.e),
        );
        let store = KeyStore::new(KeySource::Static(jwks.into_bytes()));
        store.load(NOW).expect("the test key set loads");
        Verifier::new(Settings::new(AUDIENCE, ORGANIZATION), Arc::new(store))
    })
}

/// The verifier's answer for `token` at [`NOW`].
pub fn verify(token: &[u8]) -> Result<Verified, Rejected> {
    verifier().verify(token, NOW)
}

pub fn check(data: &[u8]) {
    let Ok(verified) = verify(data) else {
        return;
    };
    let key = test_key();
    assert_eq!(verified.kid, key.kid, "accepted under another kid");
    let text = std::str::from_utf8(data).expect("an accepted token is text");
    let (signed, signature) = text.rsplit_once('.').expect("an accepted token has dots");
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("an accepted token's signature is strict base64url");
    let checked = key
        .public
        .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature);
    assert!(
        checked.is_ok(),
        "accepted a token the test key did not sign"
    );
}
