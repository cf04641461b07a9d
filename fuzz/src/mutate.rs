//! The CI smoke's mutator: AFL-style havoc (bit flips, interesting values, inserts,
//! deletes, copies, splices) driven by a fixed-seed xorshift, so every run tries the same
//! inputs and a failure reproduces. It finds far less than AFL++; it keeps the targets and
//! their invariants exercised beyond the saved corpus on every CI run.

/// Values that sit on boundaries: lengths, varint continuation bits, signs.
const INTERESTING: [u8; 9] = [0x00, 0x01, 0x02, 0x0a, 0x10, 0x7f, 0x80, 0xfe, 0xff];

/// A deterministic source of mutations.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed | 1, // xorshift never leaves zero
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `input` with 1-8 stacked mutations; `other` is spliced from; never longer than `max`.
    pub fn mutate(&mut self, input: &[u8], other: &[u8], max: usize) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(8) {
            self.once(&mut out, other);
        }
        out.truncate(max);
        out
    }

    fn once(&mut self, out: &mut Vec<u8>, other: &[u8]) {
        let op = self.below(8);
        if out.is_empty() && op < 6 {
            out.push(self.next() as u8);
            return;
        }
        let at = self.below(out.len().max(1));
        match op {
            0 => out[at] ^= 1 << self.below(8),
            1 => out[at] = INTERESTING[self.below(INTERESTING.len())],
            2 => out[at] = self.next() as u8,
            3 => out[at] = out[at].wrapping_add(1 + self.below(16) as u8),
            4 => {
                let len = 1 + self.below((out.len() - at).min(64));
                out.drain(at..at + len);
            }
            5 => {
                // Copy a block of the input over another place of it.
                let len = 1 + self.below((out.len() - at).min(64));
                let to = self.below(out.len());
                let block = out[at..at + len].to_vec();
                let end = (to + len).min(out.len());
                out[to..end].copy_from_slice(&block[..end - to]);
            }
            6 => {
                let len = 1 + self.below(16);
                let bytes: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
                let at = self.below(out.len() + 1);
                out.splice(at..at, bytes);
            }
            _ => {
                // Splice: keep a prefix of this input, then a part of another.
                if other.is_empty() {
                    return;
                }
                let from = self.below(other.len());
                let len = 1 + self.below((other.len() - from).min(256));
                let at = self.below(out.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..from + len]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs() {
        let run = |seed| {
            let mut m = Mutator::new(seed);
            (0..100)
                .map(|_| m.mutate(b"seed input", b"other", 64))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().all(|i| i.len() <= 64));
    }
}
