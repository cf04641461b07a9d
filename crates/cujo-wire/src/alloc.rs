//! What an allocation really costs, for memory accounting.
//!
//! Every component counts its memory against the budget by the size of its allocations, and
//! an allocator hands out blocks of fixed size classes, not the bytes asked for. cujo runs
//! on mimalloc, whose classes above 64 bytes step by a quarter of the power of two below
//! (for example 256, 320, 384, 448, 512 bytes); smaller requests round to 16 bytes (8 for
//! the smallest). Blocks
//! share pages, so the rounding of small and medium blocks is memory the process holds.
//! Past 64 KiB what counts is the pages the block's bytes touch (the untouched tail of a
//! large block is never paged in), so those round to 4 KiB. Counting this way keeps the
//! count from falling below what the process holds; an allocator with finer classes only
//! makes it conservative.

/// The block size the allocator hands out for a request of `bytes` (zero for zero).
pub fn allocation_size(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    const WORD: usize = std::mem::size_of::<usize>();
    if bytes <= WORD {
        return WORD;
    }
    if bytes <= 8 * WORD {
        return bytes.div_ceil(2 * WORD) * 2 * WORD;
    }
    // Large blocks cost the pages their bytes touch.
    if bytes > 64 << 10 {
        return bytes.div_ceil(4096) * 4096;
    }
    // Four classes per power of two, counted in words.
    let words = bytes.div_ceil(WORD);
    let top = usize::BITS - 1 - (words - 1).leading_zeros();
    let step = 1usize << (top - 2);
    words.div_ceil(step) * step * WORD
}

/// Bytes a `Vec` with `capacity` elements of `T` holds on the heap.
pub fn vec_bytes<T>(capacity: usize) -> usize {
    allocation_size(capacity * std::mem::size_of::<T>())
}

#[cfg(test)]
mod tests {
    use super::allocation_size;

    #[test]
    fn sizes_round_up_to_classes() {
        assert_eq!(allocation_size(0), 0);
        assert_eq!(allocation_size(1), 8);
        assert_eq!(allocation_size(24), 32);
        assert_eq!(allocation_size(63), 64);
        assert_eq!(allocation_size(248), 256);
        assert_eq!(allocation_size(257), 320);
        assert_eq!(allocation_size(1025), 1280);
        assert_eq!(allocation_size(4096), 4096);
        for n in [1usize, 7, 100, 1000, 10_000, 100_000, 3 << 20, 20 << 20] {
            let a = allocation_size(n);
            assert!(a >= n && a <= n + n / 4 + 16, "{n} -> {a}");
        }
    }
}
