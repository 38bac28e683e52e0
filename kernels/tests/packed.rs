//! Packed weights at every SIMD level against the oracle: `pack_dense*` + `dense_packed`
//! (`f32`, `f16`, `bf16`; the oracle sees the widened half weights) and `pack_conv2d` +
//! `conv2d_packed` (stride, padding, dilation, groups, depthwise), with odd tails, shapes that
//! cross the GEMM's `k` and column blocks, and the error cases.

mod common;

use common::{ACTIVATIONS, TOL, all_kernels, check_close, conv_tol, random};
use proptest::prelude::*;
use std::sync::Arc;
use tensorlet_kernels::half::{bf16, f16};
use tensorlet_kernels::{
    Activation, Conv2dParams, Kernels, Level, PackedDense, ThreadPool, WeightType,
    conv2d_out_shape, oracle,
};

#[derive(Clone, Copy, Debug)]
enum Storage {
    F32,
    F16,
    Bf16,
}

const STORAGES: [Storage; 3] = [Storage::F32, Storage::F16, Storage::Bf16];

/// Packs `w` as `storage`; returns the packed weights and the (widened) weights the oracle uses.
fn pack(
    kern: &Kernels,
    storage: Storage,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> (PackedDense, Vec<f32>) {
    match storage {
        Storage::F32 => (kern.pack_dense(w, n, k, bias).unwrap(), w.to_vec()),
        Storage::F16 => {
            let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let wide = h.iter().map(|v| v.to_f32()).collect();
            (kern.pack_dense_f16(&h, n, k, bias).unwrap(), wide)
        }
        Storage::Bf16 => {
            let h: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wide = h.iter().map(|v| v.to_f32()).collect();
            (kern.pack_dense_bf16(&h, n, k, bias).unwrap(), wide)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_packed_dense(
    m: usize,
    k: usize,
    n: usize,
    storage: Storage,
    with_bias: bool,
    act: Activation,
    seed: u64,
) -> Result<(), String> {
    let x = random(seed, m * k, -1.0, 1.0);
    let w = random(seed ^ 1, n * k, -1.0, 1.0);
    let bias = random(seed ^ 2, n, -1.0, 1.0);
    let bias = with_bias.then_some(&bias[..]);
    for kern in all_kernels() {
        let (packed, wide) = pack(&kern, storage, &w, n, k, bias);
        assert_eq!(
            (packed.n(), packed.k(), packed.level()),
            (n, k, kern.level())
        );
        let mut want = vec![0.0; m * n];
        oracle::dense(&x, m, k, &wide, n, bias, act, &mut want).map_err(|e| e.to_string())?;
        let mut got = vec![f32::NAN; m * n];
        kern.dense_packed(&x, m, &packed, act, &mut got)
            .map_err(|e| e.to_string())?;
        check_close(
            &format!(
                "dense_packed {m}x{k}x{n} {storage:?} {act:?} bias={with_bias} at {:?}",
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
    fn dense_packed_matches_oracle(
        m in 1usize..=40,
        k in 0usize..=300,
        n in 1usize..=70,
        storage in prop::sample::select(&STORAGES[..]),
        with_bias: bool,
        act in prop::sample::select(&ACTIVATIONS[..]),
        seed: u64,
    ) {
        check_packed_dense(m, k, n, storage, with_bias, act, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn dense_packed_block_edges() {
    // Cross the k blocks (1024) and the column blocks (256; 128 for a block deeper than
    // 512), copy A (≥ 4 panels) with row tails, across slabs of copied rows, batch 1 and an
    // empty k.
    let shapes = [
        (13, 530, 1030),
        (9, 2100, 300),
        (37, 1100, 290),
        (30, 512, 700),
        (1, 1024, 300),
        (2, 257, 65),
        (25, 0, 40),
        // More rows than one copied slab of `A` (about 1000) with enough panels to copy it.
        (1990, 20, 130),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        for storage in STORAGES {
            let act = ACTIVATIONS[i % ACTIVATIONS.len()];
            check_packed_dense(m, k, n, storage, i % 2 == 0, act, 7 + i as u64).unwrap();
        }
    }
}

#[test]
fn narrow_outputs_match_the_oracle() {
    // Fewer outputs than a vector has lanes, at batch 1 (k below, at and above a vector's
    // lanes, with tails) and with one output (any batch), packed and unpacked, against the
    // oracle.
    let shapes = [
        (32, 10, 1),
        (1, 10, 1),
        (1, 128, 10),
        (1, 3, 15),
        (1, 16, 7),
        (1, 17, 2),
        (5, 37, 1),
        (33, 300, 1),
        (1, 1000, 3),
        (3, 0, 1),
        (1, 0, 5),
        (4, 20, 3),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        for storage in STORAGES {
            let act = ACTIVATIONS[i % ACTIVATIONS.len()];
            check_packed_dense(m, k, n, storage, i % 2 == 0, act, 40 + i as u64).unwrap();
        }
        let x = random(90 + i as u64, m * k, -1.0, 1.0);
        let w = random(91 + i as u64, n * k, -1.0, 1.0);
        let bias = random(92 + i as u64, n, -1.0, 1.0);
        let act = ACTIVATIONS[(i + 1) % ACTIVATIONS.len()];
        let mut want = vec![0.0; m * n];
        oracle::dense(&x, m, k, &w, n, Some(&bias), act, &mut want).unwrap();
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; m * n];
            kern.dense(&x, m, k, &w, n, Some(&bias), act, &mut got)
                .unwrap();
            let what = format!("dense {m}x{k}x{n} {act:?} at {:?}", kern.level());
            check_close(&what, &got, &want, TOL, TOL).unwrap();
        }
    }
}

/// A row's result is the same bits whatever the batch: alone, first, last or in the middle
/// of a batch of any size (dynamic batching relies on it), packed and unpacked, at every
/// level.
#[test]
fn a_rows_result_does_not_depend_on_its_batch() {
    for (i, &(k, n)) in [
        (10, 10),
        (10, 1),
        (1600, 128),
        (128, 10),
        (700, 33),
        (3, 40),
    ]
    .iter()
    .enumerate()
    {
        let rows = 37;
        let x = random(300 + i as u64, rows * k, -1.0, 1.0);
        let w = random(301 + i as u64, n * k, -1.0, 1.0);
        let bias = random(302 + i as u64, n, -1.0, 1.0);
        for kern in all_kernels() {
            let packed = kern.pack_dense(&w, n, k, Some(&bias)).unwrap();
            let run = |m: usize, x: &[f32], packed_path: bool| {
                let mut out = vec![0.0; m * n];
                if packed_path {
                    kern.dense_packed(x, m, &packed, Activation::None, &mut out)
                        .unwrap();
                } else {
                    kern.dense(x, m, k, &w, n, Some(&bias), Activation::None, &mut out)
                        .unwrap();
                }
                out
            };
            for packed_path in [true, false] {
                let whole = run(rows, &x, packed_path);
                for m in [1, 2, 5, 8, 13] {
                    for start in [0, rows - m, (rows - m) / 2] {
                        let part = run(m, &x[start * k..(start + m) * k], packed_path);
                        let want = &whole[start * n..(start + m) * n];
                        assert!(
                            part.iter()
                                .zip(want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "k {k} n {n}: rows {start}..{} alone differ from the batch of \
                             {rows} at {:?} (packed {packed_path})",
                            start + m,
                            kern.level()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn half_widening_special_values() {
    // Subnormal, infinities, NaN-free extremes and signed zeros survive the in-kernel widening.
    let vals = [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        -65504.0,
        6.0e-8,
        -6.0e-8,
        1.0e-5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.333,
        3.0e38,
        -1.0e-40,
    ];
    let n = vals.len() * 3; // several panels' worth of rows, k = 1: out[j] = w[j]
    let w: Vec<f32> = (0..n).map(|i| vals[i % vals.len()]).collect();
    for kern in all_kernels() {
        for storage in [Storage::F16, Storage::Bf16] {
            let (packed, wide) = pack(&kern, storage, &w, n, 1, None);
            let mut got = vec![0.0; n];
            kern.dense_packed(&[1.0], 1, &packed, Activation::None, &mut got)
                .unwrap();
            for (j, (&g, &want)) in got.iter().zip(&wide).enumerate() {
                assert!(
                    g.to_bits() == want.to_bits() || g == want,
                    "{storage:?} at {:?}: weight {j}: got {g}, want {want}",
                    kern.level()
                );
            }
        }
    }
}

#[test]
fn dense_packed_errors() {
    let kern = Kernels::detect();
    let w = [0.0f32; 6];
    assert!(kern.pack_dense(&w, 2, 4, None).is_err());
    assert!(kern.pack_dense(&w, 2, 3, Some(&[0.0])).is_err());
    assert!(kern.pack_dense(&w, usize::MAX, 2, None).is_err());
    let h = [f16::ZERO; 5];
    assert!(kern.pack_dense_f16(&h, 2, 3, None).is_err());
    let b = [bf16::ZERO; 7];
    assert!(kern.pack_dense_bf16(&b, 2, 3, None).is_err());
    let p = kern.pack_dense(&w, 2, 3, None).unwrap();
    assert_eq!(p.weight_type(), WeightType::F32);
    let mut out = [0.0; 4];
    assert!(
        kern.dense_packed(&[0.0; 5], 2, &p, Activation::None, &mut out)
            .is_err()
    );
    assert!(
        kern.dense_packed(&[0.0; 6], 2, &p, Activation::None, &mut out[..3])
            .is_err()
    );
    assert!(
        kern.dense_packed(&[0.0; 6], 2, &p, Activation::None, &mut out)
            .is_ok()
    );
    // Another level's layout is refused with an error naming both levels.
    for other in all_kernels() {
        if other.level() != kern.level() {
            let e = other
                .dense_packed(&[0.0; 6], 2, &p, Activation::None, &mut out)
                .unwrap_err();
            assert!(e.message.contains("packed for level"), "{e}");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_conv_packed(
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
        let packed = kern
            .pack_conv2d(&w, w_shape, bias, p)
            .map_err(|e| e.to_string())?;
        assert_eq!((packed.w_shape(), *packed.params()), (w_shape, *p));
        let mut got = vec![f32::NAN; len];
        // Twice: packed weights are reused across calls.
        for _ in 0..2 {
            kern.conv2d_packed(&x, x_shape, &packed, act, &mut got)
                .map_err(|e| e.to_string())?;
            check_close(
                &format!(
                    "conv2d_packed x{x_shape:?} w{w_shape:?} {p:?} {act:?} at {:?}",
                    kern.level()
                ),
                &got,
                &want,
                tol,
                tol,
            )?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conv2d_packed_matches_oracle(
        batch in 1usize..=2,
        groups_kind in 0usize..3,
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
        let (groups, cg) = match groups_kind {
            0 => (1, cg),
            1 => (2, cg),
            _ => (cg + 1, 1), // depthwise, with a channel multiplier `ocg`
        };
        let kh = kh.min((h + 2 * padding.0 - 1) / dilation.0 + 1);
        let kw = kw.min((w + 2 * padding.1 - 1) / dilation.1 + 1);
        let p = Conv2dParams { stride, padding, dilation, groups };
        check_conv_packed([batch, groups * cg, h, w], [groups * ocg, cg, kh, kw], &p, with_bias, act, seed)
            .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn conv2d_packed_block_edges() {
    let same = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let cases = [
        // More pixels than one column block (32·9 = 288 taps).
        ([1, 32, 26, 26], [20, 32, 3, 3], same),
        // More taps than one k block (120·9 = 1080 > 1024).
        ([1, 120, 6, 6], [7, 120, 3, 3], same),
        // Odd row counts per group and a strided, dilated window.
        (
            [2, 6, 23, 19],
            [10, 3, 3, 2],
            Conv2dParams {
                stride: (2, 1),
                padding: (2, 1),
                dilation: (2, 2),
                groups: 2,
            },
        ),
        // Depthwise, strided.
        (
            [1, 8, 17, 17],
            [16, 1, 3, 3],
            Conv2dParams {
                stride: (2, 2),
                padding: (1, 1),
                groups: 8,
                ..Default::default()
            },
        ),
    ];
    for (i, (x_shape, w_shape, p)) in cases.iter().enumerate() {
        check_conv_packed(
            *x_shape,
            *w_shape,
            p,
            i != 1,
            ACTIVATIONS[(i + 1) % 5],
            i as u64,
        )
        .unwrap();
    }
}

#[test]
fn conv2d_packed_errors() {
    let kern = Kernels::detect();
    let p = Conv2dParams::default();
    let w = [0.0f32; 18];
    assert!(kern.pack_conv2d(&w[..17], [2, 1, 3, 3], None, &p).is_err());
    assert!(
        kern.pack_conv2d(&w, [2, 1, 3, 3], Some(&[0.0]), &p)
            .is_err()
    );
    let bad = Conv2dParams {
        groups: 0,
        ..Default::default()
    };
    assert!(kern.pack_conv2d(&w, [2, 1, 3, 3], None, &bad).is_err());
    let zero_stride = Conv2dParams {
        stride: (0, 1),
        ..Default::default()
    };
    assert!(
        kern.pack_conv2d(&w, [2, 1, 3, 3], None, &zero_stride)
            .is_err()
    );
    let packed = kern.pack_conv2d(&w, [2, 1, 3, 3], None, &p).unwrap();
    let mut out = [0.0; 8];
    // Wrong channel count, too small an image, wrong lengths.
    assert!(
        kern.conv2d_packed(
            &[0.0; 32],
            [1, 2, 4, 4],
            &packed,
            Activation::None,
            &mut out
        )
        .is_err()
    );
    assert!(
        kern.conv2d_packed(&[0.0; 4], [1, 1, 2, 2], &packed, Activation::None, &mut out)
            .is_err()
    );
    assert!(
        kern.conv2d_packed(
            &[0.0; 15],
            [1, 1, 4, 4],
            &packed,
            Activation::None,
            &mut out
        )
        .is_err()
    );
    assert!(
        kern.conv2d_packed(
            &[0.0; 16],
            [1, 1, 4, 4],
            &packed,
            Activation::None,
            &mut out[..7]
        )
        .is_err()
    );
    assert!(
        kern.conv2d_packed(
            &[0.0; 16],
            [1, 1, 4, 4],
            &packed,
            Activation::None,
            &mut out
        )
        .is_ok()
    );
    for other in all_kernels() {
        if other.level() != kern.level() {
            assert!(
                other
                    .conv2d_packed(
                        &[0.0; 16],
                        [1, 1, 4, 4],
                        &packed,
                        Activation::None,
                        &mut out
                    )
                    .is_err()
            );
        }
    }
    assert_eq!(packed.level(), Kernels::detect().level());
    let _ = Level::Scalar;
}

#[test]
fn dense_threads_match_one_thread_and_oracle() {
    // Big enough to split (≥ 2 × 8 MFLOP, ≥ 2 tiles of rows per thread), with row counts that
    // leave a partial last tile, at every level; `with_threads` must not change one bit.
    // Products with too few rows for a row split (a sentence of 32 tokens, a handful of
    // rows) split their columns when packed, with a partial last panel in the mix.
    for &(m, k, n) in &[
        (96, 400, 256),
        (101, 333, 250),
        (300, 100, 300),
        (32, 384, 1536),
        (20, 700, 650),
        (5, 1000, 1000),
        (1, 2048, 4096),
    ] {
        let x = random(31, m * k, -1.0, 1.0);
        let w = random(32, n * k, -1.0, 1.0);
        let bias = random(33, n, -1.0, 1.0);
        let mut want = vec![0.0; m * n];
        oracle::dense(&x, m, k, &w, n, Some(&bias), Activation::Relu, &mut want).unwrap();
        for one in all_kernels() {
            assert_eq!(one.threads(), 1);
            let packed = one.pack_dense(&w, n, k, Some(&bias)).unwrap();
            let mut single = vec![f32::NAN; m * n];
            one.dense_packed(&x, m, &packed, Activation::Relu, &mut single)
                .unwrap();
            for threads in [2, 3, 8] {
                let kern = one.clone().with_threads(threads);
                assert_eq!(kern.threads(), threads);
                let mut got = vec![f32::NAN; m * n];
                kern.dense_packed(&x, m, &packed, Activation::Relu, &mut got)
                    .unwrap();
                assert!(
                    got.iter()
                        .zip(&single)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "dense_packed {m}x{k}x{n} with {threads} threads differs from one thread at {:?}",
                    kern.level()
                );
                let mut got = vec![f32::NAN; m * n];
                kern.dense(&x, m, k, &w, n, Some(&bias), Activation::Relu, &mut got)
                    .unwrap();
                check_close(
                    &format!(
                        "dense {m}x{k}x{n} with {threads} threads at {:?}",
                        kern.level()
                    ),
                    &got,
                    &want,
                    TOL,
                    TOL,
                )
                .unwrap();
            }
        }
    }
    assert_eq!(Kernels::detect().with_threads(0).threads(), 1);
    assert_eq!(Kernels::detect().with_threads(1).threads(), 1);
    assert!(Kernels::detect().pool().is_none());
}

/// Whether two outputs are equal bit for bit.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
}

#[test]
fn dense_through_a_shared_pool_matches_one_thread_bit_for_bit() {
    // One pool of 3 serves every level's kernels and 4 concurrent callers, which each find
    // 0 to 2 idle workers: every product must still equal the one-thread result exactly.
    let pool = Arc::new(ThreadPool::new(3).unwrap());
    let (m, k, n) = (101, 333, 250);
    let x = random(41, m * k, -1.0, 1.0);
    let w = random(42, n * k, -1.0, 1.0);
    let bias = random(43, n, -1.0, 1.0);
    let cases: Vec<_> = all_kernels()
        .into_iter()
        .map(|one| {
            let packed = one.pack_dense(&w, n, k, Some(&bias)).unwrap();
            let mut want_packed = vec![f32::NAN; m * n];
            one.dense_packed(&x, m, &packed, Activation::Gelu, &mut want_packed)
                .unwrap();
            let mut want = vec![f32::NAN; m * n];
            one.dense(&x, m, k, &w, n, Some(&bias), Activation::Gelu, &mut want)
                .unwrap();
            let kern = one.with_pool(pool.clone());
            assert_eq!(kern.threads(), 3);
            assert!(Arc::ptr_eq(kern.pool().unwrap(), &pool));
            (kern, packed, want_packed, want)
        })
        .collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5 {
                    for (kern, packed, want_packed, want) in &cases {
                        let level = kern.level();
                        let mut got = vec![f32::NAN; m * n];
                        kern.dense_packed(&x, m, packed, Activation::Gelu, &mut got)
                            .unwrap();
                        assert!(same_bits(&got, want_packed), "dense_packed at {level:?}");
                        kern.dense(&x, m, k, &w, n, Some(&bias), Activation::Gelu, &mut got)
                            .unwrap();
                        assert!(same_bits(&got, want), "dense at {level:?}");
                    }
                }
            });
        }
    });
}
