//! Dense and conv2d at every SIMD level against the oracle: proptest over shapes with odd
//! tails, fixed larger cases, and hand-computed cases that check the oracle itself.

mod common;

use common::{ACTIVATIONS, TOL, all_kernels, check_close, conv_tol, random};
use proptest::prelude::*;
use tensorlet_kernels::{Activation, Conv2dParams, Kernels, conv2d_out_shape, oracle};

#[allow(clippy::too_many_arguments)]
fn check_dense(
    m: usize,
    k: usize,
    n: usize,
    with_bias: bool,
    act: Activation,
    seed: u64,
) -> Result<(), String> {
    let x = random(seed, m * k, -1.0, 1.0);
    let w = random(seed ^ 1, n * k, -1.0, 1.0);
    let bias = random(seed ^ 2, n, -1.0, 1.0);
    let bias = with_bias.then_some(&bias[..]);
    let mut want = vec![0.0; m * n];
    oracle::dense(&x, m, k, &w, n, bias, act, &mut want).map_err(|e| e.to_string())?;
    for kern in all_kernels() {
        let mut got = vec![f32::NAN; m * n];
        kern.dense(&x, m, k, &w, n, bias, act, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!(
                "dense {m}x{k}x{n} {act:?} bias={with_bias} at {:?}",
                kern.level()
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
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn dense_matches_oracle(
        m in 1usize..=70,
        k in 1usize..=70,
        n in 1usize..=70,
        with_bias: bool,
        act in prop::sample::select(&ACTIVATIONS[..]),
        seed: u64,
    ) {
        check_dense(m, k, n, with_bias, act, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn dense_batch1_matches_oracle(
        k in 0usize..=300,
        n in 1usize..=70,
        with_bias: bool,
        act in prop::sample::select(&ACTIVATIONS[..]),
        seed: u64,
    ) {
        check_dense(1, k, n, with_bias, act, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn dense_fixed_shapes() {
    for (i, &(m, k, n)) in [
        (1, 784, 128),
        (33, 257, 65),
        (8, 1000, 40),
        (1, 1000, 10),
        (64, 128, 96),
        (2, 0, 5),
        (0, 3, 4),
        (3, 4, 0),
    ]
    .iter()
    .enumerate()
    {
        for act in ACTIVATIONS {
            check_dense(m, k, n, i % 2 == 0, act, 42 + i as u64).unwrap();
        }
    }
}

#[test]
fn dense_hand_computed() {
    // x = [[1, 2], [3, 4]], w = [[1, 0], [1, -1]] (Linear [out, in]), bias = [0.5, -0.5].
    // y = x·wᵀ + b = [[1 + 0.5, (1 - 2) - 0.5], [3 + 0.5, (3 - 4) - 0.5]].
    let x = [1.0, 2.0, 3.0, 4.0];
    let w = [1.0, 0.0, 1.0, -1.0];
    let b = [0.5, -0.5];
    let want = [1.5, -1.5, 3.5, -1.5];
    let want_relu = [1.5, 0.0, 3.5, 0.0];
    let mut out = [0.0; 4];
    oracle::dense(&x, 2, 2, &w, 2, Some(&b), Activation::None, &mut out).unwrap();
    assert_eq!(out, want);
    for kern in all_kernels() {
        kern.dense(&x, 2, 2, &w, 2, Some(&b), Activation::None, &mut out)
            .unwrap();
        assert_eq!(out, want, "{:?}", kern.level());
        kern.dense(&x, 2, 2, &w, 2, Some(&b), Activation::Relu, &mut out)
            .unwrap();
        assert_eq!(out, want_relu, "{:?}", kern.level());
        // Batch 1 (GEMV path): first row only.
        let mut row = [0.0; 2];
        kern.dense(&x[..2], 1, 2, &w, 2, Some(&b), Activation::None, &mut row)
            .unwrap();
        assert_eq!(row, [1.5, -1.5], "{:?}", kern.level());
    }
}

#[allow(clippy::too_many_arguments)]
fn check_conv(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    p: &Conv2dParams,
    with_bias: bool,
    act: Activation,
    seed: u64,
) -> Result<(), String> {
    let out_shape = conv2d_out_shape(x_shape, w_shape, p).map_err(|e| e.to_string())?;
    let x = random(seed, x_shape.iter().product(), -1.0, 1.0);
    let w = random(seed ^ 1, w_shape.iter().product(), -1.0, 1.0);
    let bias = random(seed ^ 2, w_shape[0], -1.0, 1.0);
    let bias = with_bias.then_some(&bias[..]);
    let len = out_shape.iter().product();
    let tol = conv_tol(w_shape, p);
    let mut want = vec![0.0; len];
    oracle::conv2d(&x, x_shape, &w, w_shape, bias, p, act, &mut want).map_err(|e| e.to_string())?;
    for kern in all_kernels() {
        let mut got = vec![f32::NAN; len];
        kern.conv2d(&x, x_shape, &w, w_shape, bias, p, act, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!(
                "conv x{x_shape:?} w{w_shape:?} {p:?} {act:?} at {:?}",
                kern.level()
            ),
            &got,
            &want,
            tol,
            tol,
        )?;
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
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn conv2d_matches_oracle(
        batch in 1usize..=2,
        grouping in prop::sample::select(&[Grouping::Dense, Grouping::Two, Grouping::Depthwise][..]),
        cg in 1usize..=4,
        ocg in 1usize..=4,
        h in 1usize..=12,
        w in 1usize..=12,
        kh in 1usize..=5,
        kw in 1usize..=5,
        stride in (1usize..=3, 1usize..=3),
        padding in (0usize..=2, 0usize..=2),
        dilation in (1usize..=2, 1usize..=2),
        with_bias: bool,
        act in prop::sample::select(&ACTIVATIONS[..]),
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
        check_conv(x_shape, w_shape, &p, with_bias, act, seed).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The stencil kernel's range (one group, stride 1, no padding, at most 27 taps, at
    /// least 8 output channels): rows shorter than a vector, of two vectors and of several
    /// tiles, output channels that are not whole blocks, dilation.
    #[test]
    fn conv2d_stencil_matches_oracle(
        batch in 1usize..=2,
        cg in 1usize..=3,
        oc in 8usize..=20,
        h in 1usize..=12,
        w in 1usize..=45,
        kh in 1usize..=3,
        kw in 1usize..=3,
        dilation in (1usize..=2, 1usize..=2),
        with_bias: bool,
        act in prop::sample::select(&ACTIVATIONS[..]),
        seed: u64,
    ) {
        let kh = kh.min((h - 1) / dilation.0 + 1);
        let kw = kw.min((w - 1) / dilation.1 + 1);
        let p = Conv2dParams { dilation, ..Default::default() };
        check_conv([batch, cg, h, w], [oc, cg, kh, kw], &p, with_bias, act, seed)
            .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn conv2d_fixed_shapes() {
    let cases = [
        // LeNet-ish / MNIST CNN layers.
        (
            [1, 1, 28, 28],
            [8, 1, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                ..Default::default()
            },
        ),
        ([2, 8, 14, 14], [16, 8, 3, 3], Conv2dParams::default()),
        // 1×1 conv, strided.
        (
            [1, 16, 9, 7],
            [33, 16, 1, 1],
            Conv2dParams {
                stride: (2, 2),
                ..Default::default()
            },
        ),
        // Depthwise 3×3, MobileNet-style.
        (
            [1, 12, 10, 10],
            [12, 1, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                groups: 12,
                ..Default::default()
            },
        ),
        // k large: 64·5·5 = 1600 taps.
        ([1, 64, 6, 6], [10, 64, 5, 5], Conv2dParams::default()),
        // im2col panels: row wraps inside a vector, several pixel blocks, windows running
        // past the end of the input, padding on one axis only, batch 2.
        ([1, 2, 13, 13], [4, 2, 3, 3], Conv2dParams::default()),
        (
            [2, 5, 30, 37],
            [7, 5, 3, 3],
            Conv2dParams {
                padding: (1, 2),
                ..Default::default()
            },
        ),
        (
            [1, 8, 56, 56],
            [12, 8, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                ..Default::default()
            },
        ),
        ([1, 3, 100, 100], [5, 3, 3, 3], Conv2dParams::default()),
        // The stencil kernel: the seed CNN's first conv (26-pixel rows), batch 3; the
        // 3-channel 100 × 100 variant's (27 taps, 98-pixel rows); 13 output channels (a
        // partial block).
        ([3, 1, 28, 28], [32, 1, 3, 3], Conv2dParams::default()),
        ([1, 3, 100, 100], [32, 3, 3, 3], Conv2dParams::default()),
        ([2, 2, 11, 37], [13, 2, 3, 2], Conv2dParams::default()),
        (
            [1, 2, 9, 40],
            [3, 2, 1, 7],
            Conv2dParams {
                padding: (0, 3),
                ..Default::default()
            },
        ),
        // Strided and dilated windows with padding, groups.
        (
            [1, 3, 33, 35],
            [9, 3, 3, 3],
            Conv2dParams {
                stride: (2, 2),
                padding: (1, 1),
                ..Default::default()
            },
        ),
        (
            [1, 4, 20, 19],
            [6, 4, 3, 3],
            Conv2dParams {
                padding: (2, 1),
                dilation: (2, 2),
                ..Default::default()
            },
        ),
        (
            [2, 4, 17, 23],
            [6, 2, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                groups: 2,
                ..Default::default()
            },
        ),
        // Output rows of one or two pixels (each vector spans many input rows).
        ([1, 3, 40, 3], [5, 3, 3, 3], Conv2dParams::default()),
        ([1, 3, 40, 4], [5, 3, 3, 3], Conv2dParams::default()),
        // The seed CNN's second conv (implicit im2col: two panels of output channels, 121
        // pixels), batch 2; and with enough pixels for several pixel blocks, the last one
        // partial.
        ([2, 32, 13, 13], [64, 32, 3, 3], Conv2dParams::default()),
        ([1, 32, 60, 60], [64, 32, 3, 3], Conv2dParams::default()),
        // Implicit im2col with stride, dilation and groups together.
        (
            [2, 6, 19, 21],
            [10, 3, 3, 2],
            Conv2dParams {
                stride: (2, 3),
                dilation: (2, 1),
                groups: 2,
                ..Default::default()
            },
        ),
        // Winograd F(4 × 4, 3 × 3): padding on one side, channel counts that are not whole
        // vectors at any level, an output that is not whole tiles (14 × 11 from 16 × 11
        // with padding (0, 1)), several images per chunk and a batch tail.
        (
            [5, 17, 16, 11],
            [20, 17, 3, 3],
            Conv2dParams {
                padding: (0, 1),
                ..Default::default()
            },
        ),
        (
            [2, 16, 8, 8],
            [16, 16, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                ..Default::default()
            },
        ),
        // Winograd with a strip of pixels past the tiles: 5 × 9 (one row, one column; the
        // image reaches past the tiles' windows), 13 × 13 with 17 output channels (a partial
        // block of vectors at every level).
        ([2, 16, 7, 11], [20, 16, 3, 3], Conv2dParams::default()),
        (
            [3, 19, 13, 13],
            [17, 19, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                ..Default::default()
            },
        ),
        // Winograd weights on an output too small for whole tiles (the direct path runs).
        ([1, 16, 4, 5], [24, 16, 3, 3], Conv2dParams::default()),
        // 360 taps with padding.
        (
            [1, 40, 12, 12],
            [13, 40, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                ..Default::default()
            },
        ),
    ];
    for (i, (x_shape, w_shape, p)) in cases.iter().enumerate() {
        check_conv(*x_shape, *w_shape, p, true, ACTIVATIONS[i % 5], i as u64).unwrap();
    }
}

#[test]
fn conv2d_hand_computed() {
    // x = 0..16 as a 4×4 image, w = 3×3 with a single 1 at the centre and -1 top-left.
    // Valid conv (no padding): out[oy][ox] = x[oy+1][ox+1] - x[oy][ox] = 5 everywhere (+ bias 1).
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let mut w = [0.0f32; 9];
    w[4] = 1.0;
    w[0] = -1.0;
    let p = Conv2dParams::default();
    let want = [6.0; 4];
    let mut out = [0.0; 4];
    oracle::conv2d(
        &x,
        [1, 1, 4, 4],
        &w,
        [1, 1, 3, 3],
        Some(&[1.0]),
        &p,
        Activation::None,
        &mut out,
    )
    .unwrap();
    assert_eq!(out, want);

    // Padding 1, stride 2, all-ones 3×3 kernel: window sums of the padded image at
    // top-left corners (-1,-1), (-1,1), (1,-1), (1,1):
    //   (0+1+4+5) = 10, (1+2+3+5+6+7) = 24, (4+5+8+9+12+13) = 51, (5+6+7+9+10+11+13+14+15) = 90.
    let ones = [1.0f32; 9];
    let p2 = Conv2dParams {
        stride: (2, 2),
        padding: (1, 1),
        ..Default::default()
    };
    assert_eq!(
        conv2d_out_shape([1, 1, 4, 4], [1, 1, 3, 3], &p2).unwrap(),
        [1, 1, 2, 2]
    );
    let want2 = [10.0, 24.0, 51.0, 90.0];
    let mut out2 = [0.0; 4];
    oracle::conv2d(
        &x,
        [1, 1, 4, 4],
        &ones,
        [1, 1, 3, 3],
        None,
        &p2,
        Activation::None,
        &mut out2,
    )
    .unwrap();
    assert_eq!(out2, want2);

    for kern in all_kernels() {
        kern.conv2d(
            &x,
            [1, 1, 4, 4],
            &w,
            [1, 1, 3, 3],
            Some(&[1.0]),
            &p,
            Activation::None,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, want, "{:?}", kern.level());
        kern.conv2d(
            &x,
            [1, 1, 4, 4],
            &ones,
            [1, 1, 3, 3],
            None,
            &p2,
            Activation::None,
            &mut out2,
        )
        .unwrap();
        assert_eq!(out2, want2, "{:?}", kern.level());
    }
}

#[test]
fn detect_is_best_available_level() {
    let levels = Kernels::available_levels();
    assert_eq!(levels[0], tensorlet_kernels::Level::Scalar);
    assert_eq!(Kernels::detect().level(), *levels.last().unwrap());
    assert_eq!(Kernels::detect().level(), Kernels::detect().level());
}
