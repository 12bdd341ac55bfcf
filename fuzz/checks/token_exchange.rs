//! `exchange::parse_request` (RFC 8693 `POST /oauth/token`): never panics; an accepted request
//! came from a form content type and a form body with no repeated parameter, the token-exchange
//! grant and a non-empty subject token, and names a valid repository, a non-empty scope and an
//! `expires_in` of 60–3600 decimal seconds. The input's first line is the `Content-Type` value
//! (no line: no header); the rest is the body.
#![forbid(unsafe_code)]

use kitebridge::{
    GRANT_TYPE, is_valid_owner, is_valid_repo_name, parse_exchange_request as parse_request,
    parse_urlencoded,
};

pub fn check(data: &[u8]) {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => {
            let (line, rest) = data.split_at(at);
            (Some(line), rest.get(1..).unwrap_or_default())
        }
        None => (None, data),
    };
    let Ok(request) = parse_request(content_type, body, "github.com") else {
        return;
    };
    assert!(content_type.is_some(), "accepted without a content type");
    let form = parse_urlencoded(body).expect("an accepted body is a form");
    let value = |name: &str| {
        let mut values = form
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        assert!(values.next().is_none(), "{name} repeated");
        first
    };
    assert_eq!(value("grant_type"), Some(GRANT_TYPE));
    assert_eq!(value("subject_token"), Some(request.subject_token.as_str()));
    assert!(!request.subject_token.is_empty(), "empty subject token");
    if value("audience").is_none() {
        assert_eq!(request.profile.to_string(), "pipeline:default");
    }
    if let Some((owner, name)) = &request.resource {
        assert!(
            is_valid_owner(owner) && is_valid_repo_name(name),
            "{owner:?}/{name:?}"
        );
    }
    if let Some(scope) = &request.scope {
        assert!(!scope.is_empty(), "empty scope accepted");
    }
    match (request.expires_in, value("expires_in")) {
        (None, None) => {}
        (Some(secs), Some(text)) => {
            assert!((60..=3600).contains(&secs), "expires_in {secs} accepted");
            assert!(
                text.bytes().all(|b| b.is_ascii_digit()),
                "{text:?} accepted"
            );
        }
        (read, given) => panic!("expires_in {given:?} read as {read:?}"),
    }
}
