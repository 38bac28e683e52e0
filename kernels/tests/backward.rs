//! The training ops at every SIMD level against the oracle (proptest over shapes with odd
//! tails, fixed shapes crossing the GEMM's blocks), the oracles' gradients against central
//! finite differences of their forward ops in `f64`, and the error paths.

mod common;

use common::{all_kernels, check_close, random};
use proptest::prelude::*;
use std::sync::Arc;
use tensorlet_kernels::{
    Activation, Conv2dParams, KernelError, Kernels, ThreadPool, conv2d_out_shape, oracle,
};

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
fn err_of(kern: &Kernels, len: usize) -> KernelError {
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

// ---------------------------------------------------------------------------------------
// conv2d backward

/// Checks both conv2d gradients at every level against the oracle.
fn check_conv_backward(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    p: &Conv2dParams,
    seed: u64,
) -> Result<(), String> {
    let out_shape = conv2d_out_shape(x_shape, w_shape, p).map_err(|e| e.to_string())?;
    let x = random(seed, x_shape.iter().product(), -1.0, 1.0);
    let w = random(seed ^ 1, w_shape.iter().product(), -1.0, 1.0);
    let dy = random(seed ^ 2, out_shape.iter().product(), -1.0, 1.0);
    let mut want_dx = vec![0.0; x.len()];
    let mut want_dw = vec![0.0; w.len()];
    let mut want_db = vec![0.0; w_shape[0]];
    oracle::conv2d_backward_input(&dy, &w, w_shape, x_shape, p, &mut want_dx)
        .map_err(|e| e.to_string())?;
    oracle::conv2d_backward_weights(
        &x,
        x_shape,
        &dy,
        w_shape,
        p,
        &mut want_dw,
        Some(&mut want_db),
    )
    .map_err(|e| e.to_string())?;
    for kern in all_kernels() {
        let what = format!("x{x_shape:?} w{w_shape:?} {p:?} at {:?}", kern.level());
        let mut dx = vec![f32::NAN; x.len()];
        kern.conv2d_backward_input(&dy, &w, w_shape, x_shape, p, &mut dx)
            .map_err(|e| e.to_string())?;
        check_close(&format!("dx {what}"), &dx, &want_dx, TOL, TOL)?;
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; w_shape[0]];
        kern.conv2d_backward_weights(&x, x_shape, &dy, w_shape, p, &mut dw, Some(&mut db))
            .map_err(|e| e.to_string())?;
        // dw and db sum over the batch and every pixel: a looser bound for the long sums.
        check_close(&format!("dw {what}"), &dw, &want_dw, 4.0 * TOL, TOL)?;
        check_close(&format!("db {what}"), &db, &want_db, 4.0 * TOL, TOL)?;
        let mut dw2 = vec![f32::NAN; w.len()];
        kern.conv2d_backward_weights(&x, x_shape, &dy, w_shape, p, &mut dw2, None)
            .map_err(|e| e.to_string())?;
        if dw2 != dw {
            return Err(format!("dw without db differs from dw with db: {what}"));
        }
    }
    Ok(())
}

/// Group structure for the conv proptest.
#[derive(Clone, Copy, Debug)]
enum Grouping {
    /// `groups = 1`.
    Dense,
    /// `groups = 2`.
    Two,
    /// `groups = c` (depthwise, with a channel multiplier).
    Depthwise,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn conv2d_backward_matches_oracle(
        batch in 1usize..=3,
        grouping in prop::sample::select(&[Grouping::Dense, Grouping::Two, Grouping::Depthwise][..]),
        cg in 1usize..=4,
        ocg in 1usize..=5,
        h in 1usize..=11,
        w in 1usize..=11,
        kh in 1usize..=4,
        kw in 1usize..=4,
        stride in (1usize..=3, 1usize..=3),
        padding in (0usize..=2, 0usize..=2),
        dilation in (1usize..=2, 1usize..=2),
        seed: u64,
    ) {
        let (groups, cg) = match grouping {
            Grouping::Dense => (1, cg),
            Grouping::Two => (2, cg),
            Grouping::Depthwise => (cg, 1),
        };
        // Shrink the kernel until its dilated extent fits the padded input.
        let kh = kh.min((h + 2 * padding.0 - 1) / dilation.0 + 1);
        let kw = kw.min((w + 2 * padding.1 - 1) / dilation.1 + 1);
        let p = Conv2dParams { stride, padding, dilation, groups };
        let x_shape = [batch, groups * cg, h, w];
        let w_shape = [groups * ocg, cg, kh, kw];
        check_conv_backward(x_shape, w_shape, &p, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn conv2d_backward_fixed_shapes() {
    let pad1 = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let cases = [
        // The seed CNN's second conv (batch 2) and first (padding 1).
        ([2, 32, 13, 13], [64, 32, 3, 3], Conv2dParams::default()),
        ([2, 1, 28, 28], [32, 1, 3, 3], pad1),
        // More taps than one k block of the GEMM (120·9 = 1080 > 1024).
        ([1, 120, 6, 5], [13, 120, 3, 3], pad1),
        // Several pixel blocks (18 taps: blocks of about 7000 pixels).
        ([1, 2, 130, 129], [3, 2, 3, 3], Conv2dParams::default()),
        // Strided, dilated, grouped, 1×1.
        (
            [2, 6, 17, 15],
            [9, 2, 3, 2],
            Conv2dParams {
                stride: (2, 3),
                padding: (1, 0),
                dilation: (2, 1),
                groups: 3,
            },
        ),
        (
            [1, 16, 9, 7],
            [33, 16, 1, 1],
            Conv2dParams {
                stride: (2, 2),
                ..Default::default()
            },
        ),
        // Depthwise with a channel multiplier.
        (
            [2, 4, 10, 10],
            [8, 1, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                groups: 4,
                ..Default::default()
            },
        ),
        // Output rows of one pixel, batch of 0.
        ([1, 3, 40, 3], [5, 3, 3, 3], Conv2dParams::default()),
        ([0, 3, 5, 5], [2, 3, 3, 3], Conv2dParams::default()),
    ];
    for (i, (x_shape, w_shape, p)) in cases.iter().enumerate() {
        check_conv_backward(*x_shape, *w_shape, p, 200 + i as u64).unwrap();
    }
}

#[test]
fn conv2d_backward_hand_computed() {
    // x 3×3 = 1..9, w 2×2 = [[1, 2], [3, 4]], valid conv: y 2×2. With dy = [[1, 0], [0, 0]]
    // only y[0][0] = 1·1 + 2·2 + 3·4 + 4·5 matters: dw = x's top-left 2×2 window
    // [[1, 2], [4, 5]], dx = w placed at the top-left: [[1, 2, 0], [3, 4, 0], [0, 0, 0]],
    // db = 1. With dy all ones, db = 4 and dw[i][j] is the sum of the 2×2 windows' (i, j)
    // elements: [[1+2+4+5, 2+3+5+6], [4+5+7+8, 5+6+8+9]] = [[12, 16], [24, 28]].
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let w = [1.0, 2.0, 3.0, 4.0];
    let (xs, ws) = ([1, 1, 3, 3], [1, 1, 2, 2]);
    let p = Conv2dParams::default();
    let cases = [
        (
            [1.0, 0.0, 0.0, 0.0],
            [1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 2.0, 4.0, 5.0],
            1.0,
        ),
        (
            [1.0; 4],
            [1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0],
            [12.0, 16.0, 24.0, 28.0],
            4.0,
        ),
    ];
    for (dy, want_dx, want_dw, want_db) in cases {
        let (mut dx, mut dw, mut db) = ([0.0f32; 9], [0.0f32; 4], [0.0f32; 1]);
        oracle::conv2d_backward_input(&dy, &w, ws, xs, &p, &mut dx).unwrap();
        oracle::conv2d_backward_weights(&x, xs, &dy, ws, &p, &mut dw, Some(&mut db)).unwrap();
        assert_eq!((dx, dw, db), (want_dx, want_dw, [want_db]), "oracle");
        for kern in all_kernels() {
            let (mut dx, mut dw, mut db) = ([9.0f32; 9], [9.0f32; 4], [9.0f32; 1]);
            kern.conv2d_backward_input(&dy, &w, ws, xs, &p, &mut dx)
                .unwrap();
            kern.conv2d_backward_weights(&x, xs, &dy, ws, &p, &mut dw, Some(&mut db))
                .unwrap();
            assert_eq!(
                (dx, dw, db),
                (want_dx, want_dw, [want_db]),
                "{:?}",
                kern.level()
            );
        }
    }
}

#[test]
fn conv2d_backward_oracle_matches_finite_differences() {
    // loss = Σ r ⊙ conv2d(x, w, b): its gradients are the backward oracles applied to r.
    let cases = [
        ([2, 2, 5, 6], [3, 2, 3, 2], Conv2dParams::default()),
        (
            [1, 4, 7, 6],
            [4, 2, 3, 3],
            Conv2dParams {
                stride: (2, 1),
                padding: (1, 2),
                dilation: (1, 2),
                groups: 2,
            },
        ),
    ];
    for (i, (xs, ws, p)) in cases.iter().enumerate() {
        let (xs, ws) = (*xs, *ws);
        let os = conv2d_out_shape(xs, ws, p).unwrap();
        let seed = 300 + i as u64;
        let x = random64(seed, xs.iter().product());
        let w = random64(seed ^ 1, ws.iter().product());
        let b = random64(seed ^ 2, ws[0]);
        let r = random64(seed ^ 3, os.iter().product());
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; r.len()];
            oracle::conv2d(x, xs, w, ws, Some(b), p, Activation::None, &mut y).unwrap();
            dot(&r, &y)
        };
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; b.len()];
        oracle::conv2d_backward_input(&r, &w, ws, xs, p, &mut dx).unwrap();
        oracle::conv2d_backward_weights(&x, xs, &r, ws, p, &mut dw, Some(&mut db)).unwrap();
        let h = 1e-6;
        check_close64(
            "conv dx",
            &dx,
            &numeric_grad(&x, h, |x| loss(x, &w, &b)),
            1e-7,
        );
        check_close64(
            "conv dw",
            &dw,
            &numeric_grad(&w, h, |w| loss(&x, w, &b)),
            1e-7,
        );
        check_close64(
            "conv db",
            &db,
            &numeric_grad(&b, h, |b| loss(&x, &w, b)),
            1e-7,
        );
    }
}

#[test]
fn conv2d_backward_errors() {
    let kern = Kernels::detect();
    let p = Conv2dParams::default();
    let (xs, ws) = ([1, 2, 4, 4], [3, 2, 3, 3]);
    // out [1, 3, 2, 2]: 12 elements; x 32, w 54.
    let (x, w, dy) = (vec![0.0; 32], vec![0.0; 54], vec![0.0; 12]);
    let (mut dx, mut dw, mut db) = (vec![0.0; 32], vec![0.0; 54], vec![0.0; 3]);
    let msg = |r: Result<(), KernelError>| r.unwrap_err().message;
    let m = msg(kern.conv2d_backward_input(&dy[..11], &w, ws, xs, &p, &mut dx));
    assert!(
        m.contains("`dy` has length 11, expected 12 (shape [1, 3, 2, 2])"),
        "{m}"
    );
    let m = msg(kern.conv2d_backward_input(&dy, &w[..53], ws, xs, &p, &mut dx));
    assert!(m.contains("`w` has length 53, expected 54"), "{m}");
    let m = msg(kern.conv2d_backward_input(&dy, &w, ws, xs, &p, &mut dx[..31]));
    assert!(m.contains("`dx` has length 31, expected 32"), "{m}");
    let m = msg(kern.conv2d_backward_input(&dy, &w, [3, 1, 3, 3], xs, &p, &mut dx));
    assert!(m.contains("input channels per group"), "{m}");
    let m = msg(kern.conv2d_backward_weights(&x[..30], xs, &dy, ws, &p, &mut dw, None));
    assert!(m.contains("`x` has length 30, expected 32"), "{m}");
    let m = msg(kern.conv2d_backward_weights(&x, xs, &dy[..1], ws, &p, &mut dw, None));
    assert!(m.contains("`dy` has length 1, expected 12"), "{m}");
    let m = msg(kern.conv2d_backward_weights(&x, xs, &dy, ws, &p, &mut dw[..1], None));
    assert!(m.contains("`dw` has length 1, expected 54"), "{m}");
    let m = msg(kern.conv2d_backward_weights(&x, xs, &dy, ws, &p, &mut dw, Some(&mut db[..2])));
    assert!(m.contains("`db` has length 2, expected 3"), "{m}");
    let big = Conv2dParams {
        stride: (0, 1),
        ..p
    };
    let m = msg(kern.conv2d_backward_weights(&x, xs, &dy, ws, &big, &mut dw, None));
    assert!(m.contains("`stride` height is 0"), "{m}");
    // The oracle validates the same way.
    let m = msg(oracle::conv2d_backward_input(
        &dy[..11],
        &w,
        ws,
        xs,
        &p,
        &mut dx,
    ));
    assert!(m.contains("`dy` has length 11"), "{m}");
}
