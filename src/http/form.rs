//! `application/x-www-form-urlencoded` (query strings and the token-exchange body).
#![forbid(unsafe_code)]

use std::fmt;

/// Why a query string or form body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormError {
    /// `%` not followed by two hex digits.
    BadPercentEscape,
    /// A name or value that is not UTF-8 once decoded.
    NotUtf8,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::BadPercentEscape => f.write_str("malformed percent escape"),
            FormError::NotUtf8 => f.write_str("decoded text is not utf-8"),
        }
    }
}

impl std::error::Error for FormError {}

/// Splits on `&`, then on the first `=`; decodes `+` as space and `%XX`. Empty pairs are skipped;
/// a pair without `=` has an empty value. Order and repetitions are kept for the caller to judge.
pub fn parse_urlencoded(input: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (
                    pair.get(..i).unwrap_or_default(),
                    pair.get(i + 1..).unwrap_or_default(),
                ),
                None => (pair, &[][..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(input: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hi = bytes.next().and_then(|&c| (c as char).to_digit(16));
                let lo = bytes.next().and_then(|&c| (c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(FormError::BadPercentEscape);
                };
                (hi * 16 + lo) as u8
            }
            other => other,
        });
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("a=1&b=2", &[("a", "1"), ("b", "2")]),
            ("a=1&&a=2", &[("a", "1"), ("a", "2")]),
            ("flag", &[("flag", "")]),
            ("k=a%20b+c%3D", &[("k", "a b c=")]),
            ("u=%C3%A9", &[("u", "é")]),
            ("e==x", &[("e", "=x")]),
        ];
        for (input, want) in ok {
            let got = parse_urlencoded(input.as_bytes()).unwrap();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "{input:?}");
        }
        for bad in ["a=%", "a=%4", "a=%zz", "%g1=x"] {
            assert_eq!(
                parse_urlencoded(bad.as_bytes()),
                Err(FormError::BadPercentEscape),
                "{bad:?}"
            );
        }
        assert_eq!(parse_urlencoded(b"a=%ff"), Err(FormError::NotUtf8));
    }
}
