//! The training ops at every SIMD level against the oracle (proptest over shapes with odd
//! tails, fixed shapes crossing the GEMM's blocks), the oracles' gradients against central
//! finite differences of their forward ops in `f64`, and the error paths.

mod common;

use common::{TOL, all_kernels, check_close, conv_tol, random, winograd_runs};
use proptest::prelude::*;
use std::sync::Arc;
use tensorlet_kernels::{
    Activation, Conv2dParams, KernelError, Kernels, Pool2dParams, ThreadPool, conv2d_out_shape,
    oracle, pool2d_out_shape,
};

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
    let mut db = vec![0.0; n];
    oracle::sum_rows(&r, m, n, &mut db).unwrap();
    let h = 1e-6;
    let num_dx = numeric_grad(&x, h, |x| dot(&r, &forward(x, &w)));
    let num_dw = numeric_grad(&w, h, |w| dot(&r, &forward(&x, w)));
    // With a bias: y[i, j] += b[j].
    let b = random64(4, n);
    let num_db = numeric_grad(&b, h, |b| {
        let y = forward(&x, &w);
        let y: Vec<f64> = y.iter().enumerate().map(|(i, v)| v + b[i % n]).collect();
        dot(&r, &y)
    });
    check_close64("dense dx", &dx, &num_dx, 1e-8);
    check_close64("dense dw", &dw, &num_dw, 1e-8);
    check_close64("dense db", &db, &num_db, 1e-8);
}

// ---------------------------------------------------------------------------------------
// conv2d backward

/// The weight gradient's tolerance where it runs as Winograd F(4 × 4, 3 × 3)
/// ([`winograd_runs`]): `|got - ref| <= tol · (4 + |ref|)`, the direct path's [`TOL`] scaled
/// by the measured error of the transforms (see `conv_grad`'s docs).
const DW_WINOGRAD_TOL: f32 = 5e-4;

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
        // Where Winograd runs, dx is its forward pass on `dy` (with the weights turned).
        let dx_tol = conv_tol(w_shape, p);
        check_close(&format!("dx {what}"), &dx, &want_dx, dx_tol, dx_tol)?;
        // Weights prepared once give the same gradient, bit for bit, on two calls.
        let packed = kern
            .pack_conv2d_backward_input(&w, w_shape, p)
            .map_err(|e| e.to_string())?;
        for call in 0..2 {
            let mut dx_packed = vec![f32::NAN; x.len()];
            kern.conv2d_backward_input_packed(&dy, &packed, x_shape, &mut dx_packed)
                .map_err(|e| e.to_string())?;
            if dx_packed
                .iter()
                .map(|v| v.to_bits())
                .ne(dx.iter().map(|v| v.to_bits()))
            {
                return Err(format!(
                    "dx from prepared weights (call {call}) differs: {what}"
                ));
            }
        }
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; w_shape[0]];
        kern.conv2d_backward_weights(&x, x_shape, &dy, w_shape, p, &mut dw, Some(&mut db))
            .map_err(|e| e.to_string())?;
        // dw and db sum over the batch and every pixel: a looser bound for the long sums,
        // and looser again where Winograd's transforms scale the rounding.
        let dw_tol = if winograd_runs(w_shape, p) {
            DW_WINOGRAD_TOL
        } else {
            TOL
        };
        check_close(&format!("dw {what}"), &dw, &want_dw, 4.0 * dw_tol, dw_tol)?;
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
        // Input gradients whose tiles add themselves into the image (channels per group a
        // multiple of the panel width at every level): batches of images per product (three
        // and two here), padded, strided, dilated, grouped, a tap over two panels.
        ([5, 32, 20, 20], [64, 32, 3, 3], Conv2dParams::default()),
        // Winograd weight gradients: padded, channels off whole vectors and panels (17 in,
        // 19 out; 40 in: two panels at AVX-512), outputs off whole tiles, and a batch of
        // several chunks of tiles (the seed CNN's second conv at batch 32).
        ([3, 17, 11, 12], [19, 17, 3, 3], pad1),
        ([2, 40, 10, 11], [20, 40, 3, 3], pad1),
        ([32, 32, 13, 13], [64, 32, 3, 3], Conv2dParams::default()),
        // Winograd input gradients with a strip of pixels past the tiles (rows 9 × 12, both
        // 13 × 13 above, columns with the full correlation unpadded in rows: 11 × 9).
        ([2, 16, 9, 12], [16, 16, 3, 3], pad1),
        (
            [2, 24, 11, 9],
            [20, 24, 3, 3],
            Conv2dParams {
                padding: (2, 0),
                ..Default::default()
            },
        ),
        (
            [3, 64, 9, 8],
            [10, 32, 3, 3],
            Conv2dParams {
                stride: (2, 1),
                padding: (1, 2),
                dilation: (1, 2),
                groups: 2,
            },
        ),
        ([2, 64, 6, 7], [8, 64, 3, 2], pad1),
        ([2, 1, 28, 28], [32, 1, 3, 3], pad1),
        // More taps than one k block of the GEMM (120·9 = 1080 > 1024).
        ([1, 120, 6, 5], [13, 120, 3, 3], pad1),
        // Several pixel blocks (18 taps: blocks of about 7000 pixels).
        ([1, 2, 130, 129], [3, 2, 3, 3], Conv2dParams::default()),
        // Several blocks of output rows whose patches share input rows (strided, padded),
        // with channel counts off whole vectors.
        (
            [1, 24, 70, 60],
            [5, 24, 3, 3],
            Conv2dParams {
                stride: (2, 1),
                padding: (1, 1),
                ..Default::default()
            },
        ),
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
        // Strided, dilated, grouped, unpadded (patches read in place) with 24 taps per
        // group.
        (
            [2, 8, 17, 15],
            [6, 4, 3, 2],
            Conv2dParams {
                stride: (2, 1),
                dilation: (1, 2),
                groups: 2,
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
fn conv2d_backward_empty_shapes() {
    // Empty products return `Ok`: no output channels (no `dY`; empty `dW` and `db`; `dX`
    // zero), and no images (`dW` and `db` sums over nothing: zero).
    let p = Conv2dParams::default();
    for kern in all_kernels() {
        let level = kern.level();
        // oc = 0: dY [1, 0, 2, 2] is empty.
        let x = random(1, 2 * 9, -1.0, 1.0);
        let (mut dw, mut db) = (Vec::new(), Vec::new());
        kern.conv2d_backward_weights(
            &x,
            [1, 2, 3, 3],
            &[],
            [0, 2, 2, 2],
            &p,
            &mut dw,
            Some(&mut db),
        )
        .unwrap_or_else(|e| panic!("{level:?}: oc = 0: {e}"));
        let mut dx = vec![9.0; 18];
        kern.conv2d_backward_input(&[], &[], [0, 2, 2, 2], [1, 2, 3, 3], &p, &mut dx)
            .unwrap_or_else(|e| panic!("{level:?}: oc = 0: {e}"));
        assert!(
            dx.iter().all(|&v| v == 0.0),
            "{level:?}: dX of no channels is 0"
        );
        // batch = 0: dW and db are sums over nothing.
        let (mut dw, mut db) = (vec![9.0; 3 * 2 * 4], vec![9.0; 3]);
        kern.conv2d_backward_weights(
            &[],
            [0, 2, 3, 3],
            &[],
            [3, 2, 2, 2],
            &p,
            &mut dw,
            Some(&mut db),
        )
        .unwrap_or_else(|e| panic!("{level:?}: batch = 0: {e}"));
        assert!(
            dw.iter().chain(&db).all(|&v| v == 0.0),
            "{level:?}: batch = 0"
        );
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
    // Prepared weights: checked when prepared, and against `dy`, `dx` and the level at use.
    let m = kern
        .pack_conv2d_backward_input(&w[..53], ws, &p)
        .unwrap_err()
        .message;
    assert!(m.contains("`w` has length 53, expected 54"), "{m}");
    let packed = kern.pack_conv2d_backward_input(&w, ws, &p).unwrap();
    let m = msg(kern.conv2d_backward_input_packed(&dy[..11], &packed, xs, &mut dx));
    assert!(m.contains("`dy` has length 11, expected 12"), "{m}");
    let m = msg(kern.conv2d_backward_input_packed(&dy, &packed, xs, &mut dx[..31]));
    assert!(m.contains("`dx` has length 31, expected 32"), "{m}");
    let m = msg(kern.conv2d_backward_input_packed(&dy, &packed, [1, 3, 4, 4], &mut dx));
    assert!(m.contains("input channels per group"), "{m}");
    for other in all_kernels()
        .into_iter()
        .filter(|k| k.level() != kern.level())
    {
        let m = msg(other.conv2d_backward_input_packed(&dy, &packed, xs, &mut dx));
        assert!(m.contains("conv2d gradient weights"), "{m}");
    }
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

// ---------------------------------------------------------------------------------------
// pooling backward

/// Checks max and average pooling backward at every level against the oracle.
fn check_pool_backward(x_shape: [usize; 4], p: &Pool2dParams, seed: u64) -> Result<(), String> {
    let out_shape = pool2d_out_shape(x_shape, p).map_err(|e| e.to_string())?;
    let x = random(seed, x_shape.iter().product(), -1.0, 1.0);
    let dy = random(seed ^ 1, out_shape.iter().product(), -1.0, 1.0);
    let mut want_max = vec![0.0; x.len()];
    let mut want_avg = vec![0.0; x.len()];
    oracle::max_pool2d_backward(&x, x_shape, p, &dy, &mut want_max).map_err(|e| e.to_string())?;
    oracle::avg_pool2d_backward(x_shape, p, &dy, &mut want_avg).map_err(|e| e.to_string())?;
    for kern in all_kernels() {
        let what = format!("x{x_shape:?} {p:?} at {:?}", kern.level());
        let mut got = vec![f32::NAN; x.len()];
        kern.max_pool2d_backward(&x, x_shape, p, &dy, &mut got)
            .map_err(|e| e.to_string())?;
        // Overlapping windows add a few f32 values.
        check_close(
            &format!("max_pool backward {what}"),
            &got,
            &want_max,
            1e-6,
            1e-6,
        )?;
        let mut got = vec![f32::NAN; x.len()];
        kern.avg_pool2d_backward(x_shape, p, &dy, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!("avg_pool backward {what}"),
            &got,
            &want_avg,
            1e-6,
            1e-6,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pool2d_backward_matches_oracle(
        n in 1usize..=2,
        c in 1usize..=3,
        h in 1usize..=13,
        w in 1usize..=13,
        kernel in (1usize..=4, 1usize..=4),
        stride in (1usize..=3, 1usize..=3),
        pad in (0usize..=2, 0usize..=2),
        seed: u64,
    ) {
        // Keep the geometry valid: padding <= kernel/2 and the window within the padded input.
        let padding = (pad.0.min(kernel.0 / 2), pad.1.min(kernel.1 / 2));
        let kernel = (kernel.0.min(h + 2 * padding.0), kernel.1.min(w + 2 * padding.1));
        let padding = (padding.0.min(kernel.0 / 2), padding.1.min(kernel.1 / 2));
        let p = Pool2dParams { kernel, stride, padding };
        check_pool_backward([n, c, h, w], &p, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn pool2d_backward_fixed_shapes() {
    let p2 = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    let p3 = Pool2dParams {
        kernel: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
    };
    // The seed CNN's pools (odd sizes drop the last row and column), overlapping windows.
    check_pool_backward([2, 32, 26, 26], &p2, 1).unwrap();
    check_pool_backward([2, 64, 11, 11], &p2, 2).unwrap();
    check_pool_backward([1, 3, 17, 40], &p3, 3).unwrap();
}

#[test]
fn max_pool2d_backward_ties_and_nan() {
    // All-equal windows: the first element in row-major order takes the gradient. 2×2 windows
    // with stride 1 on a 3×3 plane of zeros: window (oy, ox) picks (oy, ox).
    let p = Pool2dParams {
        kernel: (2, 2),
        stride: (1, 1),
        padding: (0, 0),
    };
    let x = [0.0f32; 9];
    let dy = [1.0, 2.0, 3.0, 4.0];
    let want = [1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
    // Padding never wins, even over -inf: with padding 1 and 2×2 windows, the corner windows
    // hold one real element each.
    let pad = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (1, 1),
    };
    let x2 = [f32::NEG_INFINITY; 4];
    let dy2 = [1.0, 2.0, 3.0, 4.0];
    let want2 = [1.0, 2.0, 3.0, 4.0];
    // A NaN wins its window (PyTorch's CPU rule), a later NaN over an earlier one.
    let x3 = [1.0, f32::NAN, 5.0, f32::NAN];
    let p3 = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    let want3 = [0.0, 0.0, 0.0, 7.0];
    let mut got = [9.0f32; 9];
    oracle::max_pool2d_backward(&x, [1, 1, 3, 3], &p, &dy, &mut got).unwrap();
    assert_eq!(got, want, "oracle ties");
    let mut got2 = [9.0f32; 4];
    oracle::max_pool2d_backward(&x2, [1, 1, 2, 2], &pad, &dy2, &mut got2).unwrap();
    assert_eq!(got2, want2, "oracle padding");
    oracle::max_pool2d_backward(&x3, [1, 1, 2, 2], &p3, &[7.0], &mut got2).unwrap();
    assert_eq!(got2, want3, "oracle NaN");
    for kern in all_kernels() {
        let mut got = [9.0f32; 9];
        kern.max_pool2d_backward(&x, [1, 1, 3, 3], &p, &dy, &mut got)
            .unwrap();
        assert_eq!(got, want, "ties at {:?}", kern.level());
        let mut got2 = [9.0f32; 4];
        kern.max_pool2d_backward(&x2, [1, 1, 2, 2], &pad, &dy2, &mut got2)
            .unwrap();
        assert_eq!(got2, want2, "padding at {:?}", kern.level());
        kern.max_pool2d_backward(&x3, [1, 1, 2, 2], &p3, &[7.0], &mut got2)
            .unwrap();
        assert_eq!(got2, want3, "NaN at {:?}", kern.level());
    }
    // Average: every window element gets dy / (kh·kw), padding included in the count.
    let mut got = [9.0f32; 4];
    kern_all_avg(&pad, &dy2, &mut got);
    assert_eq!(got, [0.25, 0.5, 0.75, 1.0]);
}

#[test]
fn max_pool2d_backward_tiled_windows_with_ties() {
    // Windows that tile the input (stride = window, no padding) take a vectorised path:
    // values drawn from {0, 1, -inf, NaN} make ties, all-equal windows and NaNs common, and
    // rows wider than a vector's worth of windows (w = 40) cover the chunk tails. The oracle
    // is exact here (each element gets one window's gradient or 0).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let x: Vec<f32> = (0..2 * 3 * 9 * 40)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 16 {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2..=8 => 0.0,
                _ => 1.0,
            }
        })
        .collect();
    // The same values without NaNs: 2×2 windows then take their in-layout path everywhere.
    let no_nan: Vec<f32> = x
        .iter()
        .map(|&v| if v.is_nan() { 1.0 } else { v })
        .collect();
    let xs = [2, 3, 9, 40];
    for (x, kernel, stride) in [
        (&x, (2, 2), (2, 2)),
        (&no_nan, (2, 2), (2, 2)),
        (&x, (3, 3), (3, 3)),
        (&x, (2, 3), (2, 3)),
        (&x, (4, 4), (4, 4)),
    ] {
        let p = Pool2dParams {
            kernel,
            stride,
            padding: (0, 0),
        };
        let os = pool2d_out_shape(xs, &p).unwrap();
        let dy: Vec<f32> = (0..os.iter().product::<usize>())
            .map(|i| 1.0 + i as f32)
            .collect();
        let mut want = vec![9.0f32; x.len()];
        oracle::max_pool2d_backward(x, xs, &p, &dy, &mut want).unwrap();
        for kern in all_kernels() {
            let mut got = vec![9.0f32; x.len()];
            kern.max_pool2d_backward(x, xs, &p, &dy, &mut got).unwrap();
            assert_eq!(got, want, "{kernel:?} windows at {:?}", kern.level());
        }
    }
}

/// Runs avg_pool2d_backward on a [1, 1, 2, 2] input at every level and the oracle, checking
/// that they agree exactly, and leaves the result in `out`.
fn kern_all_avg(p: &Pool2dParams, dy: &[f32], out: &mut [f32]) {
    oracle::avg_pool2d_backward([1, 1, 2, 2], p, dy, out).unwrap();
    for kern in all_kernels() {
        let mut got = vec![9.0f32; out.len()];
        kern.avg_pool2d_backward([1, 1, 2, 2], p, dy, &mut got)
            .unwrap();
        assert_eq!(got, out, "{:?}", kern.level());
    }
}

#[test]
fn pool2d_backward_oracle_matches_finite_differences() {
    let cases = [
        (
            [1, 2, 6, 7],
            Pool2dParams {
                kernel: (2, 2),
                stride: (2, 2),
                padding: (0, 0),
            },
        ),
        (
            [2, 1, 5, 5],
            Pool2dParams {
                kernel: (3, 2),
                stride: (1, 2),
                padding: (1, 1),
            },
        ),
    ];
    for (i, (xs, p)) in cases.iter().enumerate() {
        let os = pool2d_out_shape(*xs, p).unwrap();
        // Random inputs have no ties: the max is differentiable there.
        let x = random64(400 + i as u64, xs.iter().product());
        let r = random64(500 + i as u64, os.iter().product());
        let mut dmax = vec![0.0; x.len()];
        let mut davg = vec![0.0; x.len()];
        oracle::max_pool2d_backward(&x, *xs, p, &r, &mut dmax).unwrap();
        oracle::avg_pool2d_backward(*xs, p, &r, &mut davg).unwrap();
        let pooled = |x: &[f64], max: bool| {
            let mut y = vec![0.0; r.len()];
            if max {
                oracle::max_pool2d(x, *xs, p, &mut y).unwrap();
            } else {
                oracle::avg_pool2d(x, *xs, p, &mut y).unwrap();
            }
            dot(&r, &y)
        };
        let h = 1e-7;
        check_close64(
            "max_pool dx",
            &dmax,
            &numeric_grad(&x, h, |x| pooled(x, true)),
            1e-7,
        );
        check_close64(
            "avg_pool dx",
            &davg,
            &numeric_grad(&x, h, |x| pooled(x, false)),
            1e-7,
        );
    }
}

#[test]
fn pool2d_backward_errors() {
    let kern = Kernels::detect();
    let p = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    let xs = [1, 1, 4, 4];
    let (x, dy) = (vec![0.0; 16], vec![0.0; 4]);
    let mut dx = vec![0.0; 16];
    let msg = |r: Result<(), KernelError>| r.unwrap_err().message;
    let m = msg(kern.max_pool2d_backward(&x[..15], xs, &p, &dy, &mut dx));
    assert!(m.contains("`x` has length 15, expected 16"), "{m}");
    let m = msg(kern.max_pool2d_backward(&x, xs, &p, &dy[..3], &mut dx));
    assert!(
        m.contains("`dy` has length 3, expected 4 (shape [1, 1, 2, 2])"),
        "{m}"
    );
    let m = msg(kern.avg_pool2d_backward(xs, &p, &dy, &mut dx[..1]));
    assert!(m.contains("`dx` has length 1, expected 16"), "{m}");
    let bad = Pool2dParams {
        padding: (2, 0),
        ..p
    };
    let m = msg(kern.avg_pool2d_backward(xs, &bad, &dy, &mut dx));
    assert!(m.contains("more than half the kernel"), "{m}");
}

// ---------------------------------------------------------------------------------------
// activations

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn activation_backward_matches_oracle(len in 0usize..=100, seed: u64) {
        let x = random(seed, len, -4.0, 4.0);
        let dy = random(seed ^ 1, len, -1.0, 1.0);
        for act in [Activation::None, Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
            let mut y = x.clone();
            oracle::activate(&mut y, act);
            let mut want = vec![0.0; len];
            oracle::activation_backward(&y, &dy, act, &mut want).unwrap();
            for kern in all_kernels() {
                let mut got = vec![f32::NAN; len];
                kern.activation_backward(&y, &dy, act, &mut got).unwrap();
                check_close(&format!("{act:?} backward at {:?}", kern.level()), &got, &want, 1e-7, 1e-6)
                    .map_err(TestCaseError::fail)?;
            }
        }
    }
}

#[test]
fn activation_backward_hand_computed() {
    // relu: y = [0, 2] → [0, dy]; sigmoid: y = 0.5 → 0.25·dy; tanh: y = 0.5 → 0.75·dy.
    let cases = [
        (Activation::Relu, [0.0, 2.0], [0.0, 3.0]),
        (Activation::Sigmoid, [0.5, 0.25], [0.75, 0.5625]),
        (Activation::Tanh, [0.5, -0.5], [2.25, 2.25]),
        (Activation::None, [7.0, -7.0], [3.0, 3.0]),
    ];
    for (act, y, want) in cases {
        let mut got = [0.0f32; 2];
        oracle::activation_backward(&y, &[3.0, 3.0], act, &mut got).unwrap();
        assert_eq!(got, want, "oracle {act:?}");
        for kern in all_kernels() {
            kern.activation_backward(&y, &[3.0, 3.0], act, &mut got)
                .unwrap();
            assert_eq!(got, want, "{act:?} at {:?}", kern.level());
        }
    }
}

#[test]
fn activation_backward_oracle_matches_finite_differences() {
    let x = random64(600, 50);
    for act in [
        Activation::None,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
    ] {
        // Relu's kink at 0 is not sampled: the random inputs are never exactly 0.
        let y: Vec<f64> = x.iter().map(|&v| oracle::activation(act, v)).collect();
        let mut got = vec![0.0; x.len()];
        oracle::activation_backward(&y, &vec![1.0; x.len()], act, &mut got).unwrap();
        let h = 1e-6;
        let want: Vec<f64> = x
            .iter()
            .map(|&v| (oracle::activation(act, v + h) - oracle::activation(act, v - h)) / (2.0 * h))
            .collect();
        check_close64(&format!("{act:?}"), &got, &want, 1e-8);
    }
}

#[test]
fn activation_backward_errors() {
    let kern = Kernels::detect();
    let mut dx = [0.0; 3];
    let m = kern
        .activation_backward(&[0.0; 3], &[0.0; 3], Activation::Gelu, &mut dx)
        .unwrap_err()
        .message;
    assert!(m.contains("unsupported for Gelu"), "{m}");
    let m = kern
        .activation_backward(&[0.0; 3], &[0.0; 2], Activation::Relu, &mut dx)
        .unwrap_err()
        .message;
    assert!(m.contains("`dy` has length 2, expected 3"), "{m}");
    let m = kern
        .activation_backward(&[0.0; 3], &[0.0; 3], Activation::Relu, &mut dx[..1])
        .unwrap_err()
        .message;
    assert!(m.contains("`dx` has length 1, expected 3"), "{m}");
}

// ---------------------------------------------------------------------------------------
// losses and sum_rows

/// Loss tolerance: `|got - ref| <= 1e-6 + 1e-5·|ref|`.
const LOSS_REL: f32 = 1e-5;
const LOSS_ABS: f32 = 1e-6;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn softmax_cross_entropy_matches_oracle(
        rows in 1usize..=9,
        classes in 1usize..=40,
        scale in prop::sample::select(vec![0.1f32, 3.0, 30.0]),
        seed: u64,
    ) {
        let logits = random(seed, rows * classes, -scale, scale);
        let labels: Vec<u32> = random(seed ^ 1, rows, 0.0, classes as f32)
            .iter()
            .map(|&v| (v as u32).min(classes as u32 - 1))
            .collect();
        let mut want = vec![0.0; logits.len()];
        let want_loss = oracle::softmax_cross_entropy(&logits, &labels, classes, &mut want).unwrap();
        for kern in all_kernels() {
            let what = format!("{rows}x{classes} scale {scale} at {:?}", kern.level());
            let mut grad = vec![f32::NAN; logits.len()];
            let loss = kern.softmax_cross_entropy(&logits, &labels, classes, &mut grad).unwrap();
            check_close(&format!("loss {what}"), &[loss], &[want_loss], LOSS_ABS, LOSS_REL)
                .map_err(TestCaseError::fail)?;
            check_close(&format!("grad {what}"), &grad, &want, LOSS_ABS, LOSS_REL)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn mse_and_bce_match_oracle(
        len in 1usize..=200,
        scale in prop::sample::select(vec![0.5f32, 5.0, 60.0]),
        seed: u64,
    ) {
        let input = random(seed, len, -scale, scale);
        let target = random(seed ^ 1, len, 0.0, 1.0);
        let mut want = vec![0.0; len];
        let want_mse = oracle::mse(&input, &target, &mut want).unwrap();
        let mut want_b = vec![0.0; len];
        let want_bce = oracle::bce_with_logits(&input, &target, &mut want_b).unwrap();
        for kern in all_kernels() {
            let what = format!("len {len} scale {scale} at {:?}", kern.level());
            let mut grad = vec![f32::NAN; len];
            let loss = kern.mse(&input, &target, &mut grad).unwrap();
            check_close(&format!("mse {what}"), &[loss], &[want_mse], LOSS_ABS, LOSS_REL)
                .map_err(TestCaseError::fail)?;
            check_close(&format!("mse grad {what}"), &grad, &want, LOSS_ABS, LOSS_REL)
                .map_err(TestCaseError::fail)?;
            let loss = kern.bce_with_logits(&input, &target, &mut grad).unwrap();
            check_close(&format!("bce {what}"), &[loss], &[want_bce], LOSS_ABS, LOSS_REL)
                .map_err(TestCaseError::fail)?;
            // σ(z) - t: absolute error of σ, scaled by 1/len.
            check_close(&format!("bce grad {what}"), &grad, &want_b, 1e-7, LOSS_REL)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn sum_rows_matches_oracle(rows in 0usize..=12, cols in 0usize..=80, seed: u64) {
        let x = random(seed, rows * cols, -1.0, 1.0);
        let mut want = vec![0.0; cols];
        oracle::sum_rows(&x, rows, cols, &mut want).unwrap();
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; cols];
            kern.sum_rows(&x, rows, cols, &mut got).unwrap();
            check_close(&format!("sum_rows {rows}x{cols} at {:?}", kern.level()), &got, &want, 1e-6, 1e-6)
                .map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn losses_hand_computed() {
    let ln2 = core::f32::consts::LN_2;
    for kern in all_kernels() {
        let level = kern.level();
        // Two equal logits, label 0: loss ln 2, grad [0.5 - 1, 0.5]. Two rows: each row's
        // gradient is halved, the loss is the mean.
        let mut g = [0.0f32; 4];
        let loss = kern
            .softmax_cross_entropy(&[0.0, 0.0, 0.0, 0.0], &[0, 1], 2, &mut g)
            .unwrap();
        assert!((loss - ln2).abs() < 1e-6, "{level:?}: {loss}");
        check_close("ce grad", &g, &[-0.25, 0.25, 0.25, -0.25], 1e-7, 0.0).unwrap();
        // One class: loss 0, gradient 0.
        let mut g1 = [9.0f32; 3];
        let loss = kern
            .softmax_cross_entropy(&[5.0, -1.0, 0.0], &[0, 0, 0], 1, &mut g1)
            .unwrap();
        assert_eq!((loss, g1), (0.0, [0.0; 3]), "{level:?}");
        // MSE of [1, 3] against [0, 0]: (1 + 9) / 2 = 5, grad 2·d/2 = [1, 3].
        let mut g2 = [0.0f32; 2];
        assert_eq!(kern.mse(&[1.0, 3.0], &[0.0, 0.0], &mut g2).unwrap(), 5.0);
        assert_eq!(g2, [1.0, 3.0], "{level:?}");
        // BCE at z = 0: ln 2 whatever the target, grad (0.5 - t) / 2.
        let loss = kern
            .bce_with_logits(&[0.0, 0.0], &[0.0, 1.0], &mut g2)
            .unwrap();
        assert!((loss - ln2).abs() < 1e-6, "{level:?}: {loss}");
        assert_eq!(g2, [0.25, -0.25], "{level:?}");
        // Large logits neither overflow nor cancel: z = ±50 against the wrong target costs 50.
        let loss = kern
            .bce_with_logits(&[50.0, -50.0], &[0.0, 1.0], &mut g2)
            .unwrap();
        assert!((loss - 50.0).abs() < 1e-4, "{level:?}: {loss}");
        check_close("bce grad", &g2, &[0.5, -0.5], 1e-7, 0.0).unwrap();
        // sum_rows of [[1, 2, 3], [4, 5, 6]].
        let mut s = [0.0f32; 3];
        kern.sum_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3, &mut s)
            .unwrap();
        assert_eq!(s, [5.0, 7.0, 9.0], "{level:?}");
    }
}

#[test]
fn loss_oracles_match_finite_differences() {
    let h = 1e-6;
    // Softmax cross-entropy: 3 rows of 5 classes.
    let logits = random64(700, 15)
        .iter()
        .map(|v| 3.0 * v)
        .collect::<Vec<_>>();
    let labels = [4u32, 0, 2];
    let mut grad = vec![0.0; 15];
    oracle::softmax_cross_entropy(&logits, &labels, 5, &mut grad).unwrap();
    let num = numeric_grad(&logits, h, |z| {
        oracle::softmax_cross_entropy(z, &labels, 5, &mut [0.0; 15]).unwrap()
    });
    check_close64("softmax cross-entropy", &grad, &num, 1e-7);
    // MSE and BCE with logits.
    let input = random64(701, 20)
        .iter()
        .map(|v| 4.0 * v)
        .collect::<Vec<_>>();
    let target = random(702, 20, 0.0, 1.0)
        .into_iter()
        .map(f64::from)
        .collect::<Vec<_>>();
    let mut g = vec![0.0; 20];
    oracle::mse(&input, &target, &mut g).unwrap();
    let num = numeric_grad(&input, h, |p| {
        oracle::mse(p, &target, &mut [0.0; 20]).unwrap()
    });
    check_close64("mse", &g, &num, 1e-7);
    oracle::bce_with_logits(&input, &target, &mut g).unwrap();
    let num = numeric_grad(&input, h, |z| {
        oracle::bce_with_logits(z, &target, &mut [0.0; 20]).unwrap()
    });
    check_close64("bce with logits", &g, &num, 1e-7);
}

#[test]
fn loss_errors() {
    let kern = Kernels::detect();
    let mut g = [0.0f32; 6];
    let msg = |r: Result<f32, KernelError>| r.unwrap_err().message;
    let m = msg(kern.softmax_cross_entropy(&[0.0; 6], &[0, 3], 3, &mut g));
    assert!(
        m.contains("`labels[1]` is 3, expected a class index < classes 3"),
        "{m}"
    );
    let m = msg(kern.softmax_cross_entropy(&[0.0; 6], &[0, 1], 0, &mut g));
    assert!(m.contains("`classes` is 0"), "{m}");
    let m = msg(kern.softmax_cross_entropy(&[], &[], 3, &mut []));
    assert!(m.contains("`labels` is empty"), "{m}");
    let m = msg(kern.softmax_cross_entropy(&[0.0; 5], &[0, 1], 3, &mut g));
    assert!(
        m.contains("`logits` has length 5, expected 6 (rows=2 × classes=3)"),
        "{m}"
    );
    let m = msg(kern.softmax_cross_entropy(&[0.0; 6], &[0, 1], 3, &mut g[..5]));
    assert!(m.contains("`grad` has length 5, expected 6"), "{m}");
    let m = msg(kern.mse(&[0.0; 3], &[0.0; 2], &mut g[..3]));
    assert!(
        m.contains("`target` has length 2, expected 3 (the length of `pred`)"),
        "{m}"
    );
    let m = msg(kern.mse(&[], &[], &mut []));
    assert!(m.contains("`pred` is empty"), "{m}");
    let m = msg(kern.bce_with_logits(&[0.0; 3], &[0.0; 3], &mut g[..4]));
    assert!(
        m.contains("`grad` has length 4, expected 3 (the length of `logits`)"),
        "{m}"
    );
    let m = msg(kern.bce_with_logits(&[], &[], &mut []));
    assert!(m.contains("`logits` is empty"), "{m}");
    let m = kern
        .sum_rows(&[0.0; 5], 2, 3, &mut g[..3])
        .unwrap_err()
        .message;
    assert!(
        m.contains("`x` has length 5, expected 6 (rows=2 × cols=3)"),
        "{m}"
    );
    let m = kern
        .sum_rows(&[0.0; 6], 2, 3, &mut g[..2])
        .unwrap_err()
        .message;
    assert!(m.contains("`out` has length 2, expected 3 (cols=3)"), "{m}");
    // The oracles validate the same way.
    let m = oracle::softmax_cross_entropy(&[0.0f32; 6], &[0, 3], 3, &mut g)
        .unwrap_err()
        .message;
    assert!(m.contains("`labels[1]` is 3"), "{m}");
}
