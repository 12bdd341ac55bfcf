//! The one type for every secret value: the GitHub App key, the Buildkite API token, GitHub
//! installation tokens.
//!
//! `Debug` and `Display` print `[redacted]`, so a secret cannot leak through logs, error messages
//! or a derived `Debug` of a struct holding one. The value is reached only through
//! [`Secret::expose`], which makes every use visible to a reviewer.
#![forbid(unsafe_code)]

use std::fmt;

/// A secret value. See the module documentation.
///
/// Equality is a plain comparison (not constant time): compare secrets only where timing
/// reveals nothing to a caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps any secret value (a PEM key, a token read from a file).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Wraps a secret sent in an HTTP header (`Authorization: Bearer …`): `None` when it is empty
    /// or holds anything but visible ASCII (a space, a control character or non-ASCII text could
    /// break or split the header). Any length is accepted; tokens are opaque.
    pub fn header_safe(value: String) -> Option<Secret> {
        let usable = !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic());
        usable.then_some(Secret(value))
    }

    /// The secret itself, for the one place that must use it (a header, a response body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    /// Best effort, without `unsafe`: overwrites the bytes before they are freed. Copies made
    /// earlier (a `String` that grew, a caller's use of [`Secret::expose`]) are not reached, and
    /// the compiler is only discouraged, not prevented, from dropping the writes.
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = Secret::new("hunter2 with spaces\n".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2 with spaces\n");
    }

    #[test]
    fn header_safe_refuses_what_could_break_a_header() {
        let token = Secret::header_safe("ghs_abc.DEF-123_x".into()).unwrap();
        assert_eq!(format!("{token:?}"), "[redacted]");
        assert_eq!(token.expose(), "ghs_abc.DEF-123_x");
        assert!(Secret::header_safe("bkua_secret".into()).is_some());
        assert!(
            Secret::header_safe("x".repeat(4096)).is_some(),
            "any length"
        );
        for bad in [
            "",
            "bad token",
            "ghs_a b",
            "ghs_\n",
            "ghs_\r",
            "ghs_\t",
            "ghs_é",
            "\u{0}",
        ] {
            assert!(Secret::header_safe(bad.into()).is_none(), "{bad:?}");
        }
    }
}
