//! A one-lookup test of whether an attribute key can be one of a few keys the assembler
//! looks for (keys that collide with propagated ones, keys the observer classifies on).
//!
//! Every attribute of every arriving span passes through it, so it must reject most keys
//! without comparing bytes: it keeps, for each first byte, the key lengths and (five bits
//! of) the second bytes that can match. A key that passes is then compared for real.

/// Key lengths from this on share the table's last bit.
const LONG: usize = 63;

#[derive(Clone)]
pub(crate) struct KeyFilter {
    /// For each first byte, bit `n` set when a key of length `n` (`LONG` and over: bit
    /// `LONG`) can match.
    lengths: Box<[u64; 256]>,
    /// For each first byte, bit `b & 31` set when a key whose second byte is `b` can match.
    seconds: Box<[u32; 256]>,
}

impl KeyFilter {
    /// Passes no key.
    pub fn empty() -> Self {
        Self {
            lengths: Box::new([0; 256]),
            seconds: Box::new([0; 256]),
        }
    }

    /// Passes `key` (among others).
    pub fn add_exact(&mut self, key: &[u8]) {
        if let Some(&first) = key.first() {
            self.lengths[first as usize] |= 1u64 << key.len().min(LONG);
            self.seconds[first as usize] |= key.get(1).map_or(!0, |&b| 1 << (b & 31));
        }
    }

    /// Passes every key that starts with `prefix`; every key when it is empty.
    pub fn add_prefix(&mut self, prefix: &[u8]) {
        // Lengths from the prefix's on (bit LONG stands for every longer key).
        let from = !0u64 << prefix.len().min(LONG);
        match prefix.first() {
            Some(&first) => {
                self.lengths[first as usize] |= from;
                self.seconds[first as usize] |= prefix.get(1).map_or(!0, |&b| 1 << (b & 31));
            }
            None => {
                self.lengths.iter_mut().for_each(|l| *l = !0);
                self.seconds.iter_mut().for_each(|s| *s = !0);
            }
        }
    }

    /// Whether `key` may match: `false` means it surely does not.
    #[inline]
    pub fn may_match(&self, key: &[u8]) -> bool {
        let Some(&first) = key.first() else {
            return false;
        };
        if self.lengths[first as usize] & (1u64 << key.len().min(LONG)) == 0 {
            return false;
        }
        key.get(1)
            .is_none_or(|&b| self.seconds[first as usize] & (1 << (b & 31)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_what_can_match_and_rejects_by_first_byte_and_length() {
        let mut f = KeyFilter::empty();
        f.add_exact(b"cuj.name");
        f.add_prefix(b"user.");
        assert!(f.may_match(b"cuj.name"));
        // Same first byte and length: passes, the caller compares.
        assert!(f.may_match(b"cujXname"));
        assert!(!f.may_match(b"app.name"), "same length, other first byte");
        assert!(!f.may_match(b"cuj.names"), "same first byte, other length");
        assert!(f.may_match(b"user."));
        assert!(f.may_match(b"user.tier"));
        assert!(
            f.may_match(&[b"us".as_slice(), &[b'x'; 498]].concat()),
            "long keys share the last bit"
        );
        assert!(!f.may_match(b"use"), "shorter than the prefix");
        assert!(!f.may_match(b""));
        assert!(
            !f.may_match(b"code.fnx"),
            "same first byte and length, other second byte"
        );
        assert!(
            !f.may_match(b"unknown.key"),
            "other second byte than the prefix's"
        );
    }

    #[test]
    fn long_exact_keys_and_the_empty_prefix() {
        let mut f = KeyFilter::empty();
        let long = [b'k'; 100];
        f.add_exact(&long);
        assert!(f.may_match(&long));
        assert!(
            f.may_match(&[b'k'; 64]),
            "every long key of that first byte passes"
        );
        assert!(!f.may_match(&[b'k'; 62]));
        f.add_prefix(b"");
        assert!(f.may_match(b"x"));
        assert!(f.may_match(b"anything.at.all"));
    }
}
