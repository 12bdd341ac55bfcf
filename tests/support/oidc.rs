//! A Buildkite OIDC stand-in for tests: signs tokens with the test-only keys in
//! `tests/fixtures/test-oidc-key-{a,b}.pkcs8.pem`, publishes them as a JWKS document, and builds
//! realistic Buildkite claims. Low-level helpers craft arbitrary headers, payloads and signatures
//! for the attack catalogue.
//!
//! Use it from a test crate with `#[path = "support/oidc.rs"] mod oidc_support;` (or from a
//! `tests/support/mod.rs` declaring `pub mod oidc;`): it has no `crate::`-relative imports.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

/// A signing key with its `kid` (64 hex characters: SHA-256 of the modulus).
pub struct Signer {
    key_pair: RsaKeyPair,
    pub kid: String,
}

impl Signer {
    /// The first test key.
    pub fn a() -> Signer {
        Signer::from_fixture("test-oidc-key-a.pkcs8.pem")
    }

    /// The second test key (for rotation).
    pub fn b() -> Signer {
        Signer::from_fixture("test-oidc-key-b.pkcs8.pem")
    }

    /// A PKCS#8 PEM key from `tests/fixtures/`.
    pub fn from_fixture(name: &str) -> Signer {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(&path).unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
        let key_pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let n = components(&key_pair).n;
        let kid = hex(ring::digest::digest(&ring::digest::SHA256, &n).as_ref());
        Signer { key_pair, kid }
    }

    /// The public modulus and exponent, big-endian without leading zeros.
    pub fn public(&self) -> RsaPublicKeyComponents<Vec<u8>> {
        components(&self.key_pair)
    }

    /// What one bare `ring` RS256 verification with this key costs: the median of 31 samples of
    /// 200 verifications (the benchmarks' baseline).
    pub fn verify_cost(&self) -> std::time::Duration {
        let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9";
        let signature = self.sign(message);
        let public = self.public();
        let mut samples: Vec<std::time::Duration> = (0..31)
            .map(|_| {
                let t = std::time::Instant::now();
                for _ in 0..200 {
                    public
                        .verify(
                            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                            message,
                            &signature,
                        )
                        .expect("valid");
                }
                t.elapsed() / 200
            })
            .collect();
        samples.sort_unstable();
        samples[samples.len() / 2]
    }

    /// The public key as DER `RSAPublicKey` (PKCS#1), as ring encodes it.
    pub fn public_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key_pair.public_key().as_ref().to_vec()
    }

    /// The public key as a PEM `RSA PUBLIC KEY` block.
    pub fn public_pem(&self) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(self.public_der());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// The public key as a JWK, as Buildkite publishes it.
    pub fn jwk(&self) -> Value {
        let public = self.public();
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
               "n": b64(&public.n), "e": b64(&public.e)})
    }

    /// RS256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .unwrap();
        signature
    }

    /// The header Buildkite sends: `{"kid":"<kid>","alg":"RS256"}`.
    pub fn header(&self) -> Vec<u8> {
        format!(r#"{{"kid":"{}","alg":"RS256"}}"#, self.kid).into_bytes()
    }

    /// A token over `claims` with the usual header.
    pub fn token(&self, claims: &Value) -> String {
        self.token_from_parts(&self.header(), claims.to_string().as_bytes())
    }

    /// A correctly signed token over arbitrary header and payload bytes.
    pub fn token_from_parts(&self, header: &[u8], payload: &[u8]) -> String {
        self.sign_encoded(&b64(header), &b64(payload))
    }

    /// A token with an arbitrary header, signed over the given (already encoded) segments.
    pub fn sign_encoded(&self, header_b64: &str, payload_b64: &str) -> String {
        let signing_input = format!("{header_b64}.{payload_b64}");
        let signature = self.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }
}

fn components(key_pair: &RsaKeyPair) -> RsaPublicKeyComponents<Vec<u8>> {
    RsaPublicKeyComponents::<Vec<u8>>::from(key_pair.public())
}

/// Unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Joins already encoded segments with dots.
pub fn assemble(segments: &[&str]) -> String {
    segments.join(".")
}

/// The JWKS document publishing these signers' keys.
pub fn jwks_json(signers: &[&Signer]) -> String {
    let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// A JWKS document with these raw JWK objects.
pub fn jwks_of(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// A realistic Buildkite payload for `org`/`pipeline`, issued at `now` for 300 s, with the
/// audience `https://buildkite.com/<org>`.
pub fn buildkite_claims(org: &str, pipeline: &str, now: u64) -> Value {
    let commit = "4f5bd3a8e1c2b0d9f8e7a6b5c4d3e2f1a0b9c8d7";
    json!({
        "iss": "https://agent.buildkite.com",
        "sub": format!("organization:{org}:pipeline:{pipeline}:ref:refs/heads/main:commit:{commit}:step:"),
        "aud": format!("https://buildkite.com/{org}"),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "0c5e2f4a-8b1d-4e7f-9a3c-6d2b1e0f7a9c",
        "organization_slug": org,
        "organization_id": "0190f3a1-7c2e-4b8d-9e6f-1a2b3c4d5e6f",
        "pipeline_slug": pipeline,
        "pipeline_id": "0190f3a2-1d3c-4e5f-8a9b-0c1d2e3f4a5b",
        "build_number": 42,
        "build_branch": "main",
        "build_tag": null,
        "build_commit": commit,
        "build_source": "webhook",
        "step_key": null,
        "job_id": "0190f3a3-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "agent_id": "0190f3a4-9a0b-4c1d-8e2f-3a4b5c6d7e8f",
        "runner_environment": "buildkite-hosted",
        "cluster_id": "0190f3a5-2b3c-4d5e-9f0a-1b2c3d4e5f6a",
        "cluster_name": "Default cluster",
        "queue_id": "0190f3a6-6c7d-4e8f-9a0b-1c2d3e4f5a6b",
        "queue_key": "default",
        "agent_tag:queue": "default",
        "https://aws.amazon.com/tags": {
            "principal_tags": {
                "organization_slug": [org],
                "pipeline_slug": [pipeline],
            },
            "transitive_tag_keys": ["organization_slug", "pipeline_slug"],
        },
    })
}
