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

/// Runs `iterations` rounds of the peak-FMA probe on 256-bit vectors (8 lanes, AVX2 + FMA),
/// 12 chains as in [`peak_fma_probe`], or returns `None` where the CPU has no AVX2: the
/// limit of the AVX2 kernels on a CPU whose best level is wider (on cores with two 512-bit
/// FMA units, half the AVX-512 peak; on Zen 4, the same).
#[cfg(target_arch = "x86_64")]
pub fn avx2_fma_probe(iterations: usize) -> Option<f32> {
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        Some(unsafe { avx2_fma(iterations) })
    } else {
        None
    }
}

/// [`avx2_fma_probe`] off x86-64: there is no AVX2 to probe.
#[cfg(not(target_arch = "x86_64"))]
pub fn avx2_fma_probe(_iterations: usize) -> Option<f32> {
    None
}

/// FLOPs of one [`avx2_fma_probe`] call.
pub fn avx2_fma_flops(iterations: usize) -> u64 {
    (iterations * CHAINS * 8 * 2) as u64
}

/// The AVX2 probe's loop, compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_fma(iterations: usize) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// Runs `iterations` rounds of the peak-FMA probe on 128-bit vectors (4 `f32` lanes, the
/// width of wasm simd128 and of the FMAs wasmtime emits for `f32x4.relaxed_madd` on x86),
/// or returns `None` where this build has no 128-bit FMA to probe. Each round is
/// one FMA on each of 12 independent chains, as in [`peak_fma_probe`]; [`fma128_flops`]
/// counts them.
pub fn fma128_probe(iterations: usize) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return Some(unsafe { fma128_x86(iterations) });
    }
    #[cfg(target_arch = "aarch64")]
    if lanes() == 4 {
        // NEON's vectors are 128-bit: the best-level probe is the 128-bit one.
        return Some(peak_fma_probe(iterations));
    }
    let _ = iterations;
    None
}

/// Floating-point operations of one [`fma128_probe`] call.
pub fn fma128_flops(iterations: usize) -> u64 {
    (iterations * CHAINS * 4 * 2) as u64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn fma128_x86(iterations: usize) -> f32 {
    use std::arch::x86_64::{_mm_add_ps, _mm_cvtss_f32, _mm_fmadd_ps, _mm_hadd_ps, _mm_set1_ps};
    let (a, b) = (_mm_set1_ps(0.999_999), _mm_set1_ps(1e-7));
    let mut acc = [_mm_set1_ps(1.0); CHAINS];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm_fmadd_ps(*x, a, b);
        }
    }
    let sum = acc.iter().fold(_mm_set1_ps(0.0), |s, &x| _mm_add_ps(s, x));
    let sum = _mm_hadd_ps(sum, sum);
    _mm_cvtss_f32(_mm_hadd_ps(sum, sum))
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

/// The half-to-single conversion probe: widens every `f16` of `data` to `f32` with the
/// instruction the f16 GEMV uses (`vcvtph2ps` on 16 lanes with AVX-512, 8 with F16C) and sums
/// the results into several independent accumulators — no weights-times-input product, so
/// its time is the cost of reading and converting 16-bit weights, the floor for an f16 GEMV
/// whose data sits in cache. Falls back to `half`'s scalar conversion without F16C.
pub fn f16_convert_probe(data: &[half::f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { convert_avx512(data) };
        }
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: the CPU has F16C and AVX (checked just above).
            return unsafe { convert_f16c(data) };
        }
    }
    data.iter().map(|v| v.to_f32()).sum()
}

/// [`f16_convert_probe`] with AVX-512: 8 chains of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn convert_avx512(data: &[half::f16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 8];
    let chunks = data.chunks_exact(128);
    let tail: f32 = chunks.remainder().iter().map(|v| v.to_f32()).sum();
    for c in chunks {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: 16 halves (32 bytes) at `16·u` are inside the 128-element chunk.
            let h = unsafe { _mm256_loadu_si256(c.as_ptr().add(16 * u).cast()) };
            *a = _mm512_add_ps(*a, _mm512_cvtph_ps(h));
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    _mm512_reduce_add_ps(sum) + tail
}

/// [`f16_convert_probe`] with F16C: 8 chains of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn convert_f16c(data: &[half::f16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 8];
    let chunks = data.chunks_exact(64);
    let tail: f32 = chunks.remainder().iter().map(|v| v.to_f32()).sum();
    for c in chunks {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: 8 halves (16 bytes) at `8·u` are inside the 64-element chunk.
            let h = unsafe { _mm_loadu_si128(c.as_ptr().add(8 * u).cast()) };
            *a = _mm256_add_ps(*a, _mm256_cvtph_ps(h));
        }
    }
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum::<f32>() + tail
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
    fn f16_convert_probe_sums_every_element() {
        let data: Vec<half::f16> = (0..1000)
            .map(|i| half::f16::from_f32(i as f32 * 0.25))
            .collect();
        let want: f32 = (0..1000).map(|i| i as f32 * 0.25).sum();
        assert!((f16_convert_probe(&data) - want).abs() <= 1e-3 * want);
    }

    #[test]
    fn memcpy_probe_copies() {
        let src = values(100, 1);
        let mut dst = vec![0.0; 100];
        memcpy_probe(&src, &mut dst);
        assert_eq!(src, dst);
    }

    #[test]
    fn fma128_probe_computes_every_chain() {
        let Some(got) = fma128_probe(3) else { return };
        // Each of the 12 chains × 4 lanes runs x ← 0.999999·x + 1e-7 three times from 1.
        let (a, b) = (0.999_999f64, 1e-7f64);
        let x = (0..3).fold(1.0f64, |x, _| a * x + b);
        let want = 48.0 * x;
        assert!(
            (f64::from(got) - want).abs() <= 1e-5 * want,
            "{got} vs {want}"
        );
        assert_eq!(fma128_flops(3), 3 * 12 * 4 * 2);
    }

    #[test]
    fn peak_probe_counts_two_flops_per_fma() {
        assert_eq!(peak_fma_flops(10), (10 * CHAINS * lanes() * 2) as u64);
        assert!(peak_fma_probe(10).is_finite());
    }
}
