//! `tensorlet compile`: ahead-of-time compilation of a component.

use std::path::PathBuf;

use clap::Args;
use tensorlet_host::{Error, Result};

use super::{RuntimeArgs, read_input};

/// Compile a component ahead of time; `tensorlet run` accepts the artifact in place of
/// the `.wasm` (same tensorlet version and CPU only).
#[derive(Args, Debug)]
pub struct CompileCommand {
    /// The component (.wasm).
    input: PathBuf,
    /// Where to write the artifact; defaults to the input with extension `.cwasm`.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl CompileCommand {
    /// Compiles and writes the artifact.
    pub fn execute(self) -> Result<()> {
        let runtime = self.runtime.runtime()?;
        let bytes = read_input(&self.input)?;
        let artifact = runtime
            .precompile(&bytes)
            .map_err(|e| e.context(format!("`{}`", self.input.display())))?;
        let output = self
            .output
            .unwrap_or_else(|| self.input.with_extension("cwasm"));
        std::fs::write(&output, artifact).map_err(|e| {
            Error::new(
                tensorlet_host::ErrorKind::Io,
                format!("failed to write `{}`: {e}", output.display()),
            )
        })?;
        eprintln!("wrote {}", output.display());
        Ok(())
    }
}
