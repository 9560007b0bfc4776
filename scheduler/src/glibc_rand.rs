//! glibc's `rand()` (TYPE_3 additive feedback generator), bit for bit.
//!
//! XRBench draws from `rand()`; reproducing its stochastic runs needs the same stream.
//! Seeding: r[0] = seed, r[i] = 16807·r[i−1] mod (2^31 − 1) for i < 31, r[i] = r[i−31] for
//! 31 ≤ i < 34, then r[i] = r[i−3] + r[i−31] (mod 2^32); the first 310 outputs after that
//! are discarded, and each output is r >> 1. Seed 1 is what an unseeded program sees.

/// glibc `RAND_MAX`.
pub const RAND_MAX: i32 = 2_147_483_647;

#[derive(Debug, Clone)]
pub struct GlibcRand {
    r: Vec<u32>,
    i: usize,
}

impl GlibcRand {
    /// `srand(seed)`.
    pub fn new(seed: u32) -> Self {
        let seed = if seed == 0 { 1 } else { seed };
        let mut r: Vec<u32> = Vec::with_capacity(344 + 64);
        r.push(seed);
        for i in 1..31 {
            let prev = r[i - 1] as i32 as i64;
            let mut v = (16807 * prev) % 2_147_483_647;
            if v < 0 {
                v += 2_147_483_647;
            }
            r.push(v as u32);
        }
        for i in 31..34 {
            r.push(r[i - 31]);
        }
        for i in 34..344 {
            let v = r[i - 31].wrapping_add(r[i - 3]);
            r.push(v);
        }
        GlibcRand { i: r.len(), r }
    }

    /// `rand()`.
    pub fn next_i32(&mut self) -> i32 {
        let i = self.i;
        let v = self.r[i - 31].wrapping_add(self.r[i - 3]);
        self.r.push(v);
        self.i += 1;
        // keep the buffer small
        if self.r.len() > 4096 {
            let drop = self.r.len() - 64;
            self.r.drain(..drop);
            self.i = self.r.len();
        }
        (v >> 1) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn matches_glibc_unseeded_stream() {
        // First outputs of glibc rand() with no srand (= srand(1)).
        let mut g = GlibcRand::new(1);
        let got: Vec<i32> = (0..5).map(|_| g.next_i32()).collect();
        assert_eq!(
            got,
            vec![1804289383, 846930886, 1681692777, 1714636915, 1957747793]
        );
    }
}
