//! The client's address behind trusted proxies (`SERVER_TRUSTED_PROXIES`): pure functions over
//! the TCP peer and the untrusted bytes of `X-Forwarded-For` and RFC 7239 `Forwarded`.
//!
//! Only when the TCP peer is a trusted proxy are these headers read at all; otherwise the client
//! is the peer and the headers are ignored (a client cannot claim another address by sending
//! them). Behind trusted proxies the hops are read from the right (the one the nearest proxy
//! added) leftwards, skipping every hop that is itself a trusted proxy: the first that is not is
//! the client. Everything left of it was written by the client and is never looked at. If every
//! hop is a trusted proxy, the left-most is the client.
//!
//! The client address must be known, not guessed: a hop that must be read and is no address
//! (garbage, `unknown`, an obfuscated `_name`, a `Forwarded` element without `for=`), or the two
//! headers naming different clients (a proxy that writes one of them may pass the other through
//! from the client), is an error, and the request is refused.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cidr::CidrSet;

/// Why the client's address cannot be told from a trusted proxy's headers. `Display` never
/// shows header bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedError {
    /// The header (named) is not text, or its quoting is broken.
    Malformed { header: &'static str },
    /// The hop at `position` from the right (1 = the nearest proxy's) that names the client is
    /// not an IP address.
    NotAnAddress {
        header: &'static str,
        position: usize,
    },
    /// `X-Forwarded-For` and `Forwarded` name different clients.
    Disagree {
        x_forwarded_for: IpAddr,
        forwarded: IpAddr,
    },
}

const XFF: &str = "x-forwarded-for";
const FORWARDED: &str = "forwarded";

impl fmt::Display for ForwardedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardedError::Malformed { header } => write!(f, "{header}: malformed"),
            ForwardedError::NotAnAddress { header, position } => write!(
                f,
                "{header}: hop {position} from the right is not an ip address"
            ),
            ForwardedError::Disagree {
                x_forwarded_for,
                forwarded,
            } => write!(
                f,
                "x-forwarded-for names {x_forwarded_for} but forwarded names {forwarded}"
            ),
        }
    }
}

impl std::error::Error for ForwardedError {}

/// The client's address: `peer` unless `peer` is in `trusted`; then the client the headers name
/// (`x_forwarded_for` and `forwarded` are every value of each header, in order), or `peer`
/// when neither header is present. See the module documentation.
pub fn client_address(
    peer: IpAddr,
    trusted: &CidrSet,
    x_forwarded_for: &[&[u8]],
    forwarded: &[&[u8]],
) -> Result<IpAddr, ForwardedError> {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return Ok(peer);
    }
    let from_xff = match x_forwarded_for {
        [] => None,
        values => Some(walk(XFF, &xff_hops(values)?, trusted)?),
    };
    let from_forwarded = match forwarded {
        [] => None,
        values => Some(walk(FORWARDED, &forwarded_hops(values)?, trusted)?),
    };
    match (from_xff, from_forwarded) {
        (None, None) => Ok(peer),
        (Some(ip), None) | (None, Some(ip)) => Ok(ip),
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(a), Some(b)) => Err(ForwardedError::Disagree {
            x_forwarded_for: a,
            forwarded: b,
        }),
    }
}

/// The first hop from the right that is not a trusted proxy (the left-most if all are).
/// `hops` are the nodes as written, left to right; `None` for a hop without a node.
fn walk(
    header: &'static str,
    hops: &[Option<&str>],
    trusted: &CidrSet,
) -> Result<IpAddr, ForwardedError> {
    let mut client = None;
    for (i, hop) in hops.iter().rev().enumerate() {
        let ip = hop
            .and_then(node_address)
            .ok_or(ForwardedError::NotAnAddress {
                header,
                position: i + 1,
            })?;
        client = Some(ip);
        if !trusted.contains(ip) {
            break;
        }
    }
    // No hop at all (an empty header) names nobody: the nearest proxy told nothing.
    client.ok_or(ForwardedError::NotAnAddress {
        header,
        position: 1,
    })
}

/// The hops of every `X-Forwarded-For` value, left to right: comma-separated, spaces and tabs
/// around each ignored.
fn xff_hops<'a>(values: &[&'a [u8]]) -> Result<Vec<Option<&'a str>>, ForwardedError> {
    let mut hops = Vec::new();
    for value in values {
        let text =
            std::str::from_utf8(value).map_err(|_| ForwardedError::Malformed { header: XFF })?;
        hops.extend(
            text.split(',')
                .map(|hop| Some(hop.trim_matches([' ', '\t']))),
        );
    }
    Ok(hops)
}

/// The `for=` node of each element of every `Forwarded` value, left to right (RFC 7239:
/// elements separated by `,`, pairs by `;`, values a token or a quoted string). An element
/// without `for=`, or with it twice, has no node.
fn forwarded_hops<'a>(values: &[&'a [u8]]) -> Result<Vec<Option<&'a str>>, ForwardedError> {
    let malformed = ForwardedError::Malformed { header: FORWARDED };
    let mut hops = Vec::new();
    for value in values {
        let text = std::str::from_utf8(value).map_err(|_| malformed.clone())?;
        for element in split_unquoted(text, ',').ok_or_else(|| malformed.clone())? {
            let mut node = None;
            let mut count = 0;
            for pair in split_unquoted(element, ';').ok_or_else(|| malformed.clone())? {
                let Some((name, value)) = pair.split_once('=') else {
                    if pair.trim_matches([' ', '\t']).is_empty() {
                        continue;
                    }
                    return Err(malformed);
                };
                if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("for") {
                    count += 1;
                    node = unquote(value.trim_matches([' ', '\t']));
                }
            }
            hops.push(node.filter(|_| count == 1));
        }
    }
    Ok(hops)
}

/// `text` split at each `separator` outside a quoted string; `None` for an unterminated quote.
fn split_unquoted(text: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(text.get(start..i)?);
            start = i + c.len_utf8();
        }
    }
    if quoted {
        return None;
    }
    parts.push(text.get(start..)?);
    Some(parts)
}

/// A token as is, or a quoted string's content (an address never holds a `\` escape, so one
/// makes it no address).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .filter(|inner| !inner.contains(['\\', '"'])),
        None => Some(value),
    }
}

/// The address of a node: `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]`, with an optional
/// `:PORT` after an IPv4 address or a bracketed IPv6 one. `None` for anything else (`unknown`,
/// `_hidden`, a host name).
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        return (after.is_empty() || is_port(after.strip_prefix(':')?))
            .then_some(IpAddr::V6(ip).to_canonical());
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, port) = node.rsplit_once(':')?;
    let ip: Ipv4Addr = host.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// 1–5 decimal digits, at most 65535.
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn nodes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("192.0.2.7", Some("192.0.2.7")),
            ("192.0.2.7:4711", Some("192.0.2.7")),
            ("2001:db8::17", Some("2001:db8::17")),
            ("[2001:db8::17]", Some("2001:db8::17")),
            ("[2001:db8::17]:4711", Some("2001:db8::17")),
            ("::ffff:192.0.2.7", Some("192.0.2.7")),
            ("192.0.2.7:99999", None),
            ("192.0.2.7:", None),
            ("[2001:db8::17]4711", None),
            ("[192.0.2.7]", None),
            ("2001:db8::17:4711x", None),
            ("unknown", None),
            ("_hidden", None),
            ("example.com", None),
            ("", None),
            ("[", None),
        ];
        for (node, want) in cases {
            assert_eq!(node_address(node), want.map(ip), "{node:?}");
        }
    }

    #[test]
    fn client_addresses() {
        let trusted = CidrSet::parse_list("10.0.0.0/8, fd00::/8").unwrap();
        let (proxy, outsider) = (ip("10.0.0.2"), ip("203.0.113.9"));
        type Case<'a> = (
            IpAddr,
            &'a [&'a str],
            &'a [&'a str],
            Result<&'a str, ForwardedError>,
        );
        let cases: &[Case<'_>] = &[
            // An untrusted peer's headers are ignored, whatever they say.
            (outsider, &["198.51.100.1"], &[], Ok("203.0.113.9")),
            (outsider, &["garbage"], &["for=\""], Ok("203.0.113.9")),
            // A trusted peer without headers is the client.
            (proxy, &[], &[], Ok("10.0.0.2")),
            // The right-most hop that is not a trusted proxy; left of it is never read.
            (proxy, &["198.51.100.1"], &[], Ok("198.51.100.1")),
            (
                proxy,
                &["garbage, 192.0.2.1, 10.0.0.7"],
                &[],
                Ok("192.0.2.1"),
            ),
            (
                proxy,
                &["192.0.2.66", "192.0.2.1 , 10.0.0.7"],
                &[],
                Ok("192.0.2.1"),
            ),
            (proxy, &["10.9.9.9, 10.0.0.7"], &[], Ok("10.9.9.9")),
            (proxy, &["2001:db8::5, fd00::1"], &[], Ok("2001:db8::5")),
            (proxy, &["[2001:db8::5]:443"], &[], Ok("2001:db8::5")),
            // The hop that names the client must be an address.
            (
                proxy,
                &["192.0.2.1, unknown"],
                &[],
                Err(ForwardedError::NotAnAddress {
                    header: XFF,
                    position: 1,
                }),
            ),
            (
                proxy,
                &["192.0.2.1,,10.0.0.7"],
                &[],
                Err(ForwardedError::NotAnAddress {
                    header: XFF,
                    position: 2,
                }),
            ),
            (
                proxy,
                &[""],
                &[],
                Err(ForwardedError::NotAnAddress {
                    header: XFF,
                    position: 1,
                }),
            ),
            // RFC 7239.
            (
                proxy,
                &[],
                &["for=192.0.2.60;proto=http;by=203.0.113.43"],
                Ok("192.0.2.60"),
            ),
            (
                proxy,
                &[],
                &["for=198.51.100.17, For=\"[2001:db8:cafe::17]:4711\""],
                Ok("2001:db8:cafe::17"),
            ),
            (
                proxy,
                &[],
                &["for=192.0.2.1", "for=10.0.0.3;proto=https"],
                Ok("192.0.2.1"),
            ),
            (proxy, &[], &["for=\"a,b\", for=192.0.2.1"], Ok("192.0.2.1")),
            (
                proxy,
                &[],
                &["for=unknown"],
                Err(ForwardedError::NotAnAddress {
                    header: FORWARDED,
                    position: 1,
                }),
            ),
            (
                proxy,
                &[],
                &["proto=https;by=10.0.0.2"],
                Err(ForwardedError::NotAnAddress {
                    header: FORWARDED,
                    position: 1,
                }),
            ),
            (
                proxy,
                &[],
                &["for=192.0.2.1;for=192.0.2.2"],
                Err(ForwardedError::NotAnAddress {
                    header: FORWARDED,
                    position: 1,
                }),
            ),
            (
                proxy,
                &[],
                &["for=\"192.0.2.1"],
                Err(ForwardedError::Malformed { header: FORWARDED }),
            ),
            (
                proxy,
                &[],
                &["for"],
                Err(ForwardedError::Malformed { header: FORWARDED }),
            ),
            // Both headers: they must agree.
            (proxy, &["192.0.2.1"], &["for=192.0.2.1"], Ok("192.0.2.1")),
            (
                proxy,
                &["192.0.2.1"],
                &["for=192.0.2.2"],
                Err(ForwardedError::Disagree {
                    x_forwarded_for: ip("192.0.2.1"),
                    forwarded: ip("192.0.2.2"),
                }),
            ),
            // An IPv4-mapped peer is its IPv4 address.
            (ip("::ffff:10.0.0.2"), &["192.0.2.1"], &[], Ok("192.0.2.1")),
        ];
        for (peer, xff, fwd, want) in cases {
            let xff: Vec<&[u8]> = xff.iter().map(|v| v.as_bytes()).collect();
            let fwd: Vec<&[u8]> = fwd.iter().map(|v| v.as_bytes()).collect();
            let got = client_address(*peer, &trusted, &xff, &fwd);
            assert_eq!(got, want.clone().map(ip), "{peer} {xff:?} {fwd:?}");
        }
        // Not text.
        assert_eq!(
            client_address(proxy, &trusted, &[b"\xff"], &[]),
            Err(ForwardedError::Malformed { header: XFF })
        );
        // Without trusted proxies nothing is believed.
        assert_eq!(
            client_address(proxy, &CidrSet::default(), &[b"192.0.2.1"], &[]),
            Ok(proxy)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let trusted = CidrSet::parse_list("0.0.0.0/0, ::/0").unwrap();
        let pieces: [&[u8]; 12] = [
            b"for=", b"\"", b"[", b"]", b":", b",", b";", b"\\", b"1.2.3.4", b"::1", b" ", b"\xc3",
        ];
        // Every sequence of up to 5 pieces.
        let mut stack = vec![(Vec::new(), 0)];
        while let Some((bytes, depth)) = stack.pop() {
            let _ = client_address(ip("10.0.0.1"), &trusted, &[&bytes], &[&bytes]);
            if depth < 5 {
                for piece in pieces {
                    stack.push(([bytes.as_slice(), piece].concat(), depth + 1));
                }
            }
        }
    }
}
