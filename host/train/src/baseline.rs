//! The baseline a regression model should beat: ordinary least squares (a linear model with
//! an intercept) fitted on the same training split, in f64. `tensorlet train` reports its
//! test metrics beside the network's, so a user sees at once whether the network learnt more
//! than a straight line.

use crate::data::{Dataset, Targets};
use crate::train::TrainError;

/// A fitted linear model: `y[o] = intercept[o] + Σ_f coef[o][f] · x[f]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    /// One row of feature weights per target.
    pub coef: Vec<Vec<f64>>,
    /// One intercept per target.
    pub intercept: Vec<f64>,
}

/// Fits ordinary least squares to `train` (continuous targets): the centred normal
/// equations, solved by Gaussian elimination with partial pivoting in f64.
///
/// Errors for class labels, fewer examples than features + 1, or features that are linearly
/// dependent on the training split (a constant column, a duplicated one).
pub fn least_squares(train: &Dataset) -> Result<LinearModel, TrainError> {
    let Targets::Values { values, width, .. } = &train.targets else {
        return Err(TrainError(
            "a least-squares baseline needs continuous targets, not class labels".into(),
        ));
    };
    let (n, f, width) = (train.len(), train.example_len(), *width);
    if n < f + 1 {
        return Err(TrainError(format!(
            "a least-squares fit of {f} features and an intercept needs at least {} training \
             examples, got {n}",
            f + 1
        )));
    }
    let row = |i: usize| {
        train.features[i * f..(i + 1) * f]
            .iter()
            .map(|&v| f64::from(v))
    };
    let mean_x: Vec<f64> = (0..f)
        .map(|j| {
            (0..n)
                .map(|i| f64::from(train.features[i * f + j]))
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mean_y: Vec<f64> = (0..width)
        .map(|o| {
            (0..n)
                .map(|i| f64::from(values[i * width + o]))
                .sum::<f64>()
                / n as f64
        })
        .collect();
    // Augmented system [XcᵀXc | Xcᵀyc], f × (f + width).
    let cols = f + width;
    let mut a = vec![0.0f64; f * cols];
    let mut xc = vec![0.0f64; f];
    for i in 0..n {
        for (c, (v, m)) in xc.iter_mut().zip(row(i).zip(&mean_x)) {
            *c = v - m;
        }
        for r in 0..f {
            let ar = &mut a[r * cols..(r + 1) * cols];
            for (c, &x) in xc.iter().enumerate() {
                ar[c] += xc[r] * x;
            }
            for o in 0..width {
                ar[f + o] += xc[r] * (f64::from(values[i * width + o]) - mean_y[o]);
            }
        }
    }
    let scale = (0..f).map(|r| a[r * cols + r]).fold(0.0f64, f64::max);
    for k in 0..f {
        let pivot = (k..f)
            .max_by(|&p, &q| a[p * cols + k].abs().total_cmp(&a[q * cols + k].abs()))
            .unwrap_or(k);
        if a[pivot * cols + k].abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            let name = train
                .feature_names
                .as_ref()
                .and_then(|names| names.get(k))
                .map_or_else(|| format!("feature {k}"), |s| format!("feature `{s}`"));
            return Err(TrainError(format!(
                "the training split's features are linearly dependent (at {name}): no unique \
                 least-squares fit"
            )));
        }
        if pivot != k {
            for c in 0..cols {
                a.swap(k * cols + c, pivot * cols + c);
            }
        }
        for r in 0..f {
            if r == k {
                continue;
            }
            let factor = a[r * cols + k] / a[k * cols + k];
            if factor != 0.0 {
                for c in k..cols {
                    a[r * cols + c] -= factor * a[k * cols + c];
                }
            }
        }
    }
    let coef: Vec<Vec<f64>> = (0..width)
        .map(|o| {
            (0..f)
                .map(|r| a[r * cols + f + o] / a[r * cols + r])
                .collect()
        })
        .collect();
    let intercept = coef
        .iter()
        .zip(&mean_y)
        .map(|(c, my)| my - c.iter().zip(&mean_x).map(|(c, m)| c * m).sum::<f64>())
        .collect();
    Ok(LinearModel { coef, intercept })
}

impl LinearModel {
    /// Predictions for every example of `data`, row-major `[len, targets]`.
    ///
    /// Errors if `data`'s examples do not have as many features as the model.
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f32>, TrainError> {
        let f = data.example_len();
        if self.coef.first().is_some_and(|c| c.len() != f) {
            return Err(TrainError(format!(
                "the linear model takes {} features, the data has {f}",
                self.coef[0].len()
            )));
        }
        let mut out = Vec::with_capacity(data.len() * self.coef.len());
        for x in data.features.chunks_exact(f.max(1)).take(data.len()) {
            for (c, b) in self.coef.iter().zip(&self.intercept) {
                let y = b + c.iter().zip(x).map(|(c, &x)| c * f64::from(x)).sum::<f64>();
                out.push(y as f32);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(features: Vec<f32>, f: usize, targets: Vec<f32>) -> Dataset {
        Dataset::new(
            features,
            vec![f],
            Targets::Values {
                values: targets,
                width: 1,
                names: vec!["y".into()],
            },
            None,
            "test",
        )
        .expect("consistent test data")
    }

    #[test]
    fn hand_computed_line() {
        // (0, 1), (1, 3), (2, 4): slope Σ(x-x̄)(y-ȳ)/Σ(x-x̄)² = 3/2, intercept 8/3 - 3/2 = 7/6.
        let m = least_squares(&dataset(vec![0.0, 1.0, 2.0], 1, vec![1.0, 3.0, 4.0])).unwrap();
        assert!((m.coef[0][0] - 1.5).abs() < 1e-12, "{m:?}");
        assert!((m.intercept[0] - 7.0 / 6.0).abs() < 1e-12, "{m:?}");
        let p = m.predict(&dataset(vec![4.0], 1, vec![0.0])).unwrap();
        assert!((p[0] - (7.0 / 6.0 + 6.0) as f32).abs() < 1e-5);
    }

    #[test]
    fn exact_plane_is_recovered() {
        // y = 3 + 2a - b on points that span the plane.
        let pts = [
            (0.0, 0.0),
            (1.0, 0.0),
            (0.0, 1.0),
            (2.0, 3.0),
            (-1.0, 4.0),
            (5.0, -2.0),
        ];
        let x: Vec<f32> = pts.iter().flat_map(|&(a, b)| [a, b]).collect();
        let y: Vec<f32> = pts.iter().map(|&(a, b)| 3.0 + 2.0 * a - b).collect();
        let m = least_squares(&dataset(x, 2, y)).unwrap();
        assert!((m.intercept[0] - 3.0).abs() < 1e-9, "{m:?}");
        assert!((m.coef[0][0] - 2.0).abs() < 1e-9 && (m.coef[0][1] + 1.0).abs() < 1e-9);
    }

    #[test]
    fn dependent_features_and_labels_are_errors() {
        // The second feature is twice the first.
        let x = vec![1.0, 2.0, 2.0, 4.0, 3.0, 6.0, 4.0, 8.0];
        let e = least_squares(&dataset(x, 2, vec![1.0, 2.0, 3.0, 5.0])).unwrap_err();
        assert!(e.0.contains("linearly dependent"), "{e}");
        let e = least_squares(&dataset(vec![1.0, 2.0], 2, vec![1.0])).unwrap_err();
        assert!(e.0.contains("at least 3 training examples"), "{e}");
        let labels = Dataset::new(
            vec![0.0, 1.0],
            vec![1],
            Targets::Classes {
                labels: vec![0, 1],
                names: vec!["a".into(), "b".into()],
            },
            None,
            "test",
        )
        .unwrap();
        assert!(
            least_squares(&labels)
                .unwrap_err()
                .0
                .contains("class labels")
        );
    }
}
