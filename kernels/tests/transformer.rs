//! The transformer ops (layer norm, embedding lookup, masked multi-head attention, masked
//! mean pooling, L2 normalisation) at every SIMD level against the `f64` oracle, a
//! hand-computed case, batch independence, and the error paths.

mod common;

use common::{all_kernels, check_close, random};
use proptest::prelude::*;
use tensorlet_kernels::{AttentionDims, Kernels, oracle};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn layer_norm_matches_oracle(
        rows in 1usize..=4,
        d in 1usize..=80,
        shift in prop::sample::select(&[0.0f32, 3.0, -50.0][..]),
        seed: u64,
    ) {
        let x: Vec<f32> = random(seed, rows * d, -2.0, 2.0).iter().map(|v| v + shift).collect();
        let gamma = random(seed ^ 1, d, 0.5, 1.5);
        let beta = random(seed ^ 2, d, -0.5, 0.5);
        let mut want = vec![0.0; rows * d];
        oracle::layer_norm(&x, d, &gamma, &beta, 1e-12, &mut want);
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; rows * d];
            kern.layer_norm(&x, d, &gamma, &beta, 1e-12, &mut got).unwrap();
            check_close(&format!("layer_norm d={d} at {:?}", kern.level()), &got, &want, 2e-5, 2e-5)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn attention_matches_oracle(
        batch in 1usize..=3,
        seq in 1usize..=20,
        heads in 1usize..=4,
        head_dim in 1usize..=40,
        seed: u64,
    ) {
        let dims = AttentionDims { batch, seq, heads, head_dim };
        let len = batch * seq * heads * head_dim;
        let q = random(seed, len, -1.5, 1.5);
        let k = random(seed ^ 1, len, -1.5, 1.5);
        let v = random(seed ^ 2, len, -1.0, 1.0);
        // Lengths from 0 (an empty sequence) to seq.
        let lengths: Vec<usize> = (0..batch).map(|b| (seed as usize >> (4 * b)) % (seq + 1)).collect();
        let mut want = vec![0.0; len];
        oracle::attention(&q, &k, &v, dims, &lengths, &mut want);
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; len];
            kern.attention(&q, &k, &v, dims, &lengths, &mut got).unwrap();
            check_close(&format!("attention {dims:?} {lengths:?} at {:?}", kern.level()), &got, &want, 2e-6, 2e-5)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn mean_pool_and_l2_normalize_match_oracle(
        batch in 1usize..=3,
        seq in 1usize..=12,
        d in 1usize..=70,
        seed: u64,
    ) {
        let x = random(seed, batch * seq * d, -1.0, 1.0);
        let lengths: Vec<usize> = (0..batch).map(|b| 1 + (seed as usize >> (4 * b)) % seq).collect();
        let mut want = vec![0.0; batch * d];
        oracle::mean_pool(&x, batch, seq, d, &lengths, &mut want);
        let mut want_norm = want.clone();
        oracle::l2_normalize(&mut want_norm, d, 1e-12);
        for kern in all_kernels() {
            let mut got = vec![f32::NAN; batch * d];
            kern.mean_pool(&x, batch, seq, d, &lengths, &mut got).unwrap();
            check_close(&format!("mean_pool at {:?}", kern.level()), &got, &want, 1e-6, 1e-5)
                .map_err(TestCaseError::fail)?;
            kern.l2_normalize(&mut got, d, 1e-12).unwrap();
            check_close(&format!("l2_normalize at {:?}", kern.level()), &got, &want_norm, 1e-6, 1e-5)
                .map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn hand_computed_cases() {
    for kern in all_kernels() {
        // Layer norm of [1, 2, 3, 4]: mean 2.5, variance 1.25.
        let mut out = [0.0; 4];
        kern.layer_norm(
            &[1.0, 2.0, 3.0, 4.0],
            4,
            &[1.0, 1.0, 2.0, 1.0],
            &[0.0, 0.0, 0.0, 1.0],
            1e-12,
            &mut out,
        )
        .unwrap();
        let s = 1.25f32.sqrt();
        check_close(
            "layer_norm",
            &out,
            &[-1.5 / s, -0.5 / s, 1.0 / s, 1.0 + 1.5 / s],
            1e-6,
            1e-6,
        )
        .unwrap();

        // One head, two real keys of a padded sequence of 3: the query [1, 0] scores
        // k0·q/√2 = 1/√2 and k1·q/√2 = 0, so the weights are e^{1/√2}/(e^{1/√2}+1) and the
        // rest; the third position is padding (ignored as a key, zero as a query).
        let dims = AttentionDims {
            batch: 1,
            seq: 3,
            heads: 1,
            head_dim: 2,
        };
        let q = [1.0, 0.0, 0.0, 0.0, 9.0, 9.0];
        let k = [1.0, 0.0, 0.0, 1.0, 9.0, 9.0];
        let v = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mut out = [f32::NAN; 6];
        kern.attention(&q, &k, &v, dims, &[2], &mut out).unwrap();
        let e = (1.0f32 / 2.0f32.sqrt()).exp();
        let (w0, w1) = (e / (e + 1.0), 1.0 / (e + 1.0));
        // Query 1 ([0, 0]) scores both keys 0: the plain average of the real values.
        check_close(
            "attention",
            &out,
            &[w0 + 3.0 * w1, 2.0 * w0 + 4.0 * w1, 2.0, 3.0, 0.0, 0.0],
            1e-6,
            1e-6,
        )
        .unwrap();

        // Embedding rows 2, 0, 2 of a 3 × 2 table.
        let mut out = [0.0; 6];
        kern.gather_rows(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], 2, &[2, 0, 2], &mut out)
            .unwrap();
        assert_eq!(out, [20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);

        // [3, 4] / 5; a zero row stays zero (divided by eps, not by 0).
        let mut x = [3.0, 4.0, 0.0, 0.0];
        kern.l2_normalize(&mut x, 2, 1e-12).unwrap();
        assert_eq!(x, [0.6, 0.8, 0.0, 0.0]);
    }
}

/// A sequence's attention output is the same bits whether it runs alone or padded in a
/// batch beside longer ones, with or without threads.
#[test]
fn attention_does_not_depend_on_the_batch() {
    let (heads, head_dim, seq) = (4, 32, 96);
    let width = heads * head_dim;
    let lens = [30usize, 96, 50];
    let big = AttentionDims {
        batch: 3,
        seq,
        heads,
        head_dim,
    };
    let len = 3 * seq * width;
    let (q, k, v) = (
        random(1, len, -1.0, 1.0),
        random(2, len, -1.0, 1.0),
        random(3, len, -1.0, 1.0),
    );
    for kern in all_kernels() {
        for kern in [kern.clone(), kern.with_threads(2)] {
            let mut batched = vec![0.0; len];
            kern.attention(&q, &k, &v, big, &lens, &mut batched)
                .unwrap();
            for (b, &l) in lens.iter().enumerate() {
                let rows = b * seq * width..(b * seq + l) * width;
                let alone = AttentionDims {
                    batch: 1,
                    seq: l,
                    heads,
                    head_dim,
                };
                let mut out = vec![0.0; l * width];
                kern.attention(
                    &q[rows.clone()],
                    &k[rows.clone()],
                    &v[rows.clone()],
                    alone,
                    &[l],
                    &mut out,
                )
                .unwrap();
                assert_eq!(
                    &batched[rows],
                    &out[..],
                    "sequence {b} at {:?}",
                    kern.level()
                );
                let pad = (b * seq + l) * width..(b + 1) * seq * width;
                assert!(batched[pad].iter().all(|&x| x == 0.0));
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let k = Kernels::detect();
    let mut out = [0.0; 4];
    let e = k
        .layer_norm(&[1.0; 4], 3, &[1.0; 3], &[0.0; 3], 1e-5, &mut out)
        .unwrap_err();
    assert!(e.message.contains("multiple of the row length d=3"), "{e}");
    let e = k
        .layer_norm(&[1.0; 4], 4, &[1.0; 3], &[0.0; 4], 1e-5, &mut out)
        .unwrap_err();
    assert!(e.message.contains("gamma"), "{e}");
    let e = k
        .layer_norm(&[1.0; 4], 4, &[1.0; 4], &[0.0; 4], 0.0, &mut out)
        .unwrap_err();
    assert!(e.message.contains("eps"), "{e}");
    let e = k.gather_rows(&[0.0; 6], 2, &[0, 3], &mut out).unwrap_err();
    assert!(
        e.message.contains("ids[1] is 3") && e.message.contains("3 rows"),
        "{e}"
    );
    let dims = AttentionDims {
        batch: 1,
        seq: 2,
        heads: 1,
        head_dim: 2,
    };
    let e = k
        .attention(&[0.0; 4], &[0.0; 4], &[0.0; 4], dims, &[3], &mut out)
        .unwrap_err();
    assert!(e.message.contains("lengths[0] is 3"), "{e}");
    let e = k
        .attention(&[0.0; 4], &[0.0; 3], &[0.0; 4], dims, &[2], &mut out)
        .unwrap_err();
    assert!(e.message.contains("`k`"), "{e}");
    let e = k
        .mean_pool(&[0.0; 4], 1, 2, 2, &[0], &mut out[..2])
        .unwrap_err();
    assert!(e.message.contains("lengths[0] is 0, expected 1..=2"), "{e}");
    let e = k.l2_normalize(&mut out, 3, 1e-12).unwrap_err();
    assert!(e.message.contains("multiple of the row length d=3"), "{e}");
}
