//! Data sets for training and evaluation: loaded from the formats people have (MNIST's IDX
//! files, [`idx`]; CSV with a named target column, [`csv`]; a folder of PNG images per
//! class, [`images`]; a folder of text files per class, [`text`], turned into features by
//! an [`Embed`] function), described in a training spec by a [`DataSource`], held in memory
//! as a [`Dataset`] of `f32` examples with class labels or continuous targets. Shuffles and
//! train/test splits are seeded with the platform-independent [`Rng`], and
//! [`Dataset::digest`] fingerprints the content for training metadata.
//!
//! Every loader reports bad input as a [`DataError`] that names the file (and the line for
//! CSV) and says what was expected.

pub mod csv;
pub mod idx;
pub mod images;
mod rng;
pub mod text;

pub use rng::Rng;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a data set could not be loaded, written or split.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataError {
    /// Reading or writing `path` failed at the operating-system level (missing file,
    /// permissions, ...).
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `path` is not what its format requires (bad magic, truncated, counts that disagree,
    /// undecodable PNG, empty class folder, ...); `what` says what was found and expected.
    Format {
        /// The file or folder concerned.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// A CSV file has a bad row or header at `line` (1-based, the header is line 1).
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What was wrong, naming the column where there is one.
        what: String,
    },
    /// A split or subset request that cannot be met (too few examples, a fraction outside
    /// (0, 1)).
    Split {
        /// What was wrong.
        what: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DataError::Format { path, what } => write!(f, "{}: {what}", path.display()),
            DataError::Csv { path, line, what } => {
                write!(f, "{}:{line}: {what}", path.display())
            }
            DataError::Split { what } => write!(f, "cannot split the data set: {what}"),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A [`DataError::Format`] for `path`.
    pub(crate) fn format(path: &Path, what: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

/// What each example is labelled with.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class indices and the class names (index = label).
    Classes {
        /// One label per example, each `< names.len()`.
        labels: Vec<u32>,
        /// The class names; label `i` is `names[i]`.
        names: Vec<String>,
    },
    /// Continuous targets, `width` per example, and their names.
    Values {
        /// `len * width` values, row-major.
        values: Vec<f32>,
        /// Targets per example.
        width: usize,
        /// The `width` target names.
        names: Vec<String>,
    },
}

impl Targets {
    /// How many examples these targets label.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values { values, width, .. } => values.len().checked_div(*width).unwrap_or(0),
        }
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets of the examples at `indices`, in that order.
    fn subset(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes { labels, names } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                names: names.clone(),
            },
            Targets::Values {
                values,
                width,
                names,
            } => Targets::Values {
                values: indices
                    .iter()
                    .flat_map(|&i| &values[i * width..(i + 1) * width])
                    .copied()
                    .collect(),
                width: *width,
                names: names.clone(),
            },
        }
    }
}

/// A data set in memory: `len()` examples of shape `example_shape`, each with its target.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    /// Every example's values, row-major: `len() * example_len()` values.
    pub features: Vec<f32>,
    /// Shape of one example: `[1, 28, 28]` for MNIST, `[10]` for diabetes, `[c, h, w]` for
    /// images.
    pub example_shape: Vec<usize>,
    /// The label or target values of every example.
    pub targets: Targets,
    /// Column names for tabular data (features, in order), if any.
    pub feature_names: Option<Vec<String>>,
    /// Where it came from (path), for messages and metadata.
    pub source: String,
}

/// A summary (sizes, source, classes), not the values: a data set can hold millions.
impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Dataset");
        d.field("len", &self.len())
            .field("example_shape", &self.example_shape)
            .field("source", &self.source);
        match &self.targets {
            Targets::Classes { names, .. } => d.field("classes", names),
            Targets::Values { names, .. } => d.field("targets", names),
        };
        if let Some(names) = &self.feature_names {
            d.field("feature_names", names);
        }
        d.finish()
    }
}

impl Dataset {
    /// A data set from its parts, checked for consistency: `features.len()` must be
    /// `targets.len() * product(example_shape)`, every label below the number of class
    /// names, `values.len()` a multiple of `width` (> 0) with `width` names, and
    /// `feature_names` (if any) as many as `example_shape`'s single dimension. Errors are
    /// [`DataError::Format`] naming `source`.
    pub fn new(
        features: Vec<f32>,
        example_shape: Vec<usize>,
        targets: Targets,
        feature_names: Option<Vec<String>>,
        source: impl Into<String>,
    ) -> Result<Dataset, DataError> {
        let source = source.into();
        let bad = |what: String| DataError::format(Path::new(&source), what);
        match &targets {
            Targets::Classes { labels, names } => {
                if let Some((i, l)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, l)| **l as usize >= names.len())
                {
                    return Err(bad(format!(
                        "example {i} has label {l}, but there are only {} class names",
                        names.len()
                    )));
                }
            }
            Targets::Values {
                values,
                width,
                names,
            } => {
                if *width == 0 || values.len() % width != 0 || names.len() != *width {
                    return Err(bad(format!(
                        "{} target values with width {width} and {} target names: expected a \
                         multiple of a width > 0 and one name per target",
                        values.len(),
                        names.len()
                    )));
                }
            }
        }
        let example_len: usize = example_shape.iter().product();
        let expected = targets.len().checked_mul(example_len);
        if expected != Some(features.len()) {
            return Err(bad(format!(
                "{} feature values for {} examples of shape {example_shape:?}: expected {}",
                features.len(),
                targets.len(),
                expected.map_or_else(|| "an overflowing count".to_string(), |e| e.to_string())
            )));
        }
        if let Some(names) = &feature_names
            && (example_shape.len() != 1 || names.len() != example_shape[0])
        {
            return Err(bad(format!(
                "{} feature names for examples of shape {example_shape:?}: expected one \
                 name per feature of a rank-1 example",
                names.len()
            )));
        }
        Ok(Dataset {
            features,
            example_shape,
            targets,
            feature_names,
            source,
        })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per example: the product of `example_shape`.
    pub fn example_len(&self) -> usize {
        self.example_shape.iter().product()
    }

    /// The values of example `i` (`example_len()` of them).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn example(&self, i: usize) -> &[f32] {
        let n = self.example_len();
        &self.features[i * n..(i + 1) * n]
    }

    /// Lowercase hex SHA-256 of the content, independent of `source` and `feature_names`.
    /// The bytes hashed, in order (integers little-endian): the rank of `example_shape` as a
    /// `u64`, each dimension as a `u64`; the number of feature values as a `u64`, then each
    /// `f32`'s 4 bytes; for classes the byte 0, the label count as a `u64`, each label as a
    /// `u32`, the name count as a `u64` and each name as its UTF-8 length (`u64`) and bytes;
    /// for values the byte 1, the width as a `u64`, the value count as a `u64`, each `f32`,
    /// and the names as for classes.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let u64le = |h: &mut Sha256, v: usize| h.update((v as u64).to_le_bytes());
        u64le(&mut h, self.example_shape.len());
        for &d in &self.example_shape {
            u64le(&mut h, d);
        }
        u64le(&mut h, self.features.len());
        hash_f32s(&mut h, &self.features);
        let hash_names = |h: &mut Sha256, names: &[String]| {
            u64le(h, names.len());
            for n in names {
                u64le(h, n.len());
                h.update(n.as_bytes());
            }
        };
        match &self.targets {
            Targets::Classes { labels, names } => {
                h.update([0u8]);
                u64le(&mut h, labels.len());
                let mut buf = Vec::with_capacity(4 * labels.len());
                for l in labels {
                    buf.extend_from_slice(&l.to_le_bytes());
                }
                h.update(&buf);
                hash_names(&mut h, names);
            }
            Targets::Values {
                values,
                width,
                names,
            } => {
                h.update([1u8]);
                u64le(&mut h, *width);
                u64le(&mut h, values.len());
                hash_f32s(&mut h, values);
                hash_names(&mut h, names);
            }
        }
        hex(&h.finalize())
    }

    /// A new data set with the examples at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.example_len();
        let mut features = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            features.extend_from_slice(self.example(i));
        }
        Dataset {
            features,
            example_shape: self.example_shape.clone(),
            targets: self.targets.subset(indices),
            feature_names: self.feature_names.clone(),
            source: self.source.clone(),
        }
    }

    /// Seeded shuffle ([`Rng::new`]`(seed)`, [`Rng::shuffle`] of the indices `0..len`), then
    /// the first `len - round(len * fraction)` shuffled examples for the first set and the
    /// rest for the second, both in shuffled order. The second set's size is kept within
    /// `1..=len - 1`, so each set has at least one example; `len < 2` or a `fraction` outside
    /// the open interval (0, 1) is a [`DataError::Split`].
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        let (a, b) = split_indices(self.len(), fraction, seed, &self.source)?;
        Ok((self.subset(&a), self.subset(&b)))
    }
}

/// The indices of [`Dataset::split`] for `n` examples: seeded shuffle of `0..n`
/// ([`Rng::new`]`(seed)`, [`Rng::shuffle`]), the first `n - round(n * fraction)` for the
/// first set and the rest for the second (kept within `1..=n - 1`). `source` names the
/// data in errors: `n < 2` or a `fraction` outside (0, 1) is a [`DataError::Split`].
pub fn split_indices(
    n: usize,
    fraction: f64,
    seed: u64,
    source: &str,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DataError::Split {
            what: format!(
                "fraction {fraction} of {source}: expected a value strictly between 0 and 1"
            ),
        });
    }
    if n < 2 {
        return Err(DataError::Split {
            what: format!(
                "{source} has {n} example(s): at least 2 are needed for two non-empty sets"
            ),
        });
    }
    let second = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut order);
    let b = order.split_off(n - second);
    Ok((order, b))
}

/// Feeds `values`' little-endian bytes to `h` in blocks.
fn hash_f32s(h: &mut Sha256, values: &[f32]) {
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in values.chunks(4096) {
        buf.clear();
        for v in chunk {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        h.update(&buf);
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The sorted entries of folder `dir` (names that start with `.` left out).
pub(crate) fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The class sub-folders of `dir` as (name, path), in the order of their sorted names
/// ([`sort_class_names`]); none is a [`DataError::Format`] saying each class needs a
/// folder of `what`.
pub(crate) fn class_folders(dir: &Path, what: &str) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut class_dirs: Vec<(String, PathBuf)> = Vec::new();
    for p in entries(dir)? {
        if p.is_dir() {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            class_dirs.push((name, p));
        }
    }
    if class_dirs.is_empty() {
        return Err(DataError::format(
            dir,
            format!("no class folders: expected one sub-folder of {what} per class"),
        ));
    }
    let mut names: Vec<String> = class_dirs.iter().map(|(n, _)| n.clone()).collect();
    sort_class_names(&mut names);
    class_dirs.sort_by_key(|(n, _)| names.iter().position(|m| m == n));
    Ok(class_dirs)
}

/// Sorts class names the one way both CSV targets and image folders use: numerically when
/// every name is a finite number (so "2" < "10"), otherwise by their UTF-8 bytes; duplicates
/// are removed.
pub(crate) fn sort_class_names(names: &mut Vec<String>) {
    let numbers: Option<Vec<f64>> = names
        .iter()
        .map(|n| n.parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect();
    match numbers {
        Some(nums) => {
            let mut pairs: Vec<(f64, String)> = nums.into_iter().zip(names.drain(..)).collect();
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            names.extend(pairs.into_iter().map(|(_, n)| n));
        }
        None => names.sort(),
    }
    names.dedup();
}

/// Gives `a` and `b` the same class names (the sorted union) and renumbers their labels, so a
/// test set lacking a class, or having one the training set lacks, still agrees on indices.
/// Regression targets must have the same names and width. Errors name `b`'s source.
fn align_targets(a: &mut Dataset, b: &mut Dataset) -> Result<(), DataError> {
    match (&mut a.targets, &mut b.targets) {
        (
            Targets::Classes {
                labels: la,
                names: na,
            },
            Targets::Classes {
                labels: lb,
                names: nb,
            },
        ) => {
            if na == nb {
                return Ok(());
            }
            let mut union: Vec<String> = na.iter().chain(nb.iter()).cloned().collect();
            sort_class_names(&mut union);
            let index: BTreeMap<&str, u32> = union
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i as u32))
                .collect();
            for (labels, names) in [(la, &*na), (lb, &*nb)] {
                let map: Vec<u32> = names.iter().map(|n| index[n.as_str()]).collect();
                for l in labels.iter_mut() {
                    *l = map[*l as usize];
                }
            }
            *na = union.clone();
            *nb = union;
            Ok(())
        }
        (
            Targets::Values {
                width: wa,
                names: na,
                ..
            },
            Targets::Values {
                width: wb,
                names: nb,
                ..
            },
        ) if wa == wb && na == nb => Ok(()),
        _ => Err(DataError::format(
            Path::new(&b.source),
            format!(
                "its targets ({}) do not match the training set's ({})",
                describe_targets(&b.targets),
                describe_targets(&a.targets)
            ),
        )),
    }
}

/// "classes [..]" or "values [..]", for mismatch messages.
fn describe_targets(t: &Targets) -> String {
    match t {
        Targets::Classes { names, .. } => format!("classes {names:?}"),
        Targets::Values { names, .. } => format!("values {names:?}"),
    }
}

/// The `[data]` table of a training spec: which format, where (relative to a root folder,
/// usually the spec's), and how to get a test set.
///
/// ```
/// use tensorlet_train::data::{DataSource, csv::Task};
/// let src: DataSource = serde_json::from_str(
///     r#"{"format": "csv", "path": "diabetes.csv", "target": "target"}"#,
/// ).unwrap();
/// assert_eq!(src, DataSource::Csv {
///     path: "diabetes.csv".into(), target: "target".into(), task: Task::Regression,
///     test: None, test_fraction: 0.2, split_seed: 0,
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataSource {
    /// A folder with MNIST's four IDX files (`train-…` for training, `t10k-…` for test),
    /// plain or `.gz`; see [`idx::load_mnist`].
    Mnist {
        /// The folder.
        path: PathBuf,
    },
    /// A CSV file with a header row; see [`csv::load`].
    Csv {
        /// The training CSV (or the whole data set, when `test` is not given).
        path: PathBuf,
        /// The target column's name.
        target: String,
        /// Regression (default) or classification.
        #[serde(default)]
        task: csv::Task,
        /// A separate test CSV with the same columns; when absent, `path` is split.
        #[serde(default)]
        test: Option<PathBuf>,
        /// The share of examples held out for testing when `test` is absent (default 0.2).
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
        /// The seed of that split's shuffle (default 0).
        #[serde(default)]
        split_seed: u64,
    },
    /// A folder of class folders of PNG images; see [`images::load`]. When `path/train`
    /// and `path/test` both exist they are the two sets; otherwise `path` is split like a CSV.
    Images {
        /// The folder.
        path: PathBuf,
        /// 1 (gray, the default) or 3 (RGB).
        #[serde(default = "default_channels")]
        channels: usize,
        /// The share held out for testing when there are no `train`/`test` folders.
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
        /// The seed of that split's shuffle.
        #[serde(default)]
        split_seed: u64,
    },
    /// A folder of class folders of text files ([`text::load`]), turned into feature
    /// vectors by an inference function ([`Embed`]) and split like a CSV.
    Text {
        /// The folder.
        path: PathBuf,
        /// The function that embeds each text.
        embed: Embed,
        /// The share held out for testing (default 0.2).
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
        /// The seed of that split's shuffle (default 0).
        #[serde(default)]
        split_seed: u64,
    },
}

/// How a text data set becomes numbers: `function` (a bundled function name or a `.wasm`
/// path) with `weights` (relative to the data root, like the data) takes the texts as its
/// BYTES input `text`, and output `output` (default `embedding`, `[N, width]`) is each
/// text's feature vector. `tensorlet train` writes the trained head into a copy of
/// `weights`, so the function and the result form the deployable model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embed {
    /// The embedding function: a bundled name or a component path.
    pub function: String,
    /// Its weights file, relative to the data root.
    pub weights: PathBuf,
    /// The output holding the embeddings (default `embedding`).
    #[serde(default = "default_embed_output")]
    pub output: String,
}

/// `output`'s default.
fn default_embed_output() -> String {
    "embedding".to_owned()
}

/// Turns a text set into one feature row per text (`len * width` values, row-major), as
/// [`DataSource::load_with`] needs for [`DataSource::Text`].
pub type Embedder<'a> = dyn FnMut(&text::TextSet, &Embed) -> Result<Vec<f32>, DataError> + 'a;

/// `test_fraction`'s default.
fn default_test_fraction() -> f64 {
    0.2
}

/// `channels`' default.
fn default_channels() -> usize {
    1
}

/// A training set and a test set with the same example shape and target names.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// The examples to train on.
    pub train: Dataset,
    /// The held-out examples to evaluate on.
    pub test: Dataset,
}

impl DataSource {
    /// Loads the train and test sets: MNIST's two file pairs; for CSV and images the test
    /// file or folder when there is one, otherwise a seeded split of `path` with
    /// `test_fraction` ([`Dataset::split`]). Relative paths are resolved against `root`.
    /// When both sets come from files, their example shapes and feature names must agree,
    /// and class names become the sorted union of both (labels renumbered to match).
    ///
    /// A [`DataSource::Text`] needs an embedder: use [`DataSource::load_with`].
    pub fn load(&self, root: &Path) -> Result<Splits, DataError> {
        self.load_with(root, &mut |set, embed| {
            Err(DataError::format(
                Path::new(&set.source),
                format!(
                    "text data is embedded by function `{}`, and this loader runs no \
                     functions (tensorlet train does)",
                    embed.function
                ),
            ))
        })
    }

    /// [`DataSource::load`], with `embed` turning a [`DataSource::Text`]'s texts into
    /// feature rows (it receives the whole set, in [`text::load`] order).
    pub fn load_with(&self, root: &Path, embed: &mut Embedder) -> Result<Splits, DataError> {
        let resolve = |p: &Path| root.join(p);
        match self {
            DataSource::Text {
                path,
                embed: how,
                test_fraction,
                split_seed,
            } => {
                let dir = resolve(path);
                let set = text::load(&dir)?;
                let features = embed(&set, how)?;
                let n = set.len();
                let width = features.len().checked_div(n).unwrap_or(0);
                if width == 0 || width * n != features.len() {
                    return Err(DataError::format(
                        &dir,
                        format!(
                            "the embedder gave {} values for {n} texts: expected the same \
                             number (> 0) per text",
                            features.len()
                        ),
                    ));
                }
                let all = Dataset::new(
                    features,
                    vec![width],
                    Targets::Classes {
                        labels: set.labels,
                        names: set.names,
                    },
                    None,
                    set.source,
                )?;
                let (train, test) = all.split(*test_fraction, *split_seed)?;
                Ok(Splits { train, test })
            }
            DataSource::Mnist { path } => {
                let dir = resolve(path);
                let train = idx::load_mnist(&dir, idx::MnistSplit::Train)?;
                let test = idx::load_mnist(&dir, idx::MnistSplit::Test)?;
                paired(train, test)
            }
            DataSource::Csv {
                path,
                target,
                task,
                test,
                test_fraction,
                split_seed,
            } => {
                let all = csv::load(&resolve(path), target, *task)?;
                match test {
                    Some(t) => paired(all, csv::load(&resolve(t), target, *task)?),
                    None => {
                        let (train, test) = all.split(*test_fraction, *split_seed)?;
                        Ok(Splits { train, test })
                    }
                }
            }
            DataSource::Images {
                path,
                channels,
                test_fraction,
                split_seed,
            } => {
                let dir = resolve(path);
                let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
                match (train_dir.is_dir(), test_dir.is_dir()) {
                    (true, true) => paired(
                        images::load(&train_dir, *channels)?,
                        images::load(&test_dir, *channels)?,
                    ),
                    (false, false) => {
                        let all = images::load(&dir, *channels)?;
                        let (train, test) = all.split(*test_fraction, *split_seed)?;
                        Ok(Splits { train, test })
                    }
                    (has_train, _) => Err(DataError::format(
                        &dir,
                        format!(
                            "has a `{}` folder but no `{}` folder: give both (train/ and \
                             test/, each with class folders) or neither (class folders \
                             directly, split with test_fraction)",
                            if has_train { "train" } else { "test" },
                            if has_train { "test" } else { "train" },
                        ),
                    )),
                }
            }
        }
    }
}

impl DataSource {
    /// The format and path, for messages: `` mnist data at `mnist` ``.
    pub fn describe(&self) -> String {
        let (format, path) = match self {
            DataSource::Mnist { path } => ("mnist", path),
            DataSource::Csv { path, .. } => ("csv", path),
            DataSource::Images { path, .. } => ("images", path),
            DataSource::Text { path, .. } => ("text", path),
        };
        format!("{format} data at `{}`", path.display())
    }

    /// The `(test_fraction, split_seed)` of a source whose test set is split off its data
    /// (CSV and image folders without a separate test set, text), `None` when the test set
    /// is a file or folder of its own.
    pub fn held_out(&self, root: &Path) -> Option<(f64, u64)> {
        match self {
            DataSource::Mnist { .. } | DataSource::Csv { test: Some(_), .. } => None,
            DataSource::Csv {
                test_fraction,
                split_seed,
                ..
            }
            | DataSource::Text {
                test_fraction,
                split_seed,
                ..
            } => Some((*test_fraction, *split_seed)),
            DataSource::Images {
                path,
                test_fraction,
                split_seed,
                ..
            } => {
                let dir = root.join(path);
                (!dir.join("train").is_dir()).then_some((*test_fraction, *split_seed))
            }
        }
    }
}

/// Checks that `test` is shaped like `train` and aligns their class names.
fn paired(mut train: Dataset, mut test: Dataset) -> Result<Splits, DataError> {
    if train.example_shape != test.example_shape {
        return Err(DataError::format(
            Path::new(&test.source),
            format!(
                "examples of shape {:?}, but the training set's ({}) are {:?}",
                test.example_shape, train.source, train.example_shape
            ),
        ));
    }
    if train.feature_names != test.feature_names {
        return Err(DataError::format(
            Path::new(&test.source),
            format!(
                "feature columns {:?} differ from the training set's {:?}",
                test.feature_names.as_deref().unwrap_or_default(),
                train.feature_names.as_deref().unwrap_or_default()
            ),
        ));
    }
    align_targets(&mut train, &mut test)?;
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(labels: &[u32], names: &[&str]) -> Dataset {
        Dataset::new(
            labels.iter().map(|&l| l as f32).collect(),
            vec![1],
            Targets::Classes {
                labels: labels.to_vec(),
                names: names.iter().map(|s| s.to_string()).collect(),
            },
            None,
            "mem",
        )
        .unwrap()
    }

    #[test]
    fn class_names_sort_numerically_when_all_numbers() {
        let mut v: Vec<String> = ["10", "2", "1", "2"].map(String::from).to_vec();
        sort_class_names(&mut v);
        assert_eq!(v, ["1", "2", "10"]);
        let mut w: Vec<String> = ["dog", "cat", "10", "2"].map(String::from).to_vec();
        sort_class_names(&mut w);
        assert_eq!(w, ["10", "2", "cat", "dog"]);
    }

    #[test]
    fn aligning_classes_renumbers_both_sets() {
        // train has cat(0), dog(1); test has bird(0), dog(1).
        let mut a = classes(&[0, 1, 1], &["cat", "dog"]);
        let mut b = classes(&[1, 0], &["bird", "dog"]);
        align_targets(&mut a, &mut b).unwrap();
        let names = ["bird", "cat", "dog"].map(String::from).to_vec();
        assert_eq!(
            a.targets,
            Targets::Classes {
                labels: vec![1, 2, 2],
                names: names.clone()
            }
        );
        assert_eq!(
            b.targets,
            Targets::Classes {
                labels: vec![2, 0],
                names
            }
        );
    }

    #[test]
    fn new_rejects_inconsistent_parts() {
        let e = Dataset::new(
            vec![0.0; 5],
            vec![2],
            Targets::Classes {
                labels: vec![0, 0],
                names: vec!["a".into()],
            },
            None,
            "x.csv",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.csv: 5 feature values for 2 examples"),
            "{e}"
        );
        let e = Dataset::new(
            vec![0.0; 2],
            vec![1],
            Targets::Classes {
                labels: vec![0, 3],
                names: vec!["a".into()],
            },
            None,
            "y",
        )
        .unwrap_err();
        assert!(e.to_string().contains("example 1 has label 3"), "{e}");
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
