//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), IPv4 and IPv6: parsed from
//! untrusted text (total, never panics) and tested against an address.
//!
//! A bare address is a range of that one host (`/32`, `/128`). Bits set beyond the prefix length
//! (`10.1.0.0/8`) are an error, not silently cleared: such an entry is usually a typo for a
//! narrower range. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`) are treated as the IPv4
//! address they map, on both sides, so a dual-stack listener's peers match IPv4 ranges.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest range text accepted (a full IPv6 address with a prefix is at most 43 bytes).
pub const MAX_CIDR_BYTES: usize = 64;

/// An address range: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a range does not parse. `Display` never shows the text itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// Nothing given.
    Empty,
    /// Longer than [`MAX_CIDR_BYTES`].
    TooLong { len: usize },
    /// The part before `/` is not an IPv4 or IPv6 address.
    NotAnAddress,
    /// The part after `/` is not a decimal number.
    PrefixNotANumber,
    /// The prefix length is over 32 (IPv4) or 128 (IPv6).
    PrefixTooLong { prefix: u32, max: u8 },
    /// The address has bits set beyond the prefix length.
    HostBitsSet,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Empty => f.write_str("empty address range"),
            CidrError::TooLong { len } => {
                write!(f, "address range is {len} bytes, over {MAX_CIDR_BYTES}")
            }
            CidrError::NotAnAddress => f.write_str("not an ip address"),
            CidrError::PrefixNotANumber => f.write_str("prefix length is not a decimal number"),
            CidrError::PrefixTooLong { prefix, max } => {
                write!(f, "prefix length {prefix} is over {max}")
            }
            CidrError::HostBitsSet => f.write_str("address has bits set beyond the prefix length"),
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` or a bare `ADDRESS`. Nothing is trimmed.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        if text.is_empty() {
            return Err(CidrError::Empty);
        }
        if text.len() > MAX_CIDR_BYTES {
            return Err(CidrError::TooLong { len: text.len() });
        }
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| CidrError::NotAnAddress)?;
        let max: u8 = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            Some(digits) => {
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(CidrError::PrefixNotANumber);
                }
                let value: u32 = digits.parse().map_err(|_| CidrError::PrefixNotANumber)?;
                u8::try_from(value)
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or(CidrError::PrefixTooLong { prefix: value, max })?
            }
        };
        let cidr = canonical(address, prefix);
        if cidr.masked(cidr.network) != cidr.network {
            return Err(CidrError::HostBitsSet);
        }
        Ok(cidr)
    }

    /// The prefix length (0: every address of the family).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = matches!(
            (self.network, ip),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && self.masked(ip) == self.network
    }

    /// `ip` with the bits beyond the prefix cleared (`ip` of the range's family).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        let host_bits = |width: u8| u32::from(width.saturating_sub(self.prefix));
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(host_bits(32)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(v4.to_bits() & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(host_bits(128)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(v6.to_bits() & mask))
            }
        }
    }
}

/// An IPv4-mapped IPv6 range of at least /96 is the IPv4 range it maps.
fn canonical(address: IpAddr, prefix: u8) -> Cidr {
    match address {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Cidr {
                network: IpAddr::V4(v4),
                prefix: prefix - 96,
            },
            None => Cidr {
                network: address,
                prefix,
            },
        },
        _ => Cidr {
            network: address,
            prefix,
        },
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A list of ranges; an address is in the set when it is in any of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrSet(Vec<Cidr>);

/// An entry of a comma-separated list that does not parse: its position (from 1) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListError {
    pub entry: usize,
    pub error: CidrError,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {}", self.entry, self.error)
    }
}

impl CidrSet {
    /// The set of `ranges`.
    pub fn new(ranges: Vec<Cidr>) -> CidrSet {
        CidrSet(ranges)
    }

    /// Parses a comma-separated list (`10.0.0.0/8, ::1/128`); spaces and tabs around each entry
    /// are ignored, an empty entry is an error. Every bad entry is reported.
    pub fn parse_list(text: &str) -> Result<CidrSet, Vec<ListError>> {
        let mut ranges = Vec::new();
        let mut problems = Vec::new();
        for (i, entry) in text.split(',').enumerate() {
            match Cidr::parse(entry.trim_matches([' ', '\t'])) {
                Ok(cidr) => ranges.push(cidr),
                Err(error) => problems.push(ListError {
                    entry: i + 1,
                    error,
                }),
            }
        }
        if problems.is_empty() {
            Ok(CidrSet(ranges))
        } else {
            Err(problems)
        }
    }

    /// Whether `ip` is in any range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The ranges, in the order given.
    pub fn ranges(&self) -> &[Cidr] {
        &self.0
    }

    /// Whether the set has no range (it contains no address).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `10.0.0.0/8, 2001:db8::/32`.
impl fmt::Display for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<&str, CidrError>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("192.0.2.7", Ok("192.0.2.7/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("::1", Ok("::1/128")),
            ("::/0", Ok("::/0")),
            ("::ffff:10.0.0.0/104", Ok("10.0.0.0/8")),
            ("::ffff:192.0.2.7", Ok("192.0.2.7/32")),
            ("64:ff9b::/96", Ok("64:ff9b::/96")),
            ("::ffff:0:0/96", Ok("0.0.0.0/0")),
            ("", Err(CidrError::Empty)),
            ("10.0.0.0/", Err(CidrError::PrefixNotANumber)),
            ("10.0.0.0/+8", Err(CidrError::PrefixNotANumber)),
            ("10.0.0.0/ 8", Err(CidrError::PrefixNotANumber)),
            ("10.0.0.0/0008", Err(CidrError::PrefixNotANumber)),
            ("10.0.0.0/8/8", Err(CidrError::PrefixNotANumber)),
            (
                "10.0.0.0/33",
                Err(CidrError::PrefixTooLong {
                    prefix: 33,
                    max: 32,
                }),
            ),
            (
                "::/129",
                Err(CidrError::PrefixTooLong {
                    prefix: 129,
                    max: 128,
                }),
            ),
            (
                "10.0.0.0/999",
                Err(CidrError::PrefixTooLong {
                    prefix: 999,
                    max: 32,
                }),
            ),
            ("10.1.0.0/8", Err(CidrError::HostBitsSet)),
            ("2001:db8::1/32", Err(CidrError::HostBitsSet)),
            ("10.0.0", Err(CidrError::NotAnAddress)),
            ("010.0.0.0/8", Err(CidrError::NotAnAddress)),
            (" 10.0.0.0/8", Err(CidrError::NotAnAddress)),
            ("fe80::1%eth0", Err(CidrError::NotAnAddress)),
            ("[::1]/128", Err(CidrError::NotAnAddress)),
            ("localhost", Err(CidrError::NotAnAddress)),
            ("/8", Err(CidrError::NotAnAddress)),
            ("1.2.3.4/８", Err(CidrError::PrefixNotANumber)),
            (
                "1111:2222:3333:4444:5555:6666:7777:8888/128xxxxxxxxxxxxxxxxxxxxxxxx",
                Err(CidrError::TooLong { len: 67 }),
            ),
        ];
        for (text, want) in cases {
            let got = Cidr::parse(text).map(|c| c.to_string());
            let want = want.clone().map(str::to_owned);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn contains_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "192.0.2.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            (
                "2001:db8:1:2::/64",
                "2001:db8:1:2:ffff:ffff:ffff:ffff",
                true,
            ),
            ("2001:db8:1:2::/64", "2001:db8:1:3::", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
            ("127.0.0.0/8", "::1", false),
            ("::ffff:127.0.0.0/104", "127.0.0.1", true),
            ("10.0.0.0/31", "10.0.0.1", true),
            ("10.0.0.0/31", "10.0.0.2", false),
        ];
        for (range, ip, want) in cases {
            let cidr = Cidr::parse(range).unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(cidr.contains(ip), *want, "{range} ∋ {ip}");
        }
    }

    #[test]
    fn lists_report_every_bad_entry() {
        let set = CidrSet::parse_list("10.0.0.0/8, ::1/128,\t192.0.2.0/24").unwrap();
        assert_eq!(set.to_string(), "10.0.0.0/8, ::1/128, 192.0.2.0/24");
        assert!(set.contains("::1".parse().unwrap()));
        assert!(set.contains("192.0.2.200".parse().unwrap()));
        assert!(!set.contains("192.0.3.1".parse().unwrap()));
        let errors = CidrSet::parse_list("10.0.0.0/8,,nope, 10.0.0.1/8").unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "entry 2: empty address range",
                "entry 3: not an ip address",
                "entry 4: address has bits set beyond the prefix length"
            ]
        );
        assert!(!CidrSet::default().contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn parsing_is_total_over_arbitrary_text() {
        let alphabet = [
            "1", "0", ".", ":", "/", "f", "%", "[", "]", "9", "ff", "::", " ",
        ];
        // Every string of up to 4 pieces: no panic, and a parsed range always contains itself.
        let mut stack = vec![String::new()];
        while let Some(text) = stack.pop() {
            if let Ok(cidr) = Cidr::parse(&text) {
                assert!(cidr.contains(cidr.network), "{text:?}");
            }
            if text.len() < 5 {
                for piece in alphabet {
                    stack.push(format!("{text}{piece}"));
                }
            }
        }
    }
}
