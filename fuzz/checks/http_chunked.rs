//! `http::chunked::ChunkedDecoder`: the body never passes the cap, and decoding the input in one
//! piece or in pieces (the first input byte is the piece length) gives the same body and the same
//! outcome: consumed count and completion, or error class.
#![forbid(unsafe_code)]

use std::mem::{Discriminant, discriminant};

use kitebridge::{ChunkError, ChunkedDecoder, MAX_BODY_BYTES};

/// How a decoding run ended: bytes consumed and whether the message is complete, or the error
/// class (a failed `decode` call does not say how much of its piece it used).
type Outcome = Result<(usize, bool), Discriminant<ChunkError>>;

pub fn check(data: &[u8]) {
    let Some((&stride, input)) = data.split_first() else {
        return;
    };
    let (whole_body, whole) = decode_in_pieces(input, input.len().max(1));
    let (pieces_body, pieces) = decode_in_pieces(input, usize::from(stride).max(1));
    assert!(
        whole_body.len() <= MAX_BODY_BYTES,
        "body of {} bytes",
        whole_body.len()
    );
    if let Ok((used, done)) = whole {
        assert!(used <= input.len(), "consumed {used} of {}", input.len());
        assert!(
            done || used == input.len(),
            "an unfinished body left input unread"
        );
    }
    assert_eq!(
        whole, pieces,
        "one piece and pieces of {stride} end differently"
    );
    assert!(
        whole_body == pieces_body,
        "one piece and pieces of {stride} decode different bodies ({} and {} bytes)",
        whole_body.len(),
        pieces_body.len()
    );
}

/// Feeds `input` in pieces of `stride` bytes, as the server does while reading, stopping at the
/// end of the message or the first error.
fn decode_in_pieces(input: &[u8], stride: usize) -> (Vec<u8>, Outcome) {
    let mut decoder = ChunkedDecoder::new(MAX_BODY_BYTES);
    let mut body = Vec::new();
    let mut used = 0;
    for piece in input.chunks(stride) {
        match decoder.decode(piece, &mut body) {
            Ok(n) => used += n,
            Err(error) => return (body, Err(discriminant(&error))),
        }
        if decoder.is_done() {
            break;
        }
    }
    (body, Ok((used, decoder.is_done())))
}
