//! Pooling, activations, softmax and broadcasting add/mul at every SIMD level against the
//! oracle, hand-computed cases, and the error paths of every entry point.

mod common;

use common::{ACTIVATIONS, all_kernels, check_close, random};
use proptest::prelude::*;
use tensorlet_kernels::{
    Activation, Conv2dParams, Kernels, Pool2dParams, conv2d_out_shape, oracle, pool2d_out_shape,
};

/// Activation/softmax tolerance: `|got - ref| <= ABS + REL·|ref|`.
const REL: f32 = 1e-5;
const ABS: f32 = 1e-7;

fn check_pool(x_shape: [usize; 4], p: &Pool2dParams, seed: u64) -> Result<(), String> {
    let out_shape = pool2d_out_shape(x_shape, p).map_err(|e| e.to_string())?;
    let x = random(seed, x_shape.iter().product(), -1.0, 1.0);
    let len = out_shape.iter().product();
    let mut want_max = vec![0.0; len];
    let mut want_avg = vec![0.0; len];
    oracle::max_pool2d(&x, x_shape, p, &mut want_max).map_err(|e| e.to_string())?;
    oracle::avg_pool2d(&x, x_shape, p, &mut want_avg).map_err(|e| e.to_string())?;
    for kern in all_kernels() {
        let mut got = vec![f32::NAN; len];
        kern.max_pool2d(&x, x_shape, p, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!("max_pool {x_shape:?} {p:?} at {:?}", kern.level()),
            &got,
            &want_max,
            0.0,
            0.0,
        )?;
        kern.avg_pool2d(&x, x_shape, p, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!("avg_pool {x_shape:?} {p:?} at {:?}", kern.level()),
            &got,
            &want_avg,
            1e-6,
            1e-5,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pool2d_matches_oracle(
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
        check_pool([n, c, h, w], &p, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn pool2d_wide_rows_match_oracle(
        c in 1usize..=2,
        h in 1usize..=6,
        w in 14usize..=80,
        kernel in (1usize..=3, 1usize..=5),
        stride in (1usize..=2, 1usize..=4),
        pad in (0usize..=1, 0usize..=2),
        seed: u64,
    ) {
        // Rows wider than a vector at every level: whole vectors, tails, both borders.
        let padding = (pad.0.min(kernel.0 / 2), pad.1.min(kernel.1 / 2));
        let kernel = (kernel.0.min(h + 2 * padding.0), kernel.1);
        let padding = (padding.0.min(kernel.0 / 2), padding.1);
        let p = Pool2dParams { kernel, stride, padding };
        check_pool([1, c, h, w], &p, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn pool2d_row_runs_match_oracle(
        n in 1usize..=2,
        c in 1usize..=3,
        h in 2usize..=12,
        w in prop::sample::select(vec![1usize, 3, 7, 8, 9, 15, 16, 17, 26, 31, 32, 33, 47, 48, 49]),
        k in 1usize..=3,
        s in 1usize..=2,
        pad in 0usize..=1,
        seed: u64,
    ) {
        // Square windows whose rows step as the columns do (rows processed in runs and in
        // pairs sharing window rows), at widths around 1-3 vectors of every level.
        let pad = pad.min(k / 2);
        let k = k.min(h + 2 * pad).min(w + 2 * pad);
        let pad = pad.min(k / 2);
        let p = Pool2dParams { kernel: (k, k), stride: (s, s), padding: (pad, pad) };
        check_pool([n, c, h, w], &p, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn pool2d_wide_windows_match_oracle(
        h in 1usize..=5,
        w in 1usize..=70,
        kernel in (1usize..=3, 1usize..=40),
        stride in (1usize..=2, 1usize..=2),
        pad in (0usize..=1, 0usize..=20),
        seed: u64,
    ) {
        // Windows wider than a vector (taps shifted past the next block) and padding of more
        // than a vector's lanes.
        let padding = (pad.0.min(kernel.0 / 2), pad.1.min(kernel.1 / 2));
        let kernel = (kernel.0.min(h + 2 * padding.0), kernel.1.min(w + 2 * padding.1));
        let padding = (padding.0.min(kernel.0 / 2), padding.1.min(kernel.1 / 2));
        let p = Pool2dParams { kernel, stride, padding };
        check_pool([1, 2, h, w], &p, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn global_avg_pool_matches_oracle(
        n in 1usize..=3,
        c in 1usize..=5,
        h in 1usize..=20,
        w in 1usize..=20,
        seed: u64,
    ) {
        let x = random(seed, n * c * h * w, -1.0, 1.0);
        let mut want = vec![0.0; n * c];
        oracle::global_avg_pool(&x, [n, c, h, w], &mut want).unwrap();
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; n * c];
            kern.global_avg_pool(&x, [n, c, h, w], &mut got).unwrap();
            check_close(&format!("global_avg_pool at {:?}", kern.level()), &got, &want, 1e-6, 1e-5)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn activations_match_oracle(
        len in 0usize..=100,
        scale in prop::sample::select(&[0.001f32, 1.0, 5.0, 30.0, 120.0][..]),
        act in prop::sample::select(&ACTIVATIONS[..]),
        seed: u64,
    ) {
        let x = random(seed, len, -scale, scale);
        let mut want = x.clone();
        oracle::activate(&mut want, act);
        for kern in all_kernels() {
            let mut got = x.clone();
            kern.activate(&mut got, act);
            check_close(&format!("{act:?} at {:?}", kern.level()), &got, &want, ABS, REL)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn softmax_matches_oracle(
        rows in 1usize..=5,
        row_len in 1usize..=70,
        scale in prop::sample::select(&[0.1f32, 5.0, 50.0][..]),
        seed: u64,
    ) {
        let x = random(seed, rows * row_len, -scale, scale);
        let mut want = x.clone();
        oracle::softmax(&mut want, row_len).unwrap();
        for kern in all_kernels() {
            let mut got = x.clone();
            kern.softmax(&mut got, row_len).unwrap();
            check_close(&format!("softmax at {:?}", kern.level()), &got, &want, ABS, REL)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn add_mul_broadcast_match_oracle(
        outer in 0usize..=5,
        inner in 1usize..=40,
        seed: u64,
    ) {
        let a = random(seed, outer * inner, -2.0, 2.0);
        let b = random(seed ^ 7, inner, -2.0, 2.0);
        let mut want_add = vec![0.0; a.len()];
        let mut want_mul = vec![0.0; a.len()];
        oracle::add(&a, &b, &mut want_add).unwrap();
        oracle::mul(&a, &b, &mut want_mul).unwrap();
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; a.len()];
            kern.add(&a, &b, &mut got).unwrap();
            check_close(&format!("add at {:?}", kern.level()), &got, &want_add, 0.0, 0.0)
                .map_err(TestCaseError::fail)?;
            kern.mul(&a, &b, &mut got).unwrap();
            check_close(&format!("mul at {:?}", kern.level()), &got, &want_mul, 0.0, 0.0)
                .map_err(TestCaseError::fail)?;
            // Same-shape operands.
            kern.add(&a, &a, &mut got).unwrap();
            let doubled: Vec<f32> = a.iter().map(|v| v + v).collect();
            check_close("add same shape", &got, &doubled, 0.0, 0.0).map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn activations_special_values() {
    let x = [
        0.0f32,
        -0.0,
        1e-30,
        -1e-30,
        1e-6,
        -1e-6,
        1e-4,
        -1e-4,
        0.3,
        -0.3,
        0.624,
        0.626,
        -0.624,
        -0.626,
        1.0,
        -1.0,
        9.0,
        -9.0,
        20.0,
        -20.0,
        87.0,
        -87.0,
        88.5,
        -88.5,
        100.0,
        -100.0,
        1e6,
        -1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for act in ACTIVATIONS {
        let mut want = x;
        oracle::activate(&mut want, act);
        for kern in all_kernels() {
            let mut got = x;
            kern.activate(&mut got, act);
            check_close(
                &format!("{act:?} at {:?}", kern.level()),
                &got,
                &want,
                ABS,
                REL,
            )
            .unwrap();
        }
    }
}

#[test]
fn gelu_erf_is_relatively_accurate_in_both_tails() {
    // x·Φ(x) from -12.5 (about -5e-35) to 13 in steps of 1/64, against the f64 oracle with
    // a relative tolerance only: the negative tail is not allowed to round to zero or drift
    // where its values are far below any absolute tolerance. (f32 rounding of x²/2 near 78
    // alone costs a few 1e-6 relative there.)
    let x: Vec<f32> = (-25 * 32..=13 * 64).map(|i| i as f32 / 64.0).collect();
    let mut want = x.clone();
    oracle::activate(&mut want, Activation::GeluErf);
    for kern in all_kernels() {
        let mut got = x.clone();
        kern.activate(&mut got, Activation::GeluErf);
        check_close(
            &format!("GeluErf tails at {:?}", kern.level()),
            &got,
            &want,
            0.0,
            2e-5,
        )
        .unwrap();
    }
}

#[test]
fn hand_computed_small_ops() {
    // Softmax of [0, ln 3] is [1/4, 3/4]; of [1000, 1000] (would overflow naively) is [1/2, 1/2].
    let mut s = [0.0, 3.0f32.ln(), 1000.0, 1000.0];
    oracle::softmax(&mut s, 2).unwrap();
    check_close("oracle softmax", &s, &[0.25, 0.75, 0.5, 0.5], 1e-7, 1e-6).unwrap();
    // Sigmoid(0) = 0.5, tanh(0) = 0, gelu(1) = 0.5(1 + tanh(sqrt(2/pi)·1.044715)) ≈ 0.841192.
    assert_eq!(oracle::activation(Activation::Sigmoid, 0.0), 0.5);
    assert_eq!(oracle::activation(Activation::Relu, -2.0), 0.0);
    assert!((oracle::activation(Activation::Gelu, 1.0) - 0.841_192).abs() < 1e-6);
    // Exact GELU: Φ(1) = 0.841344746 (tables), Φ(-2) = 0.022750132, so gelu(-2) = -0.045500264.
    assert!((oracle::activation(Activation::GeluErf, 1.0) - 0.841_344_746).abs() < 1e-9);
    assert!((oracle::activation(Activation::GeluErf, -2.0) + 0.045_500_264).abs() < 1e-9);
    // erfc at both branches of the oracle: erfc(0.5) = 0.4795001222, erfc(4) = 1.541725790e-8.
    assert!((oracle::erfc(0.5) - 0.479_500_122_2).abs() < 1e-10);
    assert!((oracle::erfc(4.0) / 1.541_725_790e-8 - 1.0).abs() < 1e-9);

    // 2×2 max/avg pool, stride 2, on a 4×4 ramp: window maxima are the bottom-right cells.
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let p = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    // 3×3 avg pool, stride 1, padding 1 (count_include_pad): top-left = (0+1+4+5)/9 = 10/9.
    let p_pad = Pool2dParams {
        kernel: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
    };
    let mut out = [0.0; 4];
    let mut out_pad = [0.0; 16];
    oracle::max_pool2d(&x, [1, 1, 4, 4], &p, &mut out).unwrap();
    assert_eq!(out, [5.0, 7.0, 13.0, 15.0]);
    oracle::avg_pool2d(&x, [1, 1, 4, 4], &p, &mut out).unwrap();
    assert_eq!(out, [2.5, 4.5, 10.5, 12.5]);
    oracle::avg_pool2d(&x, [1, 1, 4, 4], &p_pad, &mut out_pad).unwrap();
    assert!((out_pad[0] - 10.0 / 9.0).abs() < 1e-6);
    // Max pool with padding ignores the pad: top-left window of {0,1,4,5} is 5 even though
    // every value is >= 0 (a zero pad would not change it either, so use negated input).
    let neg: Vec<f32> = x.iter().map(|v| -v - 1.0).collect();
    oracle::max_pool2d(&neg, [1, 1, 4, 4], &p_pad, &mut out_pad).unwrap();
    assert_eq!(out_pad[0], -1.0);

    let mut g = [0.0; 1];
    oracle::global_avg_pool(&x, [1, 1, 4, 4], &mut g).unwrap();
    assert_eq!(g, [7.5]);

    for kern in all_kernels() {
        let lvl = kern.level();
        kern.max_pool2d(&x, [1, 1, 4, 4], &p, &mut out).unwrap();
        assert_eq!(out, [5.0, 7.0, 13.0, 15.0], "{lvl:?}");
        kern.avg_pool2d(&x, [1, 1, 4, 4], &p, &mut out).unwrap();
        assert_eq!(out, [2.5, 4.5, 10.5, 12.5], "{lvl:?}");
        kern.max_pool2d(&neg, [1, 1, 4, 4], &p_pad, &mut out_pad)
            .unwrap();
        assert_eq!(out_pad[0], -1.0, "{lvl:?}");
        kern.global_avg_pool(&x, [1, 1, 4, 4], &mut g).unwrap();
        assert_eq!(g, [7.5], "{lvl:?}");
        let mut s = [0.0, 3.0f32.ln(), 1000.0, 1000.0];
        kern.softmax(&mut s, 2).unwrap();
        check_close(
            &format!("softmax {lvl:?}"),
            &s,
            &[0.25, 0.75, 0.5, 0.5],
            1e-7,
            1e-6,
        )
        .unwrap();
        // Broadcast a [3] bias over a [2, 3] tensor; scalar broadcast.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut o = [0.0; 6];
        kern.add(&a, &[10.0, 20.0, 30.0], &mut o).unwrap();
        assert_eq!(o, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0], "{lvl:?}");
        kern.mul(&a, &[2.0], &mut o).unwrap();
        assert_eq!(o, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0], "{lvl:?}");
    }
}

#[test]
fn errors_not_panics() {
    let k = Kernels::detect();
    let mut out = vec![0.0f32; 64];
    let x = vec![0.0f32; 64];
    let none = Activation::None;

    // dense: wrong x, w, bias, out lengths; overflowing shapes.
    assert!(
        k.dense(&x[..5], 2, 3, &x[..6], 2, None, none, &mut out[..4])
            .is_err()
    );
    assert!(
        k.dense(&x[..6], 2, 3, &x[..5], 2, None, none, &mut out[..4])
            .is_err()
    );
    assert!(
        k.dense(
            &x[..6],
            2,
            3,
            &x[..6],
            2,
            Some(&x[..3]),
            none,
            &mut out[..4]
        )
        .is_err()
    );
    assert!(
        k.dense(&x[..6], 2, 3, &x[..6], 2, None, none, &mut out[..5])
            .is_err()
    );
    assert!(
        k.dense(
            &x[..0],
            usize::MAX,
            2,
            &x[..0],
            0,
            None,
            none,
            &mut out[..0]
        )
        .is_err()
    );
    assert!(
        k.dense(&x[..6], 2, 3, &x[..6], 2, None, none, &mut out[..4])
            .is_ok()
    );
    let e = k
        .dense(&x[..5], 2, 3, &x[..6], 2, None, none, &mut out[..4])
        .unwrap_err();
    assert!(e.message.contains("`x`"), "{e}");

    // conv2d: geometry errors.
    let p = Conv2dParams::default();
    let bad = [
        Conv2dParams {
            stride: (0, 1),
            ..p
        },
        Conv2dParams {
            dilation: (1, 0),
            ..p
        },
        Conv2dParams { groups: 0, ..p },
        Conv2dParams { groups: 3, ..p },
    ];
    for q in &bad {
        assert!(
            conv2d_out_shape([1, 2, 4, 4], [2, 2, 3, 3], q).is_err(),
            "{q:?}"
        );
        assert!(
            k.conv2d(
                &x[..32],
                [1, 2, 4, 4],
                &x[..36],
                [2, 2, 3, 3],
                None,
                q,
                none,
                &mut out[..8]
            )
            .is_err()
        );
    }
    // Window larger than the padded input; weight channels not c/groups; zero kernel.
    assert!(conv2d_out_shape([1, 1, 2, 2], [1, 1, 3, 3], &p).is_err());
    assert!(
        conv2d_out_shape(
            [1, 1, 2, 2],
            [1, 1, 3, 3],
            &Conv2dParams {
                padding: (1, 1),
                ..p
            }
        )
        .is_ok()
    );
    assert!(
        conv2d_out_shape(
            [1, 1, 5, 5],
            [1, 1, 3, 3],
            &Conv2dParams {
                dilation: (3, 1),
                ..p
            }
        )
        .is_err()
    );
    assert!(
        conv2d_out_shape([1, 4, 4, 4], [2, 4, 3, 3], &Conv2dParams { groups: 2, ..p }).is_err()
    );
    assert!(conv2d_out_shape([1, 1, 4, 4], [1, 1, 0, 3], &p).is_err());
    assert!(conv2d_out_shape([usize::MAX, 2, 4, 4], [1, 2, 1, 1], &p).is_err());
    // Lengths.
    assert!(
        k.conv2d(
            &x[..16],
            [1, 1, 4, 4],
            &x[..9],
            [1, 1, 3, 3],
            None,
            &p,
            none,
            &mut out[..4]
        )
        .is_ok()
    );
    assert!(
        k.conv2d(
            &x[..15],
            [1, 1, 4, 4],
            &x[..9],
            [1, 1, 3, 3],
            None,
            &p,
            none,
            &mut out[..4]
        )
        .is_err()
    );
    assert!(
        k.conv2d(
            &x[..16],
            [1, 1, 4, 4],
            &x[..8],
            [1, 1, 3, 3],
            None,
            &p,
            none,
            &mut out[..4]
        )
        .is_err()
    );
    assert!(
        k.conv2d(
            &x[..16],
            [1, 1, 4, 4],
            &x[..9],
            [1, 1, 3, 3],
            Some(&x[..2]),
            &p,
            none,
            &mut out[..4]
        )
        .is_err()
    );
    assert!(
        k.conv2d(
            &x[..16],
            [1, 1, 4, 4],
            &x[..9],
            [1, 1, 3, 3],
            None,
            &p,
            none,
            &mut out[..5]
        )
        .is_err()
    );

    // Pooling.
    let pp = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    assert!(
        k.max_pool2d(&x[..16], [1, 1, 4, 4], &pp, &mut out[..4])
            .is_ok()
    );
    assert!(
        k.max_pool2d(&x[..15], [1, 1, 4, 4], &pp, &mut out[..4])
            .is_err()
    );
    assert!(
        k.avg_pool2d(&x[..16], [1, 1, 4, 4], &pp, &mut out[..3])
            .is_err()
    );
    for q in [
        Pool2dParams {
            stride: (0, 2),
            ..pp
        },
        Pool2dParams {
            kernel: (0, 2),
            ..pp
        },
        Pool2dParams {
            kernel: (5, 2),
            ..pp
        },
        Pool2dParams {
            padding: (2, 0),
            ..pp
        },
    ] {
        assert!(pool2d_out_shape([1, 1, 4, 4], &q).is_err(), "{q:?}");
        assert!(
            k.max_pool2d(&x[..16], [1, 1, 4, 4], &q, &mut out[..4])
                .is_err()
        );
        assert!(
            k.avg_pool2d(&x[..16], [1, 1, 4, 4], &q, &mut out[..4])
                .is_err()
        );
    }
    assert!(pool2d_out_shape([1, 1, 0, 4], &pp).is_err());
    assert!(
        k.global_avg_pool(&x[..16], [1, 2, 2, 4], &mut out[..2])
            .is_ok()
    );
    assert!(
        k.global_avg_pool(&x[..16], [1, 2, 2, 4], &mut out[..3])
            .is_err()
    );
    assert!(
        k.global_avg_pool(&x[..0], [1, 2, 0, 4], &mut out[..2])
            .is_err()
    );
    assert!(
        k.global_avg_pool(&x[..0], [usize::MAX, 2, 2, 4], &mut out[..2])
            .is_err()
    );

    // Softmax and broadcasting.
    let mut y = vec![0.0f32; 6];
    assert!(k.softmax(&mut y, 0).is_err());
    assert!(k.softmax(&mut y, 4).is_err());
    assert!(k.softmax(&mut y, 3).is_ok());
    assert!(k.add(&x[..6], &x[..4], &mut out[..6]).is_err());
    assert!(k.mul(&x[..6], &x[..3], &mut out[..5]).is_err());
    assert!(k.add(&x[..6], &x[..0], &mut out[..6]).is_err());
    assert!(k.add(&x[..0], &x[..0], &mut out[..0]).is_ok());
    assert!(k.mul(&x[..6], &x[..6], &mut out[..6]).is_ok());
    // The oracle validates the same way.
    assert!(oracle::add(&x[..6], &x[..4], &mut out[..6]).is_err());
    assert!(oracle::dense(&x[..5], 2, 3, &x[..6], 2, None, none, &mut out[..4]).is_err());
}

#[test]
fn levels_are_consistent() {
    let levels = Kernels::available_levels();
    assert_eq!(levels[0], tensorlet_kernels::Level::Scalar);
    for l in &levels {
        assert_eq!(Kernels::with_level(*l).unwrap().level(), *l);
    }
    #[cfg(target_arch = "x86_64")]
    assert!(Kernels::with_level(tensorlet_kernels::Level::Neon).is_none());
}

#[test]
fn pool2d_very_wide_rows_match_oracle() {
    // Rows of more blocks than the per-call mask table holds (64 vectors of 16 lanes).
    for (k, s, pad) in [(2, 2, 0), (3, 1, 1), (3, 2, 1), (3, 2, 0)] {
        let p = Pool2dParams {
            kernel: (k, k),
            stride: (s, s),
            padding: (pad, pad),
        };
        check_pool([1, 2, 5, 2100 + k], &p, k as u64).unwrap();
    }
}
