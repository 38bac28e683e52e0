//! `tensorlet convert`: a weights file's F32 tensors rewritten as F16 or BF16.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use tensorlet_host::{DType, Error, ErrorKind, Result};

use super::read_input;

/// The half-precision dtypes `convert` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Half {
    /// IEEE half precision (10-bit mantissa).
    F16,
    /// bfloat16 (7-bit mantissa, f32's range).
    Bf16,
}

/// Rewrite a safetensors weights file with its F32 tensors as F16 or BF16 (half the
/// bytes; other tensors and the metadata are kept). Functions run it unchanged: dense
/// layers read the 16-bit values, everything else sees them widened to f32.
#[derive(Args, Debug)]
pub struct ConvertCommand {
    /// The weights file (.safetensors).
    input: PathBuf,
    /// The dtype to write the F32 tensors as.
    #[arg(long, value_enum, value_name = "f16|bf16")]
    dtype: Half,
    /// Where to write the converted file (written to a temporary sibling, then renamed).
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
}

impl ConvertCommand {
    /// Converts and writes the file.
    pub fn execute(self) -> Result<()> {
        let bytes = read_input(&self.input)?;
        let to = match self.dtype {
            Half::F16 => DType::F16,
            Half::Bf16 => DType::BF16,
        };
        let out = tensorlet_host::weights::convert(&bytes, &self.input.display().to_string(), to)?;
        let io = |e: std::io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("failed to write `{}`: {e}", self.output.display()),
            )
        };
        let mut tmp = self.output.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &out).map_err(io)?;
        std::fs::rename(&tmp, &self.output).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        eprintln!(
            "wrote {} ({} bytes, from {} bytes)",
            self.output.display(),
            out.len(),
            bytes.len()
        );
        Ok(())
    }
}
