//! `http::head::parse_head`: never panics; a complete head lies within the input and the head
//! limit, its target is in origin form within the URI limit, and it parses the same on its own.
#![forbid(unsafe_code)]

use kitebridge::{Framing, MAX_HEAD_BYTES, MAX_URI_BYTES, parse_head};

pub fn check(data: &[u8]) {
    let (head, used) = match parse_head(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(
                data.len() < MAX_HEAD_BYTES,
                "a full buffer must not be partial"
            );
            return;
        }
        Err(_) => return,
    };
    assert!(
        used <= data.len(),
        "consumed {used} of {} bytes",
        data.len()
    );
    assert!(used <= MAX_HEAD_BYTES, "head of {used} bytes accepted");
    assert!(head.target.starts_with('/'), "target {:?}", head.target);
    assert!(
        head.target.len() <= MAX_URI_BYTES,
        "target of {} bytes",
        head.target.len()
    );
    assert!(
        head.http11 || head.framing != Framing::Chunked,
        "chunked framing on HTTP/1.0"
    );
    let alone = parse_head(data.get(..used).unwrap_or_default());
    let Ok(Some((again, used_again))) = alone else {
        panic!("the head alone does not parse: {alone:?}");
    };
    assert_eq!(used_again, used, "the head alone has another length");
    assert_eq!(
        again.framing, head.framing,
        "the head alone has another framing"
    );
}
