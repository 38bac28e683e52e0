//! A small deterministic pseudo-random number generator: xoshiro256** seeded through
//! SplitMix64. Only integer arithmetic on `u64` decides the sequence, so a seed gives the same
//! shuffles, splits and initial weights on every platform and in every build profile (the
//! floating-point helpers derive from those integers with exact conversions and the
//! correctly-rounded `ln`/`sqrt`/`cos` of `std`).

/// A seeded xoshiro256** generator (Blackman & Vigna), the same on every platform.
///
/// ```
/// use tensorlet_train::data::Rng;
/// let mut a = Rng::new(7);
/// let mut b = Rng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let mut v = [1, 2, 3, 4, 5];
/// a.shuffle(&mut v);
/// v.sort();
/// assert_eq!(v, [1, 2, 3, 4, 5]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rng {
    s: [u64; 4],
    /// The second value of the last Box-Muller pair, returned by the next `normal()`.
    spare: Option<f64>,
}

/// One SplitMix64 step: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose 256-bit state is four consecutive SplitMix64 outputs from `seed`
    /// (never all zero, whatever the seed).
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s, spare: None }
    }

    /// The next 64 random bits (xoshiro256**).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform `f32` in [0, 1): the top 24 bits of [`next_u64`](Self::next_u64) times
    /// 2⁻²⁴ (every value is exact, 1.0 is never returned).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A uniform `f64` in [0, 1): the top 53 bits times 2⁻⁵³.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f32` in [lo, hi) (PyTorch's default `Linear`/`Conv2d` initialisation uses
    /// `uniform(-b, b)`). Computed in `f64` and rounded once, so it never exceeds `hi` by
    /// more than that rounding.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let (lo, hi) = (f64::from(lo), f64::from(hi));
        (lo + (hi - lo) * self.next_f64()) as f32
    }

    /// A standard normal `f32` (mean 0, variance 1) by the Box-Muller transform: each pair
    /// of uniforms gives two values; the second is kept for the next call.
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z as f32;
        }
        // u1 in (0, 1], so ln(u1) is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * theta.sin());
        (r * theta.cos()) as f32
    }

    /// A uniform integer in `0..n` without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// If `n` is 0 (the range is empty).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0): empty range");
        let threshold = n.wrapping_neg() % n; // 2^64 mod n
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates: for i from the end, swap with a uniform
    /// index in `0..=i`); every permutation is equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 from seed 0 (the published reference outputs of Vigna's `splitmix64.c`).
    #[test]
    fn splitmix64_matches_reference_outputs() {
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut s), 0x06C4_5D18_8009_454F);
    }

    /// xoshiro256** against a step-by-step hand evaluation of its definition from the state
    /// [1, 2, 3, 4].
    #[test]
    fn xoshiro_step_matches_definition() {
        let mut r = Rng {
            s: [1, 2, 3, 4],
            spare: None,
        };
        // result = rotl(2 * 5, 7) * 9 = (10 << 7) * 9 = 11520
        assert_eq!(r.next_u64(), 11520);
        // t = 2 << 17; s2 = 3^1 = 2; s3 = 4^2 = 6; s1 = 2^2 = 0; s0 = 1^6 = 7;
        // s2 = 2 ^ (2 << 17); s3 = rotl(6, 45)
        assert_eq!(r.s, [7, 0, 2 ^ (2 << 17), 6u64.rotate_left(45)]);
        // next result = rotl(0 * 5, 7) * 9 = 0
        assert_eq!(r.next_u64(), 0);
    }

    #[test]
    fn floats_are_in_range_and_moments_match() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let (mut sum, mut sum2) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let x = r.next_f32();
            assert!((0.0..1.0).contains(&x), "{x}");
            let u = r.uniform(-3.0, 5.0);
            assert!((-3.0..=5.0).contains(&u), "{u}");
            let z = f64::from(r.normal());
            sum += z;
            sum2 += z * z;
        }
        let mean = sum / n as f64;
        let var = sum2 / n as f64 - mean * mean;
        // Standard error of the mean is 1/sqrt(n) ~ 0.0022; of the variance ~ 0.0032.
        assert!(mean.abs() < 0.012, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
    }

    #[test]
    fn below_is_unbiased_enough_and_in_range() {
        let mut r = Rng::new(3);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        // Each count is Binomial(70000, 1/7): mean 10000, sd ~ 92.6; 6 sd bounds.
        for c in counts {
            assert!((9_440..=10_560).contains(&c), "{counts:?}");
        }
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let base: Vec<u32> = (0..100).collect();
        let mut a = base.clone();
        let mut b = base.clone();
        let mut c = base.clone();
        Rng::new(5).shuffle(&mut a);
        Rng::new(5).shuffle(&mut b);
        Rng::new(6).shuffle(&mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, base);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, base);
    }
}
