//! The training ops at every SIMD level against the oracle (proptest over shapes with odd
//! tails, fixed shapes crossing the GEMM's blocks), the oracles' gradients against central
//! finite differences of their forward ops in `f64`, and the error paths.

mod common;

use common::{all_kernels, check_close, random};
use proptest::prelude::*;
use std::sync::Arc;
use tensorlet_kernels::{Kernels, ThreadPool, oracle};

/// Products: `|got - ref| <= 1e-4 · (1 + |ref|)` (f32 sums of up to a few hundred terms
/// against the oracle's f64 sums).
const TOL: f32 = 1e-4;

/// `len` values in `[-1, 1)` as `f64`.
fn random64(seed: u64, len: usize) -> Vec<f64> {
    random(seed, len, -1.0, 1.0)
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Largest `|got - want|` over `tol · (1 + |want|)`, failing with a message past 1.
fn check_close64(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Central finite differences of the scalar `f` at `x` along every coordinate, step `h`.
fn numeric_grad(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            x[i] = v + h;
            let up = f(&x);
            x[i] = v - h;
            let down = f(&x);
            x[i] = v;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// `Σ r ⊙ y`: a scalar loss whose gradient with respect to `y` is `r`.
fn dot(r: &[f64], y: &[f64]) -> f64 {
    r.iter().zip(y).map(|(a, b)| a * b).sum()
}

// ---------------------------------------------------------------------------------------
// matmul

#[allow(clippy::too_many_arguments)]
fn check_matmul(
    kernels: &[Kernels],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    seed: u64,
) -> Result<(), String> {
    let a = random(seed, m * k, -1.0, 1.0);
    let b = random(seed ^ 1, k * n, -1.0, 1.0);
    let start = random(seed ^ 2, m * n, -1.0, 1.0);
    let mut want = start.clone();
    oracle::matmul(&a, trans_a, &b, trans_b, m, k, n, accumulate, &mut want)
        .map_err(|e| e.to_string())?;
    for kern in kernels {
        let mut got = if accumulate {
            start.clone()
        } else {
            vec![f32::NAN; m * n]
        };
        kern.matmul(&a, trans_a, &b, trans_b, m, k, n, accumulate, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!(
                "matmul {m}x{k}x{n} ta={trans_a} tb={trans_b} acc={accumulate} at {:?} ({} threads)",
                kern.level(),
                kern.threads()
            ),
            &got,
            &want,
            TOL,
            TOL,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn matmul_matches_oracle(
        m in 0usize..=40,
        k in 0usize..=40,
        n in 0usize..=70,
        trans_a: bool,
        trans_b: bool,
        accumulate: bool,
        seed: u64,
    ) {
        check_matmul(&all_kernels(), m, k, n, trans_a, trans_b, accumulate, seed)
            .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn matmul_fixed_shapes() {
    // Vectors (m, n or k of 1), a k block boundary (KC = 1024), more columns than one column
    // block (256), row counts around the register tiles (4, 6, 12).
    let shapes = [
        (1, 1, 1),
        (1, 37, 1),
        (1, 300, 45),
        (45, 300, 1),
        (13, 1, 17),
        (25, 1030, 33),
        (12, 64, 300),
        (7, 129, 520),
        (64, 121, 288),
        (288, 64, 121),
        (288, 121, 64),
    ];
    let kernels = all_kernels();
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        for flags in 0..8u32 {
            let (ta, tb, acc) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
            check_matmul(&kernels, m, k, n, ta, tb, acc, 100 + i as u64).unwrap();
        }
    }
}

#[test]
fn matmul_hand_computed() {
    // a = [[1, 2], [3, 4]], b = [[5, 6], [7, 8]]:
    // a·b = [[19, 22], [43, 50]], aᵀ·b = [[26, 30], [38, 44]], a·bᵀ = [[17, 23], [39, 53]],
    // aᵀ·bᵀ = [[23, 31], [34, 46]].
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let cases = [
        (false, false, [19.0, 22.0, 43.0, 50.0]),
        (true, false, [26.0, 30.0, 38.0, 44.0]),
        (false, true, [17.0, 23.0, 39.0, 53.0]),
        (true, true, [23.0, 31.0, 34.0, 46.0]),
    ];
    for (ta, tb, want) in cases {
        let mut out = [0.0f32; 4];
        oracle::matmul(&a, ta, &b, tb, 2, 2, 2, false, &mut out).unwrap();
        assert_eq!(out, want, "oracle ta={ta} tb={tb}");
        for kern in all_kernels() {
            let mut out = [1.0f32; 4];
            kern.matmul(&a, ta, &b, tb, 2, 2, 2, false, &mut out)
                .unwrap();
            assert_eq!(out, want, "ta={ta} tb={tb} at {:?}", kern.level());
            // Accumulating adds the product to what is there.
            kern.matmul(&a, ta, &b, tb, 2, 2, 2, true, &mut out)
                .unwrap();
            assert_eq!(
                out,
                want.map(|v| 2.0 * v),
                "accumulate at {:?}",
                kern.level()
            );
        }
    }
    // k = 0: the product is zero; accumulating leaves `out` alone.
    for kern in all_kernels() {
        let mut out = [3.0f32; 6];
        kern.matmul(&[], false, &[], false, 2, 0, 3, true, &mut out)
            .unwrap();
        assert_eq!(out, [3.0; 6]);
        kern.matmul(&[], true, &[], true, 2, 0, 3, false, &mut out)
            .unwrap();
        assert_eq!(out, [0.0; 6]);
    }
}

#[test]
fn matmul_threads_match_one_thread() {
    // Large enough to split over 2 threads: every output row is computed by one thread, in
    // the same order, so the results are identical.
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    for level in Kernels::available_levels() {
        let one = Kernels::with_level(level).unwrap();
        let two = one.clone().with_pool(pool.clone());
        let (m, k, n) = (200, 300, 150);
        let a = random(1, m * k, -1.0, 1.0);
        let b = random(2, k * n, -1.0, 1.0);
        for flags in 0..8u32 {
            let (ta, tb, acc) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
            let mut x = random(3, m * n, -1.0, 1.0);
            let mut y = x.clone();
            one.matmul(&a, ta, &b, tb, m, k, n, acc, &mut x).unwrap();
            two.matmul(&a, ta, &b, tb, m, k, n, acc, &mut y).unwrap();
            assert_eq!(x, y, "ta={ta} tb={tb} acc={acc} at {level:?}");
        }
        check_matmul(&[two], m, k, n, true, false, true, 9).unwrap();
    }
}

#[test]
fn matmul_errors() {
    let kern = Kernels::detect();
    let mut out = [0.0; 6];
    // a is [2, 3] (or [3, 2] transposed), b is [3, 3]: out should be [2, 3].
    let err = kern
        .matmul(&[0.0; 5], false, &[0.0; 9], false, 2, 3, 3, false, &mut out)
        .unwrap_err();
    assert!(
        err.message
            .contains("`a` has length 5, expected 6 (m=2 × k=3)"),
        "{err}"
    );
    let err = kern
        .matmul(&[0.0; 5], true, &[0.0; 9], false, 2, 3, 3, false, &mut out)
        .unwrap_err();
    assert!(err.message.contains("(k=3 × m=2)"), "{err}");
    let err = kern
        .matmul(&[0.0; 6], false, &[0.0; 8], true, 2, 3, 3, false, &mut out)
        .unwrap_err();
    assert!(
        err.message
            .contains("`b` has length 8, expected 9 (n=3 × k=3)"),
        "{err}"
    );
    let err = kern
        .matmul(
            &[0.0; 6],
            false,
            &[0.0; 9],
            false,
            2,
            3,
            3,
            false,
            &mut out[..5],
        )
        .unwrap_err();
    assert!(
        err.message.contains("`out` has length 5, expected 6"),
        "{err}"
    );
    let err = kern
        .matmul(&[], false, &[], false, usize::MAX, 2, 0, false, &mut [])
        .unwrap_err();
    assert!(err.message.contains("overflows"), "{err}");
    assert_eq!(
        oracle::matmul(
            &[0.0f32; 5],
            false,
            &[0.0; 9],
            false,
            2,
            3,
            3,
            false,
            &mut out
        ),
        Err(err_of(&kern, 5)),
    );
}

/// The error [`Kernels::matmul`] gives for an `a` of `len` elements where 6 are expected.
fn err_of(kern: &Kernels, len: usize) -> tensorlet_kernels::KernelError {
    let mut out = [0.0; 6];
    kern.matmul(
        &vec![0.0; len],
        false,
        &[0.0; 9],
        false,
        2,
        3,
        3,
        false,
        &mut out,
    )
    .unwrap_err()
}

#[test]
fn dense_backward_oracle_matches_finite_differences() {
    // y = x·wᵀ (x [m, k], w [n, k]), loss Σ r ⊙ y: dx = r·w, dw = rᵀ·x, both oracle matmuls.
    let (m, k, n) = (3, 4, 5);
    let x = random64(1, m * k);
    let w = random64(2, n * k);
    let r = random64(3, m * n);
    let forward = |x: &[f64], w: &[f64]| {
        let mut y = vec![0.0; m * n];
        oracle::matmul(x, false, w, true, m, k, n, false, &mut y).unwrap();
        y
    };
    let mut dx = vec![0.0; m * k];
    oracle::matmul(&r, false, &w, false, m, n, k, false, &mut dx).unwrap();
    let mut dw = vec![0.0; n * k];
    oracle::matmul(&r, true, &x, false, n, m, k, false, &mut dw).unwrap();
    let h = 1e-6;
    let num_dx = numeric_grad(&x, h, |x| dot(&r, &forward(x, &w)));
    let num_dw = numeric_grad(&w, h, |w| dot(&r, &forward(&x, w)));
    check_close64("dense dx", &dx, &num_dx, 1e-8);
    check_close64("dense dw", &dw, &num_dw, 1e-8);
}
