//! Shared pieces of tensorlet's benchmarks: the peak-FMA probe that every kernel figure
//! is reported against, measured in the same run on the same core.

use pulp::{Simd, WithSimd};

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
    let lanes = pulp::Arch::new().dispatch(Lanes);
    (iterations * CHAINS * lanes * 2) as u64
}

struct Lanes;

impl WithSimd for Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()
    }
}
