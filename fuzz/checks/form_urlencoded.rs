//! `http::form::parse_urlencoded`: never panics, and every accepted pair comes from one
//! non-empty `&`-separated piece of the input.
#![forbid(unsafe_code)]

use kitebridge::parse_urlencoded;

pub fn check(data: &[u8]) {
    let Ok(pairs) = parse_urlencoded(data) else {
        return;
    };
    let pieces = data.split(|&b| b == b'&').filter(|p| !p.is_empty()).count();
    assert_eq!(pairs.len(), pieces, "pairs {pairs:?}");
    for (name, value) in &pairs {
        assert!(
            name.len() + value.len() <= data.len(),
            "decoding grew the input"
        );
    }
}
