//! Evaluation metrics equal to scikit-learn's: a classification report (accuracy,
//! per-class precision, recall, F1 and support, macro and weighted averages, the confusion
//! matrix) and a regression report (MSE, MAE, R²).
//!
//! The numbers follow `sklearn.metrics.classification_report(y, p, labels=range(k))`
//! with its default `zero_division="warn"` (a class never predicted has precision 0, a class
//! never present has recall 0, F1 = 2·TP / (true + predicted) and 0 when both are 0), and
//! `mean_squared_error`, `mean_absolute_error` and `r2_score` with the default
//! `multioutput="uniform_average"` and `force_finite=True` (constant targets: R² is 1.0
//! when the predictions are exact, else 0.0; fewer than two examples: NaN, as sklearn).
//! Sums are taken in `f64` over the `f32` values, as sklearn does for `float64` arrays of
//! the same values.
//!
//! [`Display`](fmt::Display) renders sklearn's text layout; a precision
//! (`format!("{report:.4}")`) sets the number of digits, as `classification_report(digits=)`
//! (default 2).

use std::fmt;

use serde::Serialize;

/// Precision, recall, F1 and support of one class (or an average over classes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// TP / (TP + FP): of the examples predicted as this class, the fraction that are; 0 if
    /// the class was never predicted.
    pub precision: f64,
    /// TP / (TP + FN): of the examples of this class, the fraction predicted as it; 0 if the
    /// class never occurs.
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall; 0 if the class
    /// neither occurs nor is predicted.
    pub f1: f64,
    /// How many examples truly belong to the class (for the averages: all examples).
    pub support: u64,
}

/// scikit-learn's `classification_report` and `confusion_matrix` over classes `0..k`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// The class names, indexed by label.
    pub classes: Vec<String>,
    /// `confusion[true][predicted]`: how many examples of class `true` were predicted as
    /// `predicted` (`k × k`).
    pub confusion: Vec<Vec<u64>>,
    /// The metrics of each class, indexed by label.
    pub per_class: Vec<ClassMetrics>,
    /// The fraction of examples predicted correctly.
    pub accuracy: f64,
    /// The unweighted mean of the per-class metrics (every class counts, including classes
    /// absent from the data); support = the number of examples.
    pub macro_avg: ClassMetrics,
    /// The mean of the per-class metrics weighted by their support; support = the number of
    /// examples.
    pub weighted_avg: ClassMetrics,
}

/// scikit-learn's `mean_squared_error`, `mean_absolute_error` and `r2_score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegressionReport {
    /// The mean squared error (averaged over outputs).
    pub mse: f64,
    /// The mean absolute error (averaged over outputs).
    pub mae: f64,
    /// The coefficient of determination 1 − SS_res / SS_tot, averaged over outputs; 1.0 or
    /// 0.0 for constant targets (exact predictions or not), NaN (JSON `null`) for fewer than
    /// two examples, as sklearn.
    pub r2: f64,
    /// How many examples (rows of targets) were scored.
    pub count: u64,
}

/// Why metrics could not be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsError {
    /// The targets and the predictions have different lengths.
    LengthMismatch {
        /// How many targets (labels) there are.
        targets: usize,
        /// How many predictions there are.
        predictions: usize,
    },
    /// There is nothing to score.
    Empty,
    /// A label or prediction names a class that does not exist.
    ClassOutOfRange {
        /// `"label"` or `"prediction"`.
        which: &'static str,
        /// The position of the offending value.
        index: usize,
        /// The value.
        value: u32,
        /// How many classes there are (valid values are `0..classes`).
        classes: usize,
    },
    /// A regression value is NaN or infinite (sklearn refuses these too).
    NotFinite {
        /// `"target"` or `"prediction"`.
        which: &'static str,
        /// The position of the offending value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Multi-output values are not a whole number of rows of `width`.
    Width {
        /// How many values there are.
        len: usize,
        /// The number of outputs per example that was asked for.
        width: usize,
    },
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthMismatch {
                targets,
                predictions,
            } => write!(
                f,
                "{targets} targets but {predictions} predictions; expected one prediction per target"
            ),
            Self::Empty => write!(f, "no examples to score; expected at least one"),
            Self::ClassOutOfRange {
                which,
                index,
                value,
                classes,
            } => write!(
                f,
                "{which} {index} is class {value}, but there are only {classes} classes \
                 (expected 0..{classes})"
            ),
            Self::NotFinite {
                which,
                index,
                value,
            } => write!(f, "{which} {index} is {value}; expected a finite number"),
            Self::Width { len, width } => write!(
                f,
                "{len} values are not whole rows of {width} outputs; expected a positive width \
                 dividing the length"
            ),
        }
    }
}

impl std::error::Error for MetricsError {}

/// Computes the classification report of `predictions` against the true `labels`, both class
/// indices into `classes`.
///
/// Equal to scikit-learn's
/// `classification_report(labels, predictions, labels=range(len(classes)),
/// target_names=classes, output_dict=True)` and `confusion_matrix` with the same `labels`.
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`] if the slices differ in length, [`MetricsError::Empty`]
/// if they are empty, [`MetricsError::ClassOutOfRange`] if a value is not below
/// `classes.len()`.
pub fn classification_report(
    labels: &[u32],
    predictions: &[u32],
    classes: &[String],
) -> Result<ClassificationReport, MetricsError> {
    check_lengths(labels.len(), predictions.len())?;
    let k = classes.len();
    let class_of = |which, index, value: u32| match usize::try_from(value) {
        Ok(c) if c < k => Ok(c),
        _ => Err(MetricsError::ClassOutOfRange {
            which,
            index,
            value,
            classes: k,
        }),
    };
    let mut confusion = vec![vec![0u64; k]; k];
    for (i, (&t, &p)) in labels.iter().zip(predictions).enumerate() {
        let t = class_of("label", i, t)?;
        let p = class_of("prediction", i, p)?;
        confusion[t][p] += 1;
    }
    let total = labels.len() as u64;
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let true_sum: u64 = confusion[c].iter().sum();
            let pred_sum: u64 = confusion.iter().map(|row| row[c]).sum();
            ClassMetrics {
                precision: ratio(tp, pred_sum),
                recall: ratio(tp, true_sum),
                f1: ratio(2 * tp, true_sum + pred_sum),
                support: true_sum,
            }
        })
        .collect();
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let average = |weight: &dyn Fn(&ClassMetrics) -> f64| {
        let weights: f64 = per_class.iter().map(weight).sum();
        let mean = |field: fn(&ClassMetrics) -> f64| {
            per_class.iter().map(|m| weight(m) * field(m)).sum::<f64>() / weights
        };
        ClassMetrics {
            precision: mean(|m| m.precision),
            recall: mean(|m| m.recall),
            f1: mean(|m| m.f1),
            support: total,
        }
    };
    let macro_avg = average(&|_| 1.0);
    // The supports sum to `total` > 0, so the weighted mean is defined.
    let weighted_avg = average(&|m| m.support as f64);
    Ok(ClassificationReport {
        classes: classes.to_vec(),
        accuracy: correct as f64 / total as f64,
        confusion,
        per_class,
        macro_avg,
        weighted_avg,
    })
}

/// `num / den`, or 0 when `den` is 0 (sklearn's `zero_division="warn"` value).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn check_lengths(targets: usize, predictions: usize) -> Result<(), MetricsError> {
    if targets != predictions {
        return Err(MetricsError::LengthMismatch {
            targets,
            predictions,
        });
    }
    if targets == 0 {
        return Err(MetricsError::Empty);
    }
    Ok(())
}

/// Computes MSE, MAE and R² of `predictions` against `targets`, one output per example.
///
/// Equal to scikit-learn's `mean_squared_error`, `mean_absolute_error` and `r2_score` on
/// the same values as `float64`. Same as [`multi_output_regression_report`] with width 1.
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`], [`MetricsError::Empty`], or
/// [`MetricsError::NotFinite`] for a NaN or infinite value.
pub fn regression_report(
    targets: &[f32],
    predictions: &[f32],
) -> Result<RegressionReport, MetricsError> {
    multi_output_regression_report(targets, predictions, 1)
}

/// Computes MSE, MAE and R² of `predictions` against `targets`, both row-major
/// `[examples, width]`: each metric per output column, then their uniform average
/// (sklearn's default `multioutput="uniform_average"`).
///
/// # Errors
///
/// As [`regression_report`], and [`MetricsError::Width`] if `width` is 0 or does not divide
/// the length.
pub fn multi_output_regression_report(
    targets: &[f32],
    predictions: &[f32],
    width: usize,
) -> Result<RegressionReport, MetricsError> {
    check_lengths(targets.len(), predictions.len())?;
    if width == 0 || !targets.len().is_multiple_of(width) {
        return Err(MetricsError::Width {
            len: targets.len(),
            width,
        });
    }
    for (which, values) in [("target", targets), ("prediction", predictions)] {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(MetricsError::NotFinite {
                which,
                index,
                value,
            });
        }
    }
    let rows = targets.len() / width;
    let n = rows as f64;
    let column = |values: &[f32], j: usize| {
        values
            .iter()
            .skip(j)
            .step_by(width)
            .map(|&v| f64::from(v))
            .collect::<Vec<f64>>()
    };
    let (mut mse, mut mae, mut r2) = (0.0, 0.0, 0.0);
    for j in 0..width {
        let (y, p) = (column(targets, j), column(predictions, j));
        let residual = || y.iter().zip(&p).map(|(y, p)| y - p);
        let ss_res: f64 = residual().map(|d| d * d).sum();
        mse += ss_res / n;
        mae += residual().map(f64::abs).sum::<f64>() / n;
        let mean = y.iter().sum::<f64>() / n;
        let ss_tot: f64 = y.iter().map(|y| (y - mean) * (y - mean)).sum();
        r2 += if ss_res == 0.0 {
            1.0
        } else if ss_tot == 0.0 {
            0.0
        } else {
            1.0 - ss_res / ss_tot
        };
    }
    let outputs = width as f64;
    Ok(RegressionReport {
        mse: mse / outputs,
        mae: mae / outputs,
        // sklearn: "R^2 score is not well-defined with less than two samples" (NaN).
        r2: if rows < 2 { f64::NAN } else { r2 / outputs },
        count: rows as u64,
    })
}

/// The row-label column's width: sklearn's `max(len(name), len("weighted avg"), digits)`.
fn label_width(classes: &[String], digits: usize) -> usize {
    classes
        .iter()
        .map(|c| c.chars().count())
        .chain([WEIGHTED.len(), digits])
        .max()
        .unwrap_or(WEIGHTED.len())
}

const WEIGHTED: &str = "weighted avg";

impl ClassificationReport {
    /// The confusion matrix as a labelled text table (rows: true class, columns: predicted
    /// class), the same that [`Display`](fmt::Display) prints after the report.
    pub fn confusion_table(&self) -> String {
        let name_width = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .chain(["true \\ predicted".len()])
            .max()
            .unwrap_or(0);
        let widest_count = self
            .confusion
            .iter()
            .flatten()
            .map(|n| n.to_string().len())
            .max()
            .unwrap_or(1);
        let cell = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .chain([widest_count])
            .max()
            .unwrap_or(1);
        let mut out = format!("{:>name_width$}", "true \\ predicted");
        for c in &self.classes {
            out += &format!(" {c:>cell$}");
        }
        out.push('\n');
        for (c, row) in self.classes.iter().zip(&self.confusion) {
            out += &format!("{c:>name_width$}");
            for n in row {
                out += &format!(" {n:>cell$}");
            }
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for ClassificationReport {
    /// sklearn's `classification_report` text (precision = digits, default 2), a blank line,
    /// and the [confusion table](ClassificationReport::confusion_table).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(2);
        let w = label_width(&self.classes, digits);
        writeln!(
            f,
            "{:>w$}  {:>9} {:>9} {:>9} {:>9}\n",
            "", "precision", "recall", "f1-score", "support"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, m: &ClassMetrics| {
            writeln!(
                f,
                "{name:>w$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}",
                m.precision, m.recall, m.f1, m.support
            )
        };
        for (name, m) in self.classes.iter().zip(&self.per_class) {
            row(f, name, m)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>w$}  {:>9} {:>9} {:>9.digits$} {:>9}",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        )?;
        row(f, "macro avg", &self.macro_avg)?;
        row(f, WEIGHTED, &self.weighted_avg)?;
        writeln!(f)?;
        write!(f, "{}", self.confusion_table())
    }
}

impl fmt::Display for RegressionReport {
    /// One metric per line (precision = digits, default 4).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(4);
        writeln!(f, "{:>5}  {:.digits$}", "mse", self.mse)?;
        writeln!(f, "{:>5}  {:.digits$}", "mae", self.mae)?;
        writeln!(f, "{:>5}  {:.digits$}", "r2", self.r2)?;
        writeln!(f, "{:>5}  {}", "count", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-12;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|c| c.to_string()).collect()
    }

    fn close(what: &str, got: f64, want: f64) {
        assert!(
            (got - want).abs() <= TOL,
            "{what}: got {got}, expected {want}"
        );
    }

    fn metrics(what: &str, got: &ClassMetrics, want: (f64, f64, f64, u64)) {
        close(&format!("{what} precision"), got.precision, want.0);
        close(&format!("{what} recall"), got.recall, want.1);
        close(&format!("{what} f1"), got.f1, want.2);
        assert_eq!(got.support, want.3, "{what} support");
    }

    #[test]
    fn three_classes_by_hand() {
        // y = [0,0,0,1,1,2,2,2,2,0], p = [0,1,0,1,2,2,2,0,2,0]
        // pairs (t,p): (0,0) (0,1) (0,0) (1,1) (1,2) (2,2) (2,2) (2,0) (2,2) (0,0)
        // confusion[t][p]:    p=0 p=1 p=2
        //               t=0 [  3,  1,  0 ]   true_sum 4
        //               t=1 [  0,  1,  1 ]   true_sum 2
        //               t=2 [  1,  0,  3 ]   true_sum 4
        //        pred_sum      4   2   4
        // class 0: P = 3/4, R = 3/4, F1 = 6/8 = 0.75
        // class 1: P = 1/2, R = 1/2, F1 = 2/4 = 0.5
        // class 2: P = 3/4, R = 3/4, F1 = 6/8 = 0.75
        // accuracy = (3+1+3)/10 = 0.7
        // macro = (0.75+0.5+0.75)/3 = 2/3 for all three
        // weighted = (4·0.75 + 2·0.5 + 4·0.75)/10 = 7/10 for all three
        let y = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0];
        let p = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0];
        let r = classification_report(&y, &p, &names(3)).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![3, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]
        );
        metrics("class 0", &r.per_class[0], (0.75, 0.75, 0.75, 4));
        metrics("class 1", &r.per_class[1], (0.5, 0.5, 0.5, 2));
        metrics("class 2", &r.per_class[2], (0.75, 0.75, 0.75, 4));
        close("accuracy", r.accuracy, 0.7);
        metrics("macro", &r.macro_avg, (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 10));
        metrics("weighted", &r.weighted_avg, (0.7, 0.7, 0.7, 10));
    }

    #[test]
    fn asymmetric_precision_and_recall_by_hand() {
        // y = [0,0,0,1], p = [0,1,1,1]
        // confusion: t=0 [1, 2], t=1 [0, 1]; true_sum (3, 1), pred_sum (1, 3)
        // class 0: P = 1/1 = 1, R = 1/3, F1 = 2·1/(3+1) = 0.5   (= 2·1·(1/3)/(1+1/3))
        // class 1: P = 1/3, R = 1/1 = 1, F1 = 2·1/(1+3) = 0.5
        // accuracy = 2/4; macro P = R = (1+1/3)/2 = 2/3, F1 = 0.5
        // weighted P = (3·1 + 1·1/3)/4 = 10/12, R = (3·1/3 + 1·1)/4 = 0.5, F1 = 0.5
        let r = classification_report(&[0, 0, 0, 1], &[0, 1, 1, 1], &names(2)).unwrap();
        assert_eq!(r.confusion, vec![vec![1, 2], vec![0, 1]]);
        metrics("class 0", &r.per_class[0], (1.0, 1.0 / 3.0, 0.5, 3));
        metrics("class 1", &r.per_class[1], (1.0 / 3.0, 1.0, 0.5, 1));
        close("accuracy", r.accuracy, 0.5);
        metrics("macro", &r.macro_avg, (2.0 / 3.0, 2.0 / 3.0, 0.5, 4));
        metrics("weighted", &r.weighted_avg, (10.0 / 12.0, 0.5, 0.5, 4));
    }

    #[test]
    fn zero_division_is_zero_as_sklearn() {
        // y = [0,0,1,1], p = [0,0,0,0], 3 classes (class 2 neither occurs nor is predicted)
        // confusion: t=0 [2,0,0], t=1 [2,0,0], t=2 [0,0,0]
        // class 0: P = 2/4 = 0.5, R = 2/2 = 1, F1 = 4/(2+4) = 2/3
        // class 1: never predicted: P = 0 (0/0), R = 0/2 = 0, F1 = 0/(2+0) = 0
        // class 2: P = 0/0 → 0, R = 0/0 → 0, F1 = 0/0 → 0, support 0
        // macro = (0.5/3, 1/3, (2/3)/3); weighted = (2·0.5/4, 2·1/4, 2·(2/3)/4)
        let r = classification_report(&[0, 0, 1, 1], &[0, 0, 0, 0], &names(3)).unwrap();
        metrics("class 0", &r.per_class[0], (0.5, 1.0, 2.0 / 3.0, 2));
        metrics("class 1", &r.per_class[1], (0.0, 0.0, 0.0, 2));
        metrics("class 2", &r.per_class[2], (0.0, 0.0, 0.0, 0));
        metrics("macro", &r.macro_avg, (0.5 / 3.0, 1.0 / 3.0, 2.0 / 9.0, 4));
        metrics("weighted", &r.weighted_avg, (0.25, 0.5, 1.0 / 3.0, 4));
        close("accuracy", r.accuracy, 0.5);
    }

    /// Reference numbers from scikit-learn 1.9.1:
    ///
    /// ```text
    /// target/venv/bin/python -c "
    /// from sklearn.metrics import classification_report as c
    /// y=[0,1,2,3,3,1,0,2,2,2,1,0,3,3,3,1]; p=[0,2,2,3,1,1,0,2,0,2,1,1,3,3,2,1]
    /// d=c(y,p,labels=[0,1,2,3,4],output_dict=True)
    /// print(repr(d)); print(c(y,p,labels=[0,1,2,3,4],target_names=['zero','one','two','three','four']))"
    /// ```
    #[test]
    fn five_classes_match_sklearn() {
        let y = [0, 1, 2, 3, 3, 1, 0, 2, 2, 2, 1, 0, 3, 3, 3, 1];
        let p = [0, 2, 2, 3, 1, 1, 0, 2, 0, 2, 1, 1, 3, 3, 2, 1];
        let classes: Vec<String> = ["zero", "one", "two", "three", "four"]
            .map(String::from)
            .to_vec();
        let r = classification_report(&y, &p, &classes).unwrap();
        // sklearn's output_dict (pasted):
        metrics(
            "zero",
            &r.per_class[0],
            (
                0.6666666666666666,
                0.6666666666666666,
                0.6666666666666666,
                3,
            ),
        );
        metrics("one", &r.per_class[1], (0.6, 0.75, 0.6666666666666666, 4));
        metrics("two", &r.per_class[2], (0.6, 0.75, 0.6666666666666666, 4));
        metrics("three", &r.per_class[3], (1.0, 0.6, 0.75, 5));
        metrics("four", &r.per_class[4], (0.0, 0.0, 0.0, 0));
        close("accuracy", r.accuracy, 0.6875);
        metrics(
            "macro",
            &r.macro_avg,
            (0.5733333333333334, 0.5533333333333333, 0.55, 16),
        );
        metrics(
            "weighted",
            &r.weighted_avg,
            (0.7375, 0.6875, 0.6927083333333333, 16),
        );
        // sklearn's text report (pasted), then our confusion table.
        let sklearn = "              precision    recall  f1-score   support

        zero       0.67      0.67      0.67         3
         one       0.60      0.75      0.67         4
         two       0.60      0.75      0.67         4
       three       1.00      0.60      0.75         5
        four       0.00      0.00      0.00         0

    accuracy                           0.69        16
   macro avg       0.57      0.55      0.55        16
weighted avg       0.74      0.69      0.69        16
";
        // confusion by hand from the pairs (t,p):
        // zero:  (0,0) (0,0) (0,1)            → [2,1,0,0,0]
        // one:   (1,2) (1,1) (1,1) (1,1)      → [0,3,1,0,0]
        // two:   (2,2) (2,2) (2,0) (2,2)      → [1,0,3,0,0]
        // three: (3,3) (3,1) (3,3) (3,3) (3,2) → [0,1,1,3,0]
        let table = "true \\ predicted  zero   one   two three  four
            zero     2     1     0     0     0
             one     0     3     1     0     0
             two     1     0     3     0     0
           three     0     1     1     3     0
            four     0     0     0     0     0
";
        assert_eq!(r.to_string(), format!("{sklearn}\n{table}"));
    }

    /// `digits=4`, reference from scikit-learn 1.9.1:
    /// `print(classification_report([0,0,0,1],[0,1,1,1],digits=4))`.
    #[test]
    fn display_precision_is_digits() {
        let r = classification_report(&[0, 0, 0, 1], &[0, 1, 1, 1], &names(2)).unwrap();
        let text = format!("{r:.4}");
        let sklearn = "              precision    recall  f1-score   support

           0     1.0000    0.3333    0.5000         3
           1     0.3333    1.0000    0.5000         1

    accuracy                         0.5000         4
   macro avg     0.6667    0.6667    0.5000         4
weighted avg     0.8333    0.5000    0.5000         4
";
        assert!(
            text.starts_with(sklearn),
            "got:\n{text}\nexpected:\n{sklearn}"
        );
    }

    #[test]
    fn classification_errors_name_the_problem() {
        let c = names(2);
        assert_eq!(
            classification_report(&[0, 1], &[0], &c),
            Err(MetricsError::LengthMismatch {
                targets: 2,
                predictions: 1
            })
        );
        assert_eq!(
            classification_report(&[], &[], &c),
            Err(MetricsError::Empty)
        );
        let e = classification_report(&[0, 1, 0], &[0, 1, 2], &c).unwrap_err();
        assert_eq!(
            e,
            MetricsError::ClassOutOfRange {
                which: "prediction",
                index: 2,
                value: 2,
                classes: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "prediction 2 is class 2, but there are only 2 classes (expected 0..2)"
        );
        assert!(matches!(
            classification_report(&[5], &[0], &c),
            Err(MetricsError::ClassOutOfRange {
                which: "label",
                index: 0,
                value: 5,
                ..
            })
        ));
    }

    proptest::proptest! {
        /// Against a naive oracle: per class, count TP, FP and FN by scanning the pairs and
        /// apply the textbook definitions; F1 also equals 2PR/(P+R) when P+R > 0.
        #[test]
        fn per_class_metrics_match_a_pair_scan(
            pairs in proptest::collection::vec((0u32..4, 0u32..4), 1..60)
        ) {
            let (y, p): (Vec<u32>, Vec<u32>) = pairs.iter().copied().unzip();
            let r = classification_report(&y, &p, &names(4)).unwrap();
            let mut correct = 0;
            for c in 0..4u32 {
                let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
                for &(t, q) in &pairs {
                    match (t == c, q == c) {
                        (true, true) => tp += 1,
                        (false, true) => fp += 1,
                        (true, false) => fn_ += 1,
                        (false, false) => {}
                    }
                }
                correct += tp;
                let div = |a: u32, b: u32| if b == 0 { 0.0 } else { f64::from(a) / f64::from(b) };
                let (pr, rc) = (div(tp, tp + fp), div(tp, tp + fn_));
                let m = &r.per_class[c as usize];
                proptest::prop_assert!((m.precision - pr).abs() <= TOL);
                proptest::prop_assert!((m.recall - rc).abs() <= TOL);
                let f1 = if pr + rc > 0.0 { 2.0 * pr * rc / (pr + rc) } else { 0.0 };
                proptest::prop_assert!((m.f1 - f1).abs() <= TOL, "f1 {} vs {}", m.f1, f1);
                proptest::prop_assert_eq!(m.support, u64::from(tp + fn_));
            }
            let n = pairs.len() as f64;
            proptest::prop_assert!((r.accuracy - f64::from(correct) / n).abs() <= TOL);
            let total: u64 = r.confusion.iter().flatten().sum();
            proptest::prop_assert_eq!(total, pairs.len() as u64);
        }
    }

    #[test]
    fn regression_by_hand() {
        // y = [1, 2, 3, 4], p = [1.5, 2, 2, 5]; residuals -0.5, 0, 1, -1
        // MSE = (0.25 + 0 + 1 + 1)/4 = 0.5625; MAE = (0.5 + 0 + 1 + 1)/4 = 0.625
        // mean y = 2.5; SS_tot = 2.25+0.25+0.25+2.25 = 5; SS_res = 2.25
        // R² = 1 − 2.25/5 = 0.55
        let r = regression_report(&[1.0, 2.0, 3.0, 4.0], &[1.5, 2.0, 2.0, 5.0]).unwrap();
        close("mse", r.mse, 0.5625);
        close("mae", r.mae, 0.625);
        close("r2", r.r2, 0.55);
        assert_eq!(r.count, 4);
    }

    /// Reference from scikit-learn 1.9.1 (float64 arrays of the same f32 values):
    ///
    /// ```text
    /// target/venv/bin/python -c "
    /// import numpy as np; from sklearn.metrics import *
    /// y=np.float32([0.3,-1.7,2.2,5.1,0.0,3.3]).astype(np.float64)
    /// p=np.float32([0.1,-1.2,2.9,4.4,0.6,3.0]).astype(np.float64)
    /// print(repr(mean_squared_error(y,p)),repr(mean_absolute_error(y,p)),repr(r2_score(y,p)))"
    /// ```
    #[test]
    fn regression_matches_sklearn() {
        let y = [0.3, -1.7, 2.2, 5.1, 0.0, 3.3];
        let p = [0.1, -1.2, 2.9, 4.4, 0.6, 3.0];
        let r = regression_report(&y, &p).unwrap();
        close("mse", r.mse, 0.28666663398346004);
        close("mae", r.mae, 0.4999999739229679);
        close("r2", r.r2, 0.9438153364870273);
        assert_eq!(r.count, 6);
    }

    #[test]
    fn constant_targets_follow_force_finite() {
        // SS_tot = 0: exact predictions → 1.0, else 0.0 (sklearn force_finite=True).
        let exact = regression_report(&[2.0, 2.0, 2.0], &[2.0, 2.0, 2.0]).unwrap();
        close("exact r2", exact.r2, 1.0);
        close("exact mse", exact.mse, 0.0);
        let off = regression_report(&[2.0, 2.0, 2.0], &[2.0, 2.0, 3.0]).unwrap();
        close("off r2", off.r2, 0.0);
        // residuals 0,0,-1: MSE = 1/3, MAE = 1/3
        close("off mse", off.mse, 1.0 / 3.0);
        close("off mae", off.mae, 1.0 / 3.0);
        // One example: R² undefined (sklearn returns NaN with a warning).
        let one = regression_report(&[1.0], &[3.0]).unwrap();
        assert!(one.r2.is_nan(), "r2 of one example: {}", one.r2);
        close("one mse", one.mse, 4.0);
        close("one mae", one.mae, 2.0);
    }

    /// Two outputs: the metrics of each column, averaged. Reference from scikit-learn 1.9.1:
    ///
    /// ```text
    /// target/venv/bin/python -c "
    /// from sklearn.metrics import *
    /// y=[[1,10],[2,10],[3,10]]; p=[[1,10],[2,11],[4,10]]
    /// print(mean_squared_error(y,p),mean_absolute_error(y,p),r2_score(y,p))"
    /// ```
    ///
    /// By hand: column 0 residuals 0,0,-1: MSE 1/3, MAE 1/3, SS_tot 2, R² 1 − 1/2 = 0.5;
    /// column 1 constant targets, residuals 0,-1,0: MSE 1/3, MAE 1/3, R² 0 (force_finite);
    /// averages: MSE 1/3, MAE 1/3, R² 0.25.
    #[test]
    fn multi_output_is_the_uniform_average() {
        let y = [1.0, 10.0, 2.0, 10.0, 3.0, 10.0];
        let p = [1.0, 10.0, 2.0, 11.0, 4.0, 10.0];
        let r = multi_output_regression_report(&y, &p, 2).unwrap();
        close("mse", r.mse, 0.3333333333333333);
        close("mae", r.mae, 0.3333333333333333);
        close("r2", r.r2, 0.25);
        assert_eq!(r.count, 3);
    }

    #[test]
    fn regression_errors_name_the_problem() {
        assert_eq!(
            regression_report(&[1.0, 2.0], &[1.0]),
            Err(MetricsError::LengthMismatch {
                targets: 2,
                predictions: 1
            })
        );
        assert_eq!(regression_report(&[], &[]), Err(MetricsError::Empty));
        let e = regression_report(&[1.0, 2.0], &[1.0, f32::NAN]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "prediction 1 is NaN; expected a finite number"
        );
        assert!(matches!(
            regression_report(&[f32::INFINITY], &[1.0]),
            Err(MetricsError::NotFinite {
                which: "target",
                index: 0,
                ..
            })
        ));
        assert_eq!(
            multi_output_regression_report(&[1.0; 3], &[1.0; 3], 2),
            Err(MetricsError::Width { len: 3, width: 2 })
        );
        assert_eq!(
            multi_output_regression_report(&[1.0; 3], &[1.0; 3], 0),
            Err(MetricsError::Width { len: 3, width: 0 })
        );
    }

    #[test]
    fn reports_serialize_with_their_field_names() {
        let r = classification_report(&[0, 1], &[0, 0], &names(2)).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["confusion"], serde_json::json!([[1, 0], [1, 0]]));
        assert_eq!(v["classes"], serde_json::json!(["0", "1"]));
        assert_eq!(v["accuracy"], serde_json::json!(0.5));
        assert_eq!(v["per_class"][1]["support"], serde_json::json!(1));
        assert_eq!(v["macro_avg"]["support"], serde_json::json!(2));
        let g = regression_report(&[1.0, 2.0], &[1.0, 3.0]).unwrap();
        let v = serde_json::to_value(g).unwrap();
        // residuals 0,-1: MSE 0.5, MAE 0.5; SS_tot 0.5, R² 1 − 1/0.5 = −1
        assert_eq!(
            v,
            serde_json::json!({"mse": 0.5, "mae": 0.5, "r2": -1.0, "count": 2})
        );
    }
}
