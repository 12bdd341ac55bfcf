//! `shared::resp::parse`, the cache server's reply parser: never panics; a complete reply used
//! no more than the input, stays within the bounds, is canonical (encoding it gives back exactly
//! the bytes it was read from) and reads the same off its own bytes; every strict prefix of those
//! bytes needs more bytes (never an error); and an input that needs more bytes is shorter than
//! the whole-reply bound.
#![forbid(unsafe_code)]

use kitebridge::{
    MAX_RESP_BULK as MAX_BULK, MAX_RESP_DEPTH as MAX_DEPTH, MAX_RESP_ELEMENTS as MAX_ELEMENTS,
    MAX_RESP_REPLY as MAX_REPLY, RespParsed as Parsed, RespReply as Reply,
    encode_resp_reply as encode, parse_resp_reply as parse,
};

pub fn check(data: &[u8]) {
    match parse(data) {
        Err(_) => {}
        Ok(Parsed::Partial) => assert!(data.len() < MAX_REPLY, "partial at {} bytes", data.len()),
        Ok(Parsed::Complete { reply, used }) => {
            assert!(
                used > 0 && used <= data.len(),
                "used {used} of {}",
                data.len()
            );
            assert!(used <= MAX_REPLY, "reply of {used} bytes");
            bounded(&reply, 1);
            let bytes = &data[..used];
            assert_eq!(encode(&reply), bytes, "not canonical");
            assert_eq!(
                parse(bytes),
                Ok(Parsed::Complete {
                    reply: reply.clone(),
                    used
                })
            );
            for cut in 0..used {
                assert_eq!(parse(&bytes[..cut]), Ok(Parsed::Partial), "prefix of {cut}");
            }
        }
    }
}

fn bounded(reply: &Reply, depth: usize) {
    match reply {
        Reply::Bulk(bytes) => assert!(bytes.len() <= MAX_BULK),
        Reply::Array(items) => {
            assert!(depth <= MAX_DEPTH, "nested {depth} deep");
            assert!(items.len() <= MAX_ELEMENTS);
            for item in items {
                bounded(item, depth + 1);
            }
        }
        _ => {}
    }
}
