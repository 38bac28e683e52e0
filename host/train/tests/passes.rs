//! Training in passes: a batch's gradients computed in several forward/backward passes that
//! add into one set of gradients (`Network::backward` with `accumulate`) equal the gradients
//! of one pass over the whole batch, for every parameter of the seed CNN; and the seed CNN
//! is large enough per example that a worker's share of a batch of 128 takes several passes.

use tensorlet_kernels::Kernels;
use tensorlet_train::data::Rng;
use tensorlet_train::net::{Network, Tape};
use tensorlet_train::spec::Spec;

fn seed_cnn() -> Network {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/mnist-cnn/train.toml"
    );
    let spec = Spec::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    Network::new(&spec, &mut Rng::new(7)).unwrap()
}

#[test]
fn gradients_in_passes_equal_one_pass() {
    let k = Kernels::detect();
    let net = seed_cnn();
    let packed = net.pack(&k, true);
    let rows = 11;
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..rows * net.input_len())
        .map(|_| rng.next_f32())
        .collect();
    let d_out: Vec<f32> = (0..rows * net.output_len())
        .map(|_| rng.next_f32() - 0.5)
        .collect();
    let (inp, outp) = (net.input_len(), net.output_len());

    let mut tape = Tape::default();
    let mut whole = net.zero_grads();
    net.forward(&k, &packed, &x, rows, true, None, &mut tape);
    net.backward(&k, &packed, &mut tape, &d_out, &mut whole, false);

    // Passes of 4, 4 and 3 rows; the gradients start from garbage that the first pass
    // overwrites.
    let mut parts: Vec<Vec<f32>> = whole.iter().map(|g| vec![f32::NAN; g.len()]).collect();
    for (p, a) in (0..rows).step_by(4).enumerate() {
        let b = (a + 4).min(rows);
        net.forward(
            &k,
            &packed,
            &x[a * inp..b * inp],
            b - a,
            true,
            None,
            &mut tape,
        );
        net.backward(
            &k,
            &packed,
            &mut tape,
            &d_out[a * outp..b * outp],
            &mut parts,
            p > 0,
        );
    }

    for (i, (w, p)) in whole.iter().zip(&parts).enumerate() {
        let name = &net.params[i].name;
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}: gradient is all zero");
        for (j, (a, b)) in w.iter().zip(p).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{name}[{j}]: one pass {a}, three passes {b} (tolerance 1e-5 of {scale})"
            );
        }
    }
}

#[test]
fn the_seed_cnn_trains_in_several_passes_per_share() {
    // 156 KB of activations per example: a share of 64 examples (a batch of 128 on two
    // threads) is 10 MB, more than PASS_BYTES.
    let net = seed_cnn();
    let per = net.rows_per_pass();
    assert!((2..64).contains(&per), "rows per pass {per}");
}
