//! Compiled code kept on disk, so a process does not compile the same component again.
//!
//! An artifact is stored as `<dir>/<engine>/<sha256 of the component>.cwasm`, where
//! `<engine>` hashes everything that makes compiled code incompatible (wasmtime's
//! `precompile_compatibility_hash`: its version, the compiler and its settings, the target
//! CPU features) together with this crate's version. A changed component has another
//! digest, a changed engine another folder: a stale artifact is never used. Artifacts are
//! written to a temporary file and renamed into place, so a crash leaves none half-written;
//! one that fails to load (corrupt, or from another wasmtime) is compiled again and
//! replaced.
//!
//! Loading an artifact maps native code from the directory into the process. That is why
//! only [`crate::Runtime::with_compile_cache`], an `unsafe fn`, turns the cache on: the
//! caller vouches that nobody but this program writes there.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// A directory of compiled components for one engine configuration.
#[derive(Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache for `engine` under `root` (created on first write).
    pub(crate) fn new(engine: &Engine, root: &Path) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        CompileCache {
            dir: root.join(format!("{:016x}", h.finish())),
        }
    }

    /// Where the artifact of a component with digest `digest` lives.
    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The component `bytes` (a `.wasm`, digest `digest`), from its artifact if one is
    /// cached, else compiled and stored. A failure to store is not an error: the next
    /// process compiles again.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.path(digest);
        if path.is_file() {
            // SAFETY: the artifact was written by `store` below, from a component this
            // process compiled, into a directory the caller of `Runtime::with_compile_cache`
            // vouched only this program writes; wasmtime checks that it was compiled by a
            // compatible engine and refuses it otherwise.
            if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
                return Ok(c);
            }
        }
        let component = Component::new(engine, bytes)?;
        let _ = self.store(&component, &path);
        Ok(component)
    }

    /// Writes `component`'s artifact to `path` atomically.
    fn store(&self, component: &Component, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::io(path, e);
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let artifact = component
            .serialize()
            .map_err(|e| Error::internal(format!("serialising a component: {e:#}")))?;
        // A name no other writer uses, in this process or another: two threads that compile
        // the same component at once must not write into one temporary file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, artifact).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}
