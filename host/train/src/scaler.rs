//! Preprocessing learnt from the training split: per-feature standardisation of the inputs
//! (`scaler.mean`, `scaler.scale`, as scikit-learn's `StandardScaler`: population standard
//! deviation, a zero deviation counted as 1) and of regression targets (`target.mean`,
//! `target.scale`). The tensors are stored in the weights file, where the inference function
//! applies them, so that a deployed model takes raw inputs and returns targets in their own
//! units.

use crate::data::{Dataset, Targets};
use crate::spec::Preprocess;

/// Fitted means and scales; empty when the spec asks for none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scaler {
    /// Per input feature: `(mean, scale)`.
    pub input: Option<(Vec<f32>, Vec<f32>)>,
    /// Per target value: `(mean, scale)`.
    pub target: Option<(Vec<f32>, Vec<f32>)>,
}

/// Mean and population standard deviation (zero → 1) of each of `width` columns of `rows`,
/// accumulated in `f64`.
fn fit_columns(values: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (values.len() / width.max(1)).max(1) as f64;
    let mut mean = vec![0.0f64; width];
    for row in values.chunks(width) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0f64; width];
    for row in values.chunks(width) {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v as f64 - m).powi(2);
        }
    }
    let scale = var
        .iter()
        .map(|s| {
            let sd = (s / n).sqrt();
            if sd > 0.0 { sd as f32 } else { 1.0 }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), scale)
}

/// `(v - mean) / scale` over rows of `width`.
fn standardize(values: &mut [f32], mean: &[f32], scale: &[f32]) {
    for row in values.chunks_mut(mean.len().max(1)) {
        for ((v, m), s) in row.iter_mut().zip(mean).zip(scale) {
            *v = (*v - m) / s;
        }
    }
}

impl Scaler {
    /// Fits what `pre` asks for on the training set `train`.
    pub fn fit(pre: &Preprocess, train: &Dataset) -> Scaler {
        let input = pre
            .standardize
            .then(|| fit_columns(&train.features, train.example_len()));
        let target = match (&train.targets, pre.standardize_target) {
            (Targets::Values { values, width, .. }, true) => Some(fit_columns(values, *width)),
            _ => None,
        };
        Scaler { input, target }
    }

    /// Standardises `data`'s features and (regression) targets in place.
    pub fn apply(&self, data: &mut Dataset) {
        if let Some((mean, scale)) = &self.input {
            standardize(&mut data.features, mean, scale);
        }
        if let (Some((mean, scale)), Targets::Values { values, .. }) =
            (&self.target, &mut data.targets)
        {
            standardize(values, mean, scale);
        }
    }

    /// Maps standardised targets (or predictions) back to their units.
    pub fn unscale_targets(&self, values: &[f32]) -> Vec<f32> {
        match &self.target {
            None => values.to_vec(),
            Some((mean, scale)) => values
                .chunks(mean.len().max(1))
                .flat_map(|row| row.iter().zip(mean).zip(scale).map(|((v, m), s)| v * s + m))
                .collect(),
        }
    }

    /// The tensors to store with the weights: `(name, shape, values)`.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (prefix, part) in [("scaler", &self.input), ("target", &self.target)] {
            if let Some((mean, scale)) = part {
                out.push((format!("{prefix}.mean"), vec![mean.len()], mean.clone()));
                out.push((format!("{prefix}.scale"), vec![scale.len()], scale.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns [1, 3] and [2, 2]: means 2 and 2, population deviations 1 and 0 (→ 1).
    #[test]
    fn fits_population_deviation_and_guards_zero() {
        let (mean, scale) = fit_columns(&[1.0, 2.0, 3.0, 2.0], 2);
        assert_eq!(mean, vec![2.0, 2.0]);
        assert_eq!(scale, vec![1.0, 1.0]);
        let (mean, scale) = fit_columns(&[0.0, 4.0], 1);
        assert_eq!((mean[0], scale[0]), (2.0, 2.0));
        let mut v = vec![0.0, 4.0];
        standardize(&mut v, &mean, &scale);
        assert_eq!(v, vec![-1.0, 1.0]);
    }
}
