//! Shared pieces of tensorlet's benchmarks: the limits every kernel figure is reported
//! against, measured in the same run on the same core (a peak-FMA probe, a streaming-read
//! probe, a memcpy probe), deterministic test data, the peers behind the `peers` feature
//! (module `peers`), and the table each bench prints from criterion's results ([`report`]).

use pulp::{Simd, WithSimd};

#[cfg(feature = "peers")]
pub mod peers;
pub mod report;

/// Independent FMA chains in the probe: enough to cover FMA latency × throughput on
/// current x86 cores (4 cycles × 2 ports) with room to spare, few enough for 16 registers.
const CHAINS: usize = 12;

struct FmaProbe {
    iterations: usize,
}

impl WithSimd for FmaProbe {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let a = simd.splat_f32s(0.999_999);
        let b = simd.splat_f32s(1e-7);
        let mut acc = [simd.splat_f32s(1.0); CHAINS];
        for _ in 0..self.iterations {
            for x in acc.iter_mut() {
                *x = simd.mul_add_f32s(*x, a, b);
            }
        }
        let mut sum = simd.splat_f32s(0.0);
        for x in acc {
            sum = simd.add_f32s(sum, x);
        }
        simd.reduce_sum_f32s(sum)
    }
}

/// Runs `iterations` rounds of the peak-FMA probe at the best SIMD level and returns a
/// value that depends on every FMA (so none is optimised away).
pub fn peak_fma_probe(iterations: usize) -> f32 {
    pulp::Arch::new().dispatch(FmaProbe { iterations })
}

/// Floating-point operations (an FMA counts as two) of one [`peak_fma_probe`] call.
pub fn peak_fma_flops(iterations: usize) -> u64 {
    (iterations * CHAINS * lanes() * 2) as u64
}

/// `f32` lanes of one vector at the best SIMD level (16 with AVX-512, 8 with AVX2).
pub fn lanes() -> usize {
    pulp::Arch::new().dispatch(Lanes)
}

struct Lanes;

impl WithSimd for Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()
    }
}

/// Independent accumulators of the streaming-read probe: enough vector loads in flight
/// that the loop is bound by the memory system, not by the add latency.
const STREAM_ACCUMULATORS: usize = 8;

struct StreamSum<'a> {
    data: &'a [f32],
}

impl WithSimd for StreamSum<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (head, tail) = S::as_simd_f32s(self.data);
        let mut acc = [simd.splat_f32s(0.0); STREAM_ACCUMULATORS];
        let mut blocks = head.chunks_exact(STREAM_ACCUMULATORS);
        for block in &mut blocks {
            for (a, &v) in acc.iter_mut().zip(block) {
                *a = simd.add_f32s(*a, v);
            }
        }
        for (a, &v) in acc.iter_mut().zip(blocks.remainder()) {
            *a = simd.add_f32s(*a, v);
        }
        let mut sum = simd.splat_f32s(0.0);
        for a in acc {
            sum = simd.add_f32s(sum, a);
        }
        simd.reduce_sum_f32s(sum) + tail.iter().sum::<f32>()
    }
}

/// The streaming-read probe: sums `data` with SIMD loads into several independent
/// accumulators, so its time is what reading `data` once costs from wherever it lives
/// (L1, L2, L3 or DRAM). Bytes read per call: `4 · data.len()`.
pub fn stream_read_probe(data: &[f32]) -> f32 {
    pulp::Arch::new().dispatch(StreamSum { data })
}

/// The memcpy probe: `dst.copy_from_slice(src)`, the cost of reading `src` and writing as
/// many bytes. Panics if the lengths differ.
pub fn memcpy_probe(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}

/// `n` deterministic values in `[-1, 1)` from an xorshift stream seeded by `seed`.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Limits the peers' thread pools to one thread (`RAYON_NUM_THREADS` and
/// `CANDLE_NUM_THREADS`, unless already set), so that every figure is single-threaded.
/// Call it first thing in `main`, before any thread exists.
pub fn single_threaded() {
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: called at the start of `main`, before any other thread reads or
            // writes the environment.
            unsafe { std::env::set_var(var, "1") };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_probe_sums_every_element() {
        // Lengths around the vector and block sizes, so head, remainder and tail all run.
        for n in [0, 1, 15, 16, 17, 127, 128, 129, 1000] {
            let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
            let expected: f32 = data.iter().sum();
            assert_eq!(stream_read_probe(&data), expected, "n = {n}");
        }
    }

    #[test]
    fn memcpy_probe_copies() {
        let src = values(100, 1);
        let mut dst = vec![0.0; 100];
        memcpy_probe(&src, &mut dst);
        assert_eq!(src, dst);
    }

    #[test]
    fn peak_probe_counts_two_flops_per_fma() {
        assert_eq!(peak_fma_flops(10), (10 * CHAINS * lanes() * 2) as u64);
        assert!(peak_fma_probe(10).is_finite());
    }
}
