//! Per-thread reusable byte buffers, wiped when given back.
//!
//! A cached vend fills four buffers of one to two KiB: the request's header fields (the JWT is
//! one of them), the token answer, the response as written and the audit line. Allocated and
//! freed anew for every request, blocks of that size are not served from the allocator's
//! per-thread cache and make it merge its free lists each time (`malloc_consolidate` was 1.5 %
//! of a cached vend). Here a connection thread keeps up to [`MAX_SPARE`] buffers of at most
//! [`MAX_SPARE_BYTES`] each and hands them out again.
//!
//! A buffer given back is **zeroed over its whole capacity** before it is kept or freed: the
//! header buffer holds the caller's JWT and the answer buffers a GitHub token, and neither may
//! linger in a spare buffer or in memory the allocator has taken back. A buffer that must grow
//! while it holds a secret grows through [`Wiping`], which wipes the smaller allocation it leaves
//! (a `Vec` that grows frees its old allocation as it is).
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io;

/// Spare buffers kept per thread.
pub const MAX_SPARE: usize = 4;
/// Largest buffer kept (a larger one is wiped and freed).
pub const MAX_SPARE_BYTES: usize = 16 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes: a spare one of this thread's if
/// there is one, else a new one.
pub fn take(capacity: usize) -> Vec<u8> {
    let spare = SPARE
        .try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten();
    match spare {
        Some(mut buf) => {
            buf.clear();
            buf.reserve(capacity);
            buf
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Gives `buf` back: zeroed over its whole capacity, then kept for [`take`] if this thread
/// keeps fewer than [`MAX_SPARE`] and it is at most [`MAX_SPARE_BYTES`], else freed.
pub fn give(mut buf: Vec<u8>) {
    wipe(&mut buf);
    if buf.capacity() == 0 || buf.capacity() > MAX_SPARE_BYTES {
        return;
    }
    let _ = SPARE.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            if spare.len() < MAX_SPARE {
                spare.push(buf);
            }
        }
    });
}

/// Zeroes every byte `buf` can hold: it is left full (its length its capacity) of zeros, which
/// is how a spare buffer is kept.
fn wipe(buf: &mut Vec<u8>) {
    let capacity = buf.capacity();
    buf.clear();
    buf.resize(capacity, 0);
    // The zeros must be written even when the buffer is freed next (a compiler may drop stores
    // to memory about to be freed); `black_box` makes them observable.
    std::hint::black_box(buf.as_slice());
}

/// A buffer from [`take`] that grows without leaving a copy of its contents behind: when a write
/// needs more room it moves to a buffer twice as large and wipes and gives back the old one.
/// For serialising what holds a secret (a token answer) whose exact length is not known first.
pub struct Wiping(Vec<u8>);

impl Wiping {
    /// Room for `capacity` bytes at first.
    pub fn with_capacity(capacity: usize) -> Self {
        Wiping(take(capacity))
    }

    /// The bytes written.
    pub fn into_inner(self) -> Vec<u8> {
        let mut this = self;
        std::mem::take(&mut this.0)
    }
}

/// Makes room in `buf` for `additional` more bytes without leaving a copy of its contents: if it
/// must grow, its bytes move to a buffer at least twice as large and the old one is wiped and
/// given back.
pub fn reserve(buf: &mut Vec<u8>, additional: usize) {
    let needed = buf.len().saturating_add(additional);
    if needed > buf.capacity() {
        let mut larger = take(needed.max(buf.capacity().saturating_mul(2)));
        larger.extend_from_slice(buf);
        give(std::mem::replace(buf, larger));
    }
}

impl io::Write for Wiping {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        reserve(&mut self.0, bytes.len());
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Not written to the end (an error, a panic): what was written is wiped all the same.
impl Drop for Wiping {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> Vec<Vec<u8>> {
        SPARE.with(|s| s.borrow().clone())
    }

    #[test]
    fn a_buffer_given_back_is_zeroed_over_its_capacity_and_reused_empty() {
        let mut buf = take(64);
        buf.extend_from_slice(&[0xab; 64]);
        buf.truncate(10); // the cut-off bytes are still in the allocation
        let addr = buf.as_ptr();
        give(buf);
        SPARE.with(|s| {
            let spare = s.borrow();
            let top = spare.last().unwrap();
            assert_eq!(top.as_ptr(), addr);
            assert_eq!(top.len(), top.capacity(), "the whole capacity was written");
            assert!(
                top.iter().all(|&b| b == 0),
                "no byte of the old contents is left"
            );
        });
        let again = take(8);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), addr, "the spare buffer is handed out again");
        assert!(again.capacity() >= 64);
        let bigger = take(4 * MAX_SPARE_BYTES);
        assert!(bigger.capacity() >= 4 * MAX_SPARE_BYTES);
    }

    #[test]
    fn a_wiping_buffer_grows_by_moving_and_wiping_and_keeps_every_byte() {
        use std::io::Write as _;
        SPARE.with(|s| s.borrow_mut().clear()); // this thread's spares, out of the way
        let mut out = Wiping::with_capacity(8);
        let first_addr = out.0.as_ptr();
        out.write_all(b"ghs_0123").unwrap();
        out.write_all(b"456789-and-more-than-eight").unwrap();
        // The first allocation was given back wiped (kept as this thread's spare).
        SPARE.with(|s| {
            let spare = s.borrow();
            let old = spare.iter().find(|b| b.as_ptr() == first_addr).unwrap();
            assert!(old.iter().all(|&b| b == 0));
        });
        assert_eq!(out.into_inner(), b"ghs_0123456789-and-more-than-eight");
    }

    #[test]
    fn at_most_max_spare_buffers_of_at_most_max_spare_bytes_are_kept() {
        let held: Vec<Vec<u8>> = (0..MAX_SPARE + 2).map(|_| take(32)).collect();
        for buf in held {
            give(buf);
        }
        assert_eq!(spares().len(), MAX_SPARE);
        let _ = take(0);
        give(Vec::with_capacity(MAX_SPARE_BYTES + 1));
        assert!(spares().iter().all(|b| b.capacity() <= MAX_SPARE_BYTES));
        assert_eq!(
            spares().len(),
            MAX_SPARE - 1,
            "the large buffer was not kept"
        );
    }
}
