//! `credential::parse_pairs` / `parse_request` / `format_pairs`: never panic; pairs hold no line
//! break and no `=` in keys; a request's attributes are the pairs' single non-empty, control-free
//! values; and formatting parsed pairs parses back to the same pairs, for pairs that the format
//! can carry (no `\n`, no value or key ending in `\r`, no empty key, no `=` in a key).
#![forbid(unsafe_code)]

use kitebridge::{
    CredentialError, MAX_CREDENTIAL_INPUT as MAX_INPUT, format_credential_pairs as format_pairs,
    parse_credential_pairs as parse_pairs, parse_credential_request as parse_request,
};

pub fn check(data: &[u8]) {
    let request = parse_request(data);
    let pairs = match parse_pairs(data) {
        Ok(pairs) => pairs,
        Err(error) => {
            assert_eq!(
                request,
                Err(error),
                "parse_request and parse_pairs disagree"
            );
            return;
        }
    };
    for (key, value) in &pairs {
        assert!(!key.contains(['=', '\n']), "key {key:?}");
        assert!(!value.contains('\n'), "value {value:?}");
    }
    if let Ok(request) = &request {
        for (key, got) in [
            ("protocol", &request.protocol),
            ("host", &request.host),
            ("path", &request.path),
        ] {
            let values: Vec<&String> = pairs
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(values, [got], "{key} is not the one value sent");
            assert!(
                !got.is_empty() && !got.chars().any(char::is_control),
                "{key} {got:?}"
            );
        }
    }
    if pairs.iter().all(|(key, value)| representable(key, value)) {
        round_trip(&pairs);
    }
}

fn representable(key: &str, value: &str) -> bool {
    !key.is_empty()
        && !key.contains(['=', '\n'])
        && !key.ends_with('\r')
        && !value.contains('\n')
        && !value.ends_with('\r')
}

fn round_trip(pairs: &[(String, String)]) {
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let text = format_pairs(&borrowed);
    match parse_pairs(text.as_bytes()) {
        Ok(back) => assert_eq!(back, pairs, "formatted pairs parse back differently"),
        // The format adds a newline per pair and a final empty line, so pairs read from an input
        // at the size limit may format to just over it.
        Err(CredentialError::TooLarge) => assert!(text.len() > MAX_INPUT),
        Err(error) => panic!("formatted pairs do not parse back: {error:?}"),
    }
}
