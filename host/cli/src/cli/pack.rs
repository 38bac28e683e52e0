//! `tensorlet pack`: a model version folder for a model repository.

use std::path::PathBuf;

use clap::Args;
use tensorlet_host::{Result, repository};

use super::{RuntimeArgs, is_path, read_input};

/// Write a model version folder, DIR/NAME/VERSION with function.wasm and
/// weights.safetensors, after checking that the two load and fit together.
///
/// FUNCTION is a bundled function name (its default weights are used unless --weights is
/// given) or a path to a .wasm component; precompiled .cwasm artifacts are not packed. The
/// folder is written under a temporary name and renamed into place; an existing one is
/// refused (versions are immutable).
#[derive(Args, Debug)]
pub struct PackCommand {
    /// A bundled function name (see `tensorlet list`) or a .wasm component path.
    function: String,
    /// Safetensors weights; defaults to the bundled function's own weights.
    #[arg(long, short, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The version folder to write: DIR/NAME/VERSION (VERSION a positive integer).
    #[arg(long, short, value_name = "DIR/NAME/VERSION")]
    output: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl PackCommand {
    /// Checks and writes the folder.
    pub fn execute(self) -> Result<()> {
        let runtime = self.runtime.runtime()?;
        let (function, bundled_weights) = if is_path(&self.function) {
            (read_input(self.function.as_ref())?, None)
        } else {
            let b = tensorlet_host::bundled::find(&self.function)?;
            (b.component.to_vec(), Some(b))
        };
        let scratch;
        let weights = match (&self.weights, bundled_weights) {
            (Some(w), _) => w.clone(),
            (None, Some(b)) => {
                // The bundled weights live in the binary; pack copies them from a file.
                scratch = Scratch::write(b.weights()?)?;
                scratch.path.clone()
            }
            (None, None) => {
                return Err(tensorlet_host::Error::invalid_input(format!(
                    "`{}` is a component path; give its weights with --weights",
                    self.function
                )));
            }
        };
        repository::pack(&runtime, &function, &weights, &self.output)?;
        eprintln!("wrote {}", self.output.display());
        Ok(())
    }
}

/// A temporary file removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn write(bytes: &[u8]) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("tensorlet-pack-{}.safetensors", std::process::id()));
        std::fs::write(&path, bytes).map_err(|e| tensorlet_host::Error::io(&path, e))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
