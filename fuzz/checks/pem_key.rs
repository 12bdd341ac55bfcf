//! `github::AppKey::from_pem`: never panics, and an accepted key yields a DER public key.
#![forbid(unsafe_code)]

use kitebridge::AppKey;

pub fn check(data: &[u8]) {
    if let Ok(key) = AppKey::from_pem(data) {
        let public = key.public_key_der();
        assert_eq!(
            public.first(),
            Some(&0x30),
            "public key is not a DER sequence"
        );
    }
}
