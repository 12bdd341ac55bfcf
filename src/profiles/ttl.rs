//! A profile's `ttl`: how long a token vended under it may live before kitebridge revokes it.
//!
//! Written as whole seconds, minutes or hours (`"90s"`, `"15m"`, `"1h"`), between
//! [`MIN_TTL_SECS`] and [`MAX_TTL_SECS`]. Absent means [`DEFAULT_TTL_SECS`]: GitHub's own hour,
//! no early revocation. The reader is pure and total.
#![forbid(unsafe_code)]

use std::fmt;

/// A profile's ttl when it has none: GitHub's hour (no early revocation).
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The shortest ttl a profile may give.
pub const MIN_TTL_SECS: u64 = 60;
/// The longest ttl a profile may give (GitHub's token life).
pub const MAX_TTL_SECS: u64 = 3600;

/// The most digits read before the unit (anything longer is out of range anyway).
const MAX_DIGITS: usize = 6;

/// A valid ttl, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl {
    secs: u64,
    /// Whether the profile file gave it (`false`: [`DEFAULT_TTL_SECS`] by absence).
    given: bool,
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl {
            secs: DEFAULT_TTL_SECS,
            given: false,
        }
    }
}

impl Ttl {
    /// Reads `"90s"`, `"15m"` or `"1h"`: 1–6 decimal digits (no sign, no leading zero) and one
    /// unit letter, in range.
    pub fn parse(text: &str) -> Result<Ttl, TtlError> {
        let scale = match text.as_bytes().last() {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3600,
            _ => return Err(TtlError::Malformed),
        };
        let digits = text.get(..text.len().saturating_sub(1)).unwrap_or_default();
        let well_formed = !digits.is_empty()
            && digits.len() <= MAX_DIGITS
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return Err(TtlError::Malformed);
        }
        let secs = digits
            .parse::<u64>()
            .map_err(|_| TtlError::Malformed)?
            .saturating_mul(scale);
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs) {
            return Err(TtlError::OutOfRange { secs });
        }
        Ok(Ttl { secs, given: true })
    }

    /// Seconds.
    pub fn secs(self) -> u64 {
        self.secs
    }

    /// Whether the profile file gave it.
    pub fn given(self) -> bool {
        self.given
    }
}

/// `15m (900 s)`, or `none (GitHub's hour)` when the profile gives none.
impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.given {
            return f.write_str("none (GitHub's hour)");
        }
        let secs = self.secs;
        match (secs % 3600, secs % 60) {
            (0, _) => write!(f, "{}h ({secs} s)", secs / 3600),
            (_, 0) => write!(f, "{}m ({secs} s)", secs / 60),
            _ => write!(f, "{secs}s"),
        }
    }
}

/// Why a `ttl` is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TtlError {
    /// Not whole seconds, minutes or hours (`"90s"`, `"15m"`, `"1h"`).
    Malformed,
    /// Outside [`MIN_TTL_SECS`]..=[`MAX_TTL_SECS`].
    OutOfRange { secs: u64 },
}

impl fmt::Display for TtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TtlError::Malformed => {
                f.write_str("ttl is not whole seconds, minutes or hours (\"90s\", \"15m\", \"1h\")")
            }
            TtlError::OutOfRange { secs } => write!(
                f,
                "ttl of {secs} s is outside {MIN_TTL_SECS}..={MAX_TTL_SECS} s"
            ),
        }
    }
}

impl std::error::Error for TtlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_units_in_range() {
        for (text, secs) in [
            ("60s", 60),
            ("90s", 90),
            ("1m", 60),
            ("15m", 900),
            ("60m", 3600),
            ("1h", 3600),
            ("3600s", 3600),
        ] {
            let ttl = Ttl::parse(text).unwrap();
            assert_eq!((ttl.secs(), ttl.given()), (secs, true), "{text}");
        }
        assert_eq!(Ttl::default().secs(), DEFAULT_TTL_SECS);
        assert!(!Ttl::default().given());
    }

    #[test]
    fn refuses_malformed_and_out_of_range() {
        for bad in [
            "", "s", "90", "90S", "1.5m", "-90s", "+90s", " 90s", "90s ", "090s", "1d", "1hh",
            "9999999s", "١٢s", "90é",
        ] {
            assert_eq!(Ttl::parse(bad), Err(TtlError::Malformed), "{bad:?}");
        }
        for (bad, secs) in [("59s", 59), ("3601s", 3601), ("61m", 3660), ("2h", 7200)] {
            assert_eq!(Ttl::parse(bad), Err(TtlError::OutOfRange { secs }), "{bad}");
        }
    }

    #[test]
    fn shows_the_unit_it_fits() {
        let shown = |t: &str| Ttl::parse(t).unwrap().to_string();
        assert_eq!(shown("90s"), "90s");
        assert_eq!(shown("120s"), "2m (120 s)");
        assert_eq!(shown("1h"), "1h (3600 s)");
        assert_eq!(Ttl::default().to_string(), "none (GitHub's hour)");
    }
}
