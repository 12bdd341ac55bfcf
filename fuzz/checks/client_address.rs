//! `client_address` and the address ranges it uses, over untrusted bytes. The input is an
//! `X-Forwarded-For` value, a NUL, a `Forwarded` value (a part that is absent or empty is no
//! header). Never panics; a peer that is not a trusted proxy is always the client, whatever the
//! headers say; a trusted proxy without headers is the client itself. Each line of the input is
//! also tried as a range: an accepted one prints in a form that parses back to the same range.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use kitebridge::{Cidr, CidrSet, client_address};

pub fn check(data: &[u8]) {
    let trusted = CidrSet::parse_list("10.0.0.0/8, fd00::/8, 127.0.0.1").unwrap();
    let mut parts = data.splitn(2, |&b| b == 0);
    let xff = header(parts.next());
    let forwarded = header(parts.next());

    let outsider: IpAddr = "203.0.113.1".parse().unwrap();
    assert_eq!(
        client_address(outsider, &trusted, &xff, &forwarded),
        Ok(outsider),
        "an untrusted peer's headers were believed"
    );
    let proxy: IpAddr = "10.0.0.1".parse().unwrap();
    let _ = client_address(proxy, &trusted, &xff, &forwarded);
    if xff.is_empty() && forwarded.is_empty() {
        assert_eq!(client_address(proxy, &trusted, &[], &[]), Ok(proxy));
    }

    for line in data.split(|&b| b == b'\n') {
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(cidr) = Cidr::parse(text) {
            let shown = cidr.to_string();
            assert_eq!(
                Cidr::parse(&shown),
                Ok(cidr),
                "{text:?} printed as {shown:?}"
            );
        }
        let _ = CidrSet::parse_list(text);
    }
}

/// A header's values: none for an absent or empty part.
fn header(part: Option<&[u8]>) -> Vec<&[u8]> {
    part.filter(|p| !p.is_empty()).into_iter().collect()
}
