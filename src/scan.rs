//! Finding a byte in a long run of bytes eight at a time ("SIMD within a register"): the JWT
//! checked for whitespace and every JSON string written are one to two kilobytes per request,
//! and testing them byte by byte was a visible part of a cached vend. An 8-byte word is tested
//! with a few integer operations; only a word that may hold a match is looked at byte by byte.
//! No `unsafe`, no target features: the same code on every CPU.
#![forbid(unsafe_code)]

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Nonzero if and only if some byte of `word` is below `n` (for `n` ≤ 0x80; the classic
/// "has less" test: a byte below `n` borrows into its high bit, which `!word` keeps only for
/// bytes below 0x80).
pub const fn any_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES.wrapping_mul(n as u64)) & !word & HIGHS
}

/// Nonzero if and only if some byte of `word` is `b`.
pub const fn any_equal(word: u64, b: u8) -> u64 {
    any_below(word ^ ONES.wrapping_mul(b as u64), 1)
}

/// The index of the first byte of `bytes` for which `is_match` holds. `may_match(word)` must be
/// nonzero for every 8 bytes of `bytes` that hold such a byte, whatever the place of the match
/// among them (it may be nonzero for others too: they are then tested byte by byte, and the scan
/// goes on).
pub fn position(
    bytes: &[u8],
    may_match: impl Fn(u64) -> u64,
    is_match: impl Fn(u8) -> bool,
) -> Option<usize> {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let mut at = 0;
    for word in words {
        // (A word is always 8 bytes; were it not, it would be tested byte by byte, never skipped.)
        let candidate =
            <[u8; 8]>::try_from(word).map_or(true, |word| may_match(u64::from_le_bytes(word)) != 0);
        if candidate {
            if let Some(i) = word.iter().position(|&b| is_match(b)) {
                return Some(at + i);
            }
        }
        at += 8;
    }
    if tail.is_empty() {
        return None;
    }
    // The last 8 bytes as one word (overlapping the last whole word): if it cannot match, the
    // tail cannot either.
    let last = bytes
        .len()
        .checked_sub(8)
        .and_then(|start| bytes.get(start..))
        .and_then(|last| <[u8; 8]>::try_from(last).ok());
    if let Some(last) = last {
        if may_match(u64::from_le_bytes(last)) == 0 {
            return None;
        }
    }
    tail.iter().position(|&b| is_match(b)).map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_tests_are_exact_for_every_byte_at_every_place() {
        for place in 0..8 {
            for b in 0..=255u8 {
                // The other bytes: harmless, or the largest value, or a byte just above.
                for filler in [b'a', 0xff, b.wrapping_add(1), 0x80] {
                    let mut bytes = [filler; 8];
                    bytes[place] = b;
                    let word = u64::from_le_bytes(bytes);
                    for n in [1u8, 0x20, 0x21, 0x80] {
                        assert_eq!(
                            any_below(word, n) != 0,
                            bytes.iter().any(|&x| x < n),
                            "{bytes:?} < {n}"
                        );
                    }
                    for c in [0u8, b'"', b'\\', b' ', 0xff] {
                        assert_eq!(
                            any_equal(word, c) != 0,
                            bytes.contains(&c),
                            "{bytes:?} == {c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn position_finds_the_first_match_past_false_candidates_and_in_the_tail() {
        let is_space = |b: u8| b == b' ';
        let may = |w: u64| any_below(w, 0x21); // also flags control bytes: false candidates
        for len in 0..40 {
            let plain = vec![b'x'; len];
            assert_eq!(position(&plain, may, is_space), None);
            for at in 0..len {
                let mut bytes = plain.clone();
                bytes[at] = b' ';
                assert_eq!(position(&bytes, may, is_space), Some(at), "{len} {at}");
                if at > 0 {
                    bytes[at - 1] = 0x01; // a candidate before it that is no match
                    assert_eq!(position(&bytes, may, is_space), Some(at), "{len} {at}");
                }
            }
        }
    }
}
