//! The cost of verifying one valid Buildkite token end to end (bearer parse, JWS parse, key
//! lookup, RS256 verify, claims parse, validation) next to the bare
//! `ring::signature::RsaPublicKeyComponents::verify` over the same bytes, measured in the same
//! run with interleaved rounds. Reports the medians and their ratio.
//!
//! Run: `cargo run --release --example bench_verify`
#![forbid(unsafe_code)]

#[path = "../tests/support/oidc.rs"]
mod oidc_support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use kitebridge::{KeySource, KeyStore, Verifier, VerifierSettings as Settings, bearer_token};
use oidc_support::{Signer, buildkite_claims, jwks_json};

const NOW: u64 = 1_763_632_800;
const ROUNDS: usize = 41;
const PER_ROUND: u32 = 400;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Mean microseconds per call of `f` over one round.
fn round(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_ROUND {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND)
}

fn main() {
    let signer = Signer::a();
    let store = KeyStore::new(KeySource::Static(jwks_json(&[&signer]).into_bytes()));
    store.load(NOW).unwrap();
    let verifier = Verifier::new(
        Settings::new("https://buildkite.com/acme", "acme"),
        Arc::new(store),
    );
    let token = signer.token(&buildkite_claims("acme", "widgets", NOW));
    let header = format!("Bearer {token}");

    let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        signature_b64,
    )
    .unwrap();
    let public = signer.public();

    let end_to_end = || {
        let token = bearer_token(&[black_box(header.as_bytes())]).unwrap();
        black_box(verifier.verify(token, NOW).unwrap());
    };
    let bare = || {
        public
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                black_box(signing_input.as_bytes()),
                black_box(&signature),
            )
            .unwrap();
    };

    // Warm up both, then interleave rounds so drift affects them alike.
    round(end_to_end);
    round(bare);
    let (mut full, mut ring_only) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        full.push(round(end_to_end));
        ring_only.push(round(bare));
    }
    let (full, ring_only) = (median(full), median(ring_only));
    println!("command: cargo run --release --example bench_verify");
    println!(
        "token: {} bytes, RSA-2048, {ROUNDS} interleaved rounds of {PER_ROUND} calls",
        token.len()
    );
    println!("end to end (bearer + jws + verify + claims + validate): median {full:.2} µs");
    println!("bare ring RsaPublicKeyComponents::verify:              median {ring_only:.2} µs");
    println!("ratio: {:.3} (target < 1.3)", full / ring_only);
}
