//! The GitHub App's private key and the App JWT it signs (RS256, `iat` = now − 60,
//! `exp` = now + 540, `iss` = the App ID), re-used for [`JWT_REUSE_SECS`] from a one-value
//! [`CoalescingCache`] (concurrent callers that find it stale wait for one signature).
#![forbid(unsafe_code)]

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::cache::CoalescingCache;

/// How long one signed App JWT is used (its `exp` is 540 s after signing, so a re-used JWT
/// still has a minute left).
pub const JWT_REUSE_SECS: u64 = 480;

/// The App's RSA private key. Its `Debug` prints `[redacted]`.
pub struct AppKey {
    pair: RsaKeyPair,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey([redacted])")
    }
}

/// Why the App key PEM was refused. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// No `PRIVATE KEY` PEM section could be read.
    NotPem,
    /// A PEM private key that is neither PKCS#1 (`RSA PRIVATE KEY`) nor PKCS#8 (`PRIVATE KEY`).
    NotRsa,
    /// ring refused the key (size, encoding, consistency).
    Rejected(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotPem => write!(f, "no pem private key found"),
            KeyError::NotRsa => write!(f, "private key is not pkcs#1 or pkcs#8 rsa"),
            KeyError::Rejected(why) => write!(f, "rsa key rejected: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl AppKey {
    /// Reads a PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`, what GitHub hands out) or PKCS#8
    /// (`-----BEGIN PRIVATE KEY-----`) PEM.
    pub fn from_pem(pem: &[u8]) -> Result<AppKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPem)?;
        let pair = match &der {
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
            _ => return Err(KeyError::NotRsa),
        };
        let pair = pair.map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(AppKey { pair })
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER (for checking signatures in tests).
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.public().as_ref().to_vec()
    }

    /// Signs a fresh App JWT for `now`.
    fn sign(&self, app_id: &str, now: u64) -> Option<String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iat": now.saturating_sub(60),
            "exp": now.saturating_add(540),
            "iss": app_id,
        });
        let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .ok()?;
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A signed JWT and when it was signed.
struct Signed {
    jwt: String,
    signed_at: u64,
}

/// The App JWT source: signs on first use and again after [`JWT_REUSE_SECS`].
pub(super) struct AppJwt {
    app_id: String,
    key: AppKey,
    /// The JWT in use, under the unit key. A failed signature (`()`: ring says no more) is not
    /// stored.
    cache: CoalescingCache<(), Signed, ()>,
}

impl AppJwt {
    pub(super) fn new(app_id: String, key: AppKey) -> AppJwt {
        AppJwt {
            app_id,
            key,
            cache: CoalescingCache::new(1),
        }
    }

    /// The JWT to use at `now`; `None` only if signing fails.
    pub(super) fn get(&self, now: u64) -> Option<String> {
        let fresh = |s: &Signed| now >= s.signed_at && now - s.signed_at < JWT_REUSE_SECS;
        let sign = || {
            let jwt = self.key.sign(&self.app_id, now).ok_or(())?;
            Ok(Signed {
                jwt,
                signed_at: now,
            })
        };
        let (signed, _) = self.cache.get_or_load(&(), fresh, sign);
        signed.ok().map(|s| s.jwt.clone())
    }

    /// Drops the cached JWT (after GitHub refused it) so the next call signs anew.
    pub(super) fn forget(&self) {
        self.cache.invalidate(&());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS1: &[u8] = include_bytes!("../../tests/fixtures/test-github-app-key.pkcs1.pem");
    const PKCS8: &[u8] = include_bytes!("../../tests/fixtures/test-github-app-key.pkcs8.pem");

    fn claims(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn reads_both_pem_forms_as_the_same_key() {
        let a = AppKey::from_pem(PKCS1).unwrap();
        let b = AppKey::from_pem(PKCS8).unwrap();
        assert_eq!(a.public_key_der(), b.public_key_der());
        assert_eq!(format!("{a:?}"), "AppKey([redacted])");
    }

    #[test]
    fn refuses_non_keys() {
        assert_eq!(
            AppKey::from_pem(b"not a pem").unwrap_err(),
            KeyError::NotPem
        );
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(AppKey::from_pem(cert).unwrap_err(), KeyError::NotPem);
        let broken = b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            AppKey::from_pem(broken).unwrap_err(),
            KeyError::Rejected(_)
        ));
    }

    #[test]
    fn claims_and_signature() {
        let key = AppKey::from_pem(PKCS1).unwrap();
        let jwt = key.sign("12345", 1_000_000).unwrap();
        assert_eq!(
            claims(&jwt),
            serde_json::json!({"iat": 999_940, "exp": 1_000_540, "iss": "12345"})
        );
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_der(),
        );
        public
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();
    }

    #[test]
    fn reused_for_eight_minutes_then_signed_again() {
        let jwt = AppJwt::new("1".into(), AppKey::from_pem(PKCS1).unwrap());
        let first = jwt.get(1000).unwrap();
        assert_eq!(jwt.get(1000 + JWT_REUSE_SECS - 1).unwrap(), first);
        let second = jwt.get(1000 + JWT_REUSE_SECS).unwrap();
        assert_ne!(second, first);
        assert_eq!(claims(&second)["iat"], 1000 + JWT_REUSE_SECS - 60);
        // A clock that went backwards gets a fresh JWT, never one from the future.
        assert_eq!(claims(&jwt.get(900).unwrap())["iat"], 840);
        jwt.forget();
        assert!(jwt.cache.is_empty());
    }
}
