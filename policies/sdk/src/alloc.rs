//! The guest's global allocator: the standard one (dlmalloc on wasm32) behind a
//! short cache of freed blocks per power-of-two size class.
//!
//! Every `victims` call allocates its input (the host calls `cabi_realloc` for
//! the list) and its answer, and frees both before the next call. Their sizes
//! move from call to call with the events pending, and dlmalloc's bins took
//! about 300 instructions a call to serve and take them back: a policy called
//! once per eviction paid that per eviction. Rounded to a class, the same few
//! blocks come back in a few instructions each.
//!
//! Blocks from 1 byte to [`LARGEST_KEPT`] are rounded up to a power of two (at
//! least [`SMALLEST_CLASS`]) and at most [`KEPT_PER_CLASS`] freed ones are kept
//! per class, so the cache holds under 2 x `KEPT_PER_CLASS` x `LARGEST_KEPT`
//! bytes. Larger blocks, and alignments past [`CLASS_ALIGN`], go straight to
//! the inner allocator, so a policy's big vectors grow in place as before.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

const SMALLEST_CLASS_SHIFT: u32 = 4;
const LARGEST_KEPT_SHIFT: u32 = 16;
pub const SMALLEST_CLASS: usize = 1 << SMALLEST_CLASS_SHIFT;
pub const LARGEST_KEPT: usize = 1 << LARGEST_KEPT_SHIFT;
const CLASSES: usize = (LARGEST_KEPT_SHIFT - SMALLEST_CLASS_SHIFT + 1) as usize;
/// Two: a call's input and its answer may fall in one class.
pub const KEPT_PER_CLASS: usize = 2;
/// Every block of a class is allocated with this alignment, so that any
/// request of the class fits any of its blocks.
pub const CLASS_ALIGN: usize = 8;

struct Kept {
    blocks: [[*mut u8; KEPT_PER_CLASS]; CLASSES],
    len: [u8; CLASSES],
}

/// `A` behind a cache of freed blocks. Not for threads: the cache is not
/// locked (a policy instance runs on one).
pub struct Reusing<A> {
    inner: A,
    kept: UnsafeCell<Kept>,
}

// A wasm32 guest without the atomics feature has one thread, and only such a
// guest installs this as its global allocator.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Reusing<A> {}

impl<A> Reusing<A> {
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            kept: UnsafeCell::new(Kept {
                blocks: [[ptr::null_mut(); KEPT_PER_CLASS]; CLASSES],
                len: [0; CLASSES],
            }),
        }
    }

    /// The class of `layout` and the layout its blocks have, or `None` for
    /// a block the cache does not keep.
    #[inline]
    fn class(layout: Layout) -> Option<(usize, Layout)> {
        if layout.size() > LARGEST_KEPT || layout.align() > CLASS_ALIGN {
            return None;
        }
        let size = layout.size().max(SMALLEST_CLASS).next_power_of_two();
        let class = (size.trailing_zeros() - SMALLEST_CLASS_SHIFT) as usize;
        // A power of two no larger than LARGEST_KEPT, at an alignment that
        // divides it: always a valid layout.
        Layout::from_size_align(size, CLASS_ALIGN)
            .ok()
            .map(|l| (class, l))
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Reusing<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, block)) = Self::class(layout) else {
            return unsafe { self.inner.alloc(layout) };
        };
        // Safety: one thread, and no call below re-enters this allocator.
        let kept = unsafe { &mut *self.kept.get() };
        match kept.len[class] {
            0 => unsafe { self.inner.alloc(block) },
            n => {
                kept.len[class] = n - 1;
                kept.blocks[class][usize::from(n - 1)]
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, at: *mut u8, layout: Layout) {
        let Some((class, block)) = Self::class(layout) else {
            return unsafe { self.inner.dealloc(at, layout) };
        };
        // Safety: as in `alloc`.
        let kept = unsafe { &mut *self.kept.get() };
        let n = usize::from(kept.len[class]);
        if n < KEPT_PER_CLASS {
            kept.blocks[class][n] = at;
            kept.len[class] += 1;
        } else {
            unsafe { self.inner.dealloc(at, block) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::class(layout).is_none() {
            // Fresh memory from the inner allocator may be known zero.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        let at = unsafe { self.alloc(layout) };
        if !at.is_null() {
            unsafe { ptr::write_bytes(at, 0, layout.size()) };
        }
        at
    }

    unsafe fn realloc(&self, at: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Safety: the caller promises `new_size` rounded up to the alignment
        // does not overflow, which is all a layout asks.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new_layout)) {
            (None, None) => unsafe { self.inner.realloc(at, layout, new_size) },
            (Some((old, _)), Some((new, _))) if old == new => at,
            _ => {
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(at, moved, layout.size().min(new_size));
                        self.dealloc(at, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::System;
    use std::cell::Cell;

    use super::*;
    use crate::testing::Rng;

    /// The system allocator, counting what reaches it.
    #[derive(Default)]
    struct Counting {
        allocs: Cell<usize>,
        deallocs: Cell<usize>,
        last: Cell<Option<Layout>>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            self.last.set(Some(layout));
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, at: *mut u8, layout: Layout) {
            self.deallocs.set(self.deallocs.get() + 1);
            self.last.set(Some(layout));
            unsafe { System.dealloc(at, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_freed_block_serves_the_next_request_of_its_class() {
        let heap = Reusing::new(Counting::default());
        unsafe {
            let a = heap.alloc(layout(100, 8));
            heap.dealloc(a, layout(100, 8));
            let b = heap.alloc(layout(120, 4));
            assert_eq!(a, b, "100 and 120 bytes are both in the 128-byte class");
            assert_eq!(heap.inner.allocs.get(), 1);
            let c = heap.alloc(layout(200, 8));
            assert_ne!(b, c);
            assert_eq!(heap.inner.allocs.get(), 2, "another class: a new block");
            heap.dealloc(b, layout(120, 4));
            heap.dealloc(c, layout(200, 8));
            assert_eq!(heap.inner.deallocs.get(), 0, "both kept");
        }
    }

    #[test]
    fn blocks_past_the_kept_ones_go_back_with_their_class_layout() {
        let heap = Reusing::new(Counting::default());
        unsafe {
            let blocks: Vec<_> = (0..KEPT_PER_CLASS + 3)
                .map(|_| heap.alloc(layout(40, 8)))
                .collect();
            assert_eq!(heap.inner.last.get(), Some(layout(64, CLASS_ALIGN)));
            for &b in &blocks {
                heap.dealloc(b, layout(40, 8));
            }
            assert_eq!(heap.inner.deallocs.get(), 3);
            assert_eq!(heap.inner.last.get(), Some(layout(64, CLASS_ALIGN)));
            let again: Vec<_> = (0..KEPT_PER_CLASS + 1)
                .map(|_| heap.alloc(layout(33, 1)))
                .collect();
            assert_eq!(heap.inner.allocs.get(), KEPT_PER_CLASS + 3 + 1);
            for b in again {
                heap.dealloc(b, layout(33, 1));
            }
        }
    }

    #[test]
    fn large_and_overaligned_blocks_pass_through_unrounded() {
        let heap = Reusing::new(Counting::default());
        unsafe {
            for l in [
                layout(LARGEST_KEPT + 1, 8),
                layout(64, 16),
                layout(1 << 20, 4096),
            ] {
                let a = heap.alloc(l);
                assert_eq!(heap.inner.last.get(), Some(l));
                heap.dealloc(a, l);
                assert_eq!(heap.inner.last.get(), Some(l));
            }
            assert_eq!(heap.inner.allocs.get(), heap.inner.deallocs.get());
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_when_reused() {
        let heap = Reusing::new(Counting::default());
        unsafe {
            let a = heap.alloc(layout(256, 8));
            ptr::write_bytes(a, 0xAB, 256);
            heap.dealloc(a, layout(256, 8));
            let b = heap.alloc_zeroed(layout(200, 8));
            assert_eq!(a, b);
            assert!(std::slice::from_raw_parts(b, 200).iter().all(|&x| x == 0));
            heap.dealloc(b, layout(200, 8));
        }
    }

    #[test]
    fn realloc_keeps_the_block_within_a_class_and_the_bytes_across() {
        let heap = Reusing::new(Counting::default());
        unsafe {
            let a = heap.alloc(layout(70, 8));
            for i in 0..70 {
                *a.add(i) = i as u8;
            }
            let b = heap.realloc(a, layout(70, 8), 128);
            assert_eq!(a, b, "70 and 128 bytes are one class");
            let c = heap.realloc(b, layout(128, 8), 5000);
            assert_ne!(b, c);
            let d = heap.realloc(c, layout(5000, 8), LARGEST_KEPT * 4);
            let e = heap.realloc(d, layout(LARGEST_KEPT * 4, 8), 30);
            assert!((0..30).all(|i| *e.add(i) == i as u8));
            heap.dealloc(e, layout(30, 8));
        }
    }

    /// Blocks of random sizes and alignments, written with a byte of their
    /// own, grown, shrunk and freed at random: none is ever handed out
    /// twice or loses its bytes, and nothing leaks past the kept ones.
    #[test]
    fn random_use_never_shares_a_block_or_loses_bytes() {
        let heap = Reusing::new(Counting::default());
        let mut rng = Rng::new(7);
        let sizes = [1, 7, 16, 17, 100, 1000, 4096, 40_000, LARGEST_KEPT, 70_000];
        let aligns = [1, 2, 8, 16, 64];
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let check = |&(at, l, mark): &(*mut u8, Layout, u8)| unsafe {
            assert!(
                std::slice::from_raw_parts(at, l.size())
                    .iter()
                    .all(|&x| x == mark),
                "a block of {l:?} lost its bytes"
            );
        };
        for step in 0..50_000u32 {
            let mark = step as u8;
            match rng.below(3) {
                0 if live.len() < 64 => {
                    let size = rng.pick(&sizes).unwrap() + rng.below(3) as usize;
                    let l = layout(size, rng.pick(&aligns).unwrap());
                    let at = unsafe {
                        if rng.percent(20) {
                            heap.alloc_zeroed(l)
                        } else {
                            heap.alloc(l)
                        }
                    };
                    assert!(!at.is_null());
                    assert_eq!(at as usize % l.align(), 0);
                    unsafe { ptr::write_bytes(at, mark, size) };
                    live.push((at, l, mark));
                }
                1 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    check(&live[i]);
                    let (at, l, _) = live[i];
                    let size = rng.pick(&sizes).unwrap() + rng.below(3) as usize;
                    let moved = unsafe { heap.realloc(at, l, size) };
                    assert!(!moved.is_null());
                    let kept = l.size().min(size);
                    let old_mark = live[i].2;
                    assert!(
                        unsafe { std::slice::from_raw_parts(moved, kept) }
                            .iter()
                            .all(|&x| x == old_mark)
                    );
                    unsafe { ptr::write_bytes(moved, mark, size) };
                    live[i] = (moved, layout(size, l.align()), mark);
                }
                _ if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let block = live.swap_remove(i);
                    check(&block);
                    unsafe { heap.dealloc(block.0, block.1) };
                }
                _ => {}
            }
            // Every live block still holds its own byte: none was handed out
            // again while in use.
            if step % 97 == 0 {
                live.iter().for_each(check);
            }
        }
        for block in live.drain(..) {
            check(&block);
            unsafe { heap.dealloc(block.0, block.1) };
        }
        let held = unsafe { &*heap.kept.get() }
            .len
            .iter()
            .map(|&n| usize::from(n))
            .sum::<usize>();
        assert_eq!(heap.inner.allocs.get() - heap.inner.deallocs.get(), held);
    }
}
