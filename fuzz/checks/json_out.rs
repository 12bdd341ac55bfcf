//! `write_json` (the audit line's, the token answer's and the cache key's JSON writer): for any
//! input it writes exactly the bytes `serde_json::to_writer` writes — strings made of the input
//! (lossy UTF-8, so every byte value and escape is reached), the input cut into a list and a map
//! of strings, and its first 8 bytes read as an integer and as a float.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

fn same<T: serde::Serialize + ?Sized>(value: &T) {
    let mut ours = Vec::new();
    kitebridge::write_json(&mut ours, value).expect("writes to a vector");
    let theirs = serde_json::to_vec(value).expect("serde_json writes to a vector");
    assert_eq!(ours, theirs);
}

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    same(text.as_ref());
    let parts: Vec<&str> = text.split('\u{fffd}').collect();
    same(&parts);
    let map: BTreeMap<&str, usize> = parts.iter().map(|p| (*p, p.len())).collect();
    same(&map);
    let mut word = [0u8; 8];
    for (w, b) in word.iter_mut().zip(data) {
        *w = *b;
    }
    same(&i64::from_le_bytes(word));
    same(&u64::from_le_bytes(word));
    same(&f64::from_le_bytes(word));
    same(&f32::from_le_bytes([word[0], word[1], word[2], word[3]]));
    same(&(
        Some(text.as_ref()),
        None::<u8>,
        true,
        f64::from(u32::from_le_bytes([word[4], word[5], word[6], word[7]])) / 10.0,
    ));
}
