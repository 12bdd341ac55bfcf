//! Time as Unix seconds, and RFC 3339 in UTC — written by hand so no date crate is needed.
//!
//! Functions take `now` as a parameter; only [`now_unix`] and [`now_unix_millis`] read the clock.
#![forbid(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn now_unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 → (year, month, day). Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01. Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds → `2026-11-20T10:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, secs);
    out.push('Z');
    out
}

/// Unix milliseconds → `2026-11-20T10:00:00.123Z` (the audit record's `time`).
pub fn rfc3339_millis(millis: u64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, millis / 1000);
    out.push('.');
    push_padded(&mut out, millis % 1000, 3);
    out.push('Z');
    out
}

/// `2026-11-20T10:00:00`, without the zone (written without `format!`: it is on every audit
/// record's path).
fn push_rfc3339(out: &mut String, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    match u64::try_from(y) {
        Ok(y) => push_padded(out, y, 4),
        Err(_) => out.push_str(&format!("{y:04}")),
    }
    out.push('-');
    push_padded(out, u64::from(m), 2);
    out.push('-');
    push_padded(out, u64::from(d), 2);
    out.push('T');
    push_padded(out, rem / 3600, 2);
    out.push(':');
    push_padded(out, (rem % 3600) / 60, 2);
    out.push(':');
    push_padded(out, rem % 60, 2);
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut v = value;
    loop {
        at -= 1;
        if let Some(slot) = digits.get_mut(at) {
            *slot = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || at == 0 {
            break;
        }
    }
    let start = at.min(digits.len().saturating_sub(width));
    for &b in digits.get(start..).unwrap_or_default() {
        out.push(char::from(b));
    }
}

/// Parses an RFC 3339 UTC time as GitHub writes `expires_at` (`2026-11-20T10:00:00Z`, optional
/// fractional seconds, `Z` or a numeric offset) into Unix seconds. `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = frac.get(digits..)?;
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec) - offset;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_and_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_763_632_800), "2025-11-20T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_763_632_800_123),
            "2025-11-20T10:00:00.123Z"
        );
    }

    #[test]
    fn formats_as_format_would_across_the_range() {
        let by_format = |secs: u64| {
            let (y, m, d) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            )
        };
        let mut t = 0u64;
        while t < 400_000_000_000 {
            assert_eq!(rfc3339(t), by_format(t), "{t}");
            t = t * 3 + 7_919;
        }
        for t in [
            59,
            3_599,
            86_399,
            253_402_300_799,
            253_402_300_800,
            u64::MAX / 1000,
        ] {
            assert_eq!(rfc3339(t), by_format(t), "{t}");
        }
        assert_eq!(rfc3339_millis(7), "1970-01-01T00:00:00.007Z");
        assert_eq!(rfc3339_millis(61_050), "1970-01-01T00:01:01.050Z");
    }

    #[test]
    fn parses_what_it_formats_and_github_forms() {
        for t in [0u64, 951_782_400, 1_763_632_800, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2025-11-20T10:00:00.5Z"), Some(1_763_632_800));
        assert_eq!(
            parse_rfc3339("2025-11-20T11:00:00+01:00"),
            Some(1_763_632_800)
        );
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2025-11-20",
            "2025-13-20T10:00:00Z",
            "2025-11-20T10:00:00",
            "2025-11-20T1a:00:00Z",
            "2025-11-20T10:00:00.Z",
            "2025-11-20T10:00:00+0100",
            "+025-11-20T10:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
