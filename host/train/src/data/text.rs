//! Text data sets: a folder with one sub-folder per class of text files
//! (`dir/ham/*.txt`, `dir/spam/*.txt`), one example per file, kept as raw bytes (any
//! charset: e-mail, say, is decoded by the function that reads it). Text becomes numbers
//! only through an embedder — in `tensorlet train`, an inference function run in the
//! sandbox (see [`super::Embed`]) — so this module loads and labels; [`TextSet::digest`]
//! fingerprints the content.

use super::{DataError, class_folders, entries, hex};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bytes one text file may have.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Labelled texts in memory.
#[derive(Clone, PartialEq)]
pub struct TextSet {
    /// Each file's bytes, in class order, then file-name order within a class.
    pub texts: Vec<Vec<u8>>,
    /// Each text's class index into `names`.
    pub labels: Vec<u32>,
    /// The class names (folder names, sorted as class names are everywhere).
    pub names: Vec<String>,
    /// Each text's file, for messages.
    pub files: Vec<PathBuf>,
    /// The folder it came from.
    pub source: String,
}

/// A summary (sizes, source, classes), not the texts.
impl std::fmt::Debug for TextSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextSet")
            .field("len", &self.texts.len())
            .field("classes", &self.names)
            .field("source", &self.source)
            .finish()
    }
}

impl TextSet {
    /// The number of texts.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The texts and labels at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> TextSet {
        TextSet {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            names: self.names.clone(),
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
            source: self.source.clone(),
        }
    }

    /// Lowercase hex SHA-256 of the content, independent of file names and `source`: the
    /// class count as a `u64` and each name as its UTF-8 length (`u64`) and bytes, then per
    /// text its label (`u32`), its length (`u64`) and its bytes, integers little-endian.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update((self.names.len() as u64).to_le_bytes());
        for n in &self.names {
            h.update((n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
        }
        for (t, l) in self.texts.iter().zip(&self.labels) {
            h.update(l.to_le_bytes());
            h.update((t.len() as u64).to_le_bytes());
            h.update(t);
        }
        hex(&h.finalize())
    }
}

/// Loads every file (names starting with `.` left out) of every class folder of `dir`.
/// Errors: no class folders, a class folder without files, a file over
/// [`MAX_FILE_BYTES`], or an unreadable file, each naming the path.
pub fn load(dir: &Path) -> Result<TextSet, DataError> {
    let classes = class_folders(dir, "text files")?;
    let mut set = TextSet {
        texts: Vec::new(),
        labels: Vec::new(),
        names: classes.iter().map(|(n, _)| n.clone()).collect(),
        files: Vec::new(),
        source: dir.display().to_string(),
    };
    for (label, (name, class_dir)) in classes.iter().enumerate() {
        let files: Vec<PathBuf> = entries(class_dir)?
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        if files.is_empty() {
            return Err(DataError::format(
                class_dir,
                format!(
                    "class folder `{name}` holds no files: every class needs at least one text"
                ),
            ));
        }
        for path in files {
            let size = std::fs::metadata(&path)
                .map_err(|e| DataError::io(&path, e))?
                .len();
            if size > MAX_FILE_BYTES {
                return Err(DataError::format(
                    &path,
                    format!("{size} bytes, more than the {MAX_FILE_BYTES} a text file may have"),
                ));
            }
            set.texts
                .push(std::fs::read(&path).map_err(|e| DataError::io(&path, e))?);
            set.labels.push(label as u32);
            set.files.push(path);
        }
    }
    Ok(set)
}
