//! git's credential-helper format (`key=value` lines), as the git-credentials routes read and
//! write it.
#![forbid(unsafe_code)]

use std::fmt;

/// Largest input accepted (the HTTP edge caps bodies lower already).
pub const MAX_INPUT: usize = 20480;

/// The attributes a request must carry, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRequest {
    pub protocol: String,
    pub host: String,
    pub path: String,
}

/// Why a credential request was refused (400).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not UTF-8.
    NotUtf8,
    /// Over [`MAX_INPUT`] bytes.
    TooLarge,
    /// A required attribute is absent or empty.
    Missing(&'static str),
    /// A required attribute appears twice.
    Repeated(&'static str),
    /// A value holds a NUL or another control character.
    ControlCharacter(&'static str),
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::NotUtf8 => f.write_str("git credential input is not utf-8"),
            CredentialError::TooLarge => f.write_str("git credential input too large"),
            CredentialError::Missing(k) => write!(f, "git credential input lacks {k}"),
            CredentialError::Repeated(k) => write!(f, "git credential input repeats {k}"),
            CredentialError::ControlCharacter(k) => {
                write!(f, "git credential {k} holds a control character")
            }
        }
    }
}

impl std::error::Error for CredentialError {}

/// Every `key=value` pair up to the first empty line or the end (a `\r` before `\n` is dropped;
/// lines without `=` are skipped).
pub fn parse_pairs(input: &[u8]) -> Result<Vec<(String, String)>, CredentialError> {
    if input.len() > MAX_INPUT {
        return Err(CredentialError::TooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| CredentialError::NotUtf8)?;
    let mut pairs = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            pairs.push((key.to_owned(), value.to_owned()));
        }
    }
    Ok(pairs)
}

/// Reads `protocol`, `host` and `path` (each required, once); other keys are ignored.
pub fn parse_request(input: &[u8]) -> Result<CredentialRequest, CredentialError> {
    let pairs = parse_pairs(input)?;
    let one = |key: &'static str| -> Result<String, CredentialError> {
        let mut values = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        let value = values
            .next()
            .filter(|v| !v.is_empty())
            .ok_or(CredentialError::Missing(key))?;
        if values.next().is_some() {
            return Err(CredentialError::Repeated(key));
        }
        if value.chars().any(char::is_control) {
            return Err(CredentialError::ControlCharacter(key));
        }
        Ok(value.clone())
    };
    Ok(CredentialRequest {
        protocol: one("protocol")?,
        host: one("host")?,
        path: one("path")?,
    })
}

/// Serialises pairs as git expects them: `key=value\n` each, then an empty line.
pub fn format_pairs(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(p: &str, h: &str, path: &str) -> CredentialRequest {
        CredentialRequest {
            protocol: p.into(),
            host: h.into(),
            path: path.into(),
        }
    }

    #[test]
    fn table() {
        let ok: &[(&str, &[u8], CredentialRequest)] = &[
            ("plugin body, no trailing newline", b"protocol=https\nhost=github.com\npath=acme/widgets.git", req("https", "github.com", "acme/widgets.git")),
            ("crlf", b"protocol=https\r\nhost=github.com\r\npath=a/b\r\n\r\n", req("https", "github.com", "a/b")),
            ("modern git extras", b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=github.com\npath=a/b\nwwwauth[]=Basic realm=\"GitHub\"\nstate[]=x\nurl=https://github.com/a/b\n", req("https", "github.com", "a/b")),
            ("line without =", b"protocol=https\nnonsense\nhost=h\npath=p", req("https", "h", "p")),
            ("value with =", b"protocol=https\nhost=h\npath=a=b", req("https", "h", "a=b")),
        ];
        for (name, input, want) in ok {
            assert_eq!(parse_request(input).as_ref(), Ok(want), "{name}");
        }
        let bad: &[(&str, &[u8], CredentialError)] = &[
            (
                "no path",
                b"protocol=https\nhost=github.com",
                CredentialError::Missing("path"),
            ),
            (
                "path after blank line",
                b"protocol=https\nhost=h\n\npath=p",
                CredentialError::Missing("path"),
            ),
            (
                "empty host",
                b"protocol=https\nhost=\npath=p",
                CredentialError::Missing("host"),
            ),
            (
                "two hosts",
                b"protocol=https\nhost=a\nhost=b\npath=p",
                CredentialError::Repeated("host"),
            ),
            (
                "nul in path",
                b"protocol=https\nhost=a\npath=p\x00",
                CredentialError::ControlCharacter("path"),
            ),
            (
                "not utf-8",
                b"protocol=https\nhost=\xff\npath=p",
                CredentialError::NotUtf8,
            ),
            ("empty", b"", CredentialError::Missing("protocol")),
        ];
        for (name, input, want) in bad {
            assert_eq!(parse_request(input).as_ref(), Err(want), "{name}");
        }
    }

    #[test]
    fn formatted_pairs_parse_back() {
        let pairs = [
            ("protocol", "https"),
            ("host", "github.com"),
            ("password", "ghs_a.b-c_d"),
        ];
        let text = format_pairs(&pairs);
        assert!(text.ends_with("\n\n"));
        let back = parse_pairs(text.as_bytes()).unwrap();
        let back: Vec<(&str, &str)> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(back, pairs);
    }
}
