//! `oidc::parse_jwks`: never panics; an accepted set holds 1 to `MAX_KEYS` keys, each within the
//! key policy (kid of at most 128 bytes, e = 65537, a 2048–4096-bit modulus without a leading
//! zero octet).
#![forbid(unsafe_code)]

use kitebridge::{
    MAX_JWKS_KEYS as MAX_KEYS, MAX_KID_LEN, MAX_MODULUS_BITS, MIN_MODULUS_BITS, parse_jwks,
};

pub fn check(data: &[u8]) {
    let Ok(set) = parse_jwks(data) else {
        return;
    };
    assert!(!set.keys.is_empty(), "an accepted set without keys");
    assert!(
        set.keys.len() + set.skipped.len() <= MAX_KEYS,
        "over {MAX_KEYS} keys"
    );
    for (kid, key) in &set.keys {
        assert!(kid.len() <= MAX_KID_LEN, "kid of {} bytes", kid.len());
        let components = key.components();
        assert_eq!(components.e, [1, 0, 1], "kid {kid:?}: e is not 65537");
        assert_ne!(
            components.n.first(),
            Some(&0),
            "kid {kid:?}: n has a leading zero"
        );
        assert!(
            (MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&key.bits()),
            "kid {kid:?}: {} bits",
            key.bits()
        );
        assert_eq!(
            key.modulus_len(),
            key.bits().div_ceil(8),
            "kid {kid:?}: modulus length"
        );
    }
}
