//! A scratch folder per test that removes itself: shared by the integration tests
//! (`tests/common`) and the training crate's tests (`host/train/tests`, by path).

use std::path::{Path, PathBuf};

/// A fresh, empty folder `tensorlet-<name>-<pid>` under the system temp dir, removed with
/// everything in it when dropped (also when the test fails), so test runs leave nothing
/// behind. Derefs to its path.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the folder, emptying what an earlier run of this process id left there.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tensorlet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
