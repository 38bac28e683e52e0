//! `tensorlet run`: one request, from a JSON file, stdin or an image.

use std::path::PathBuf;

use clap::Args;
use tensorlet_host::{Error, InferenceRequest, Result};

use super::{RuntimeArgs, is_path, load_function, read_input};

/// Run FUNCTION (a bundled name or a .wasm/.cwasm path) on one request.
///
/// INPUT is a file holding an Open Inference Protocol JSON request
/// (`{"inputs":[{"name","shape","datatype","data"}]}`) or a PNG/PGM image, which is sent as
/// the `png` input; `-` for stdin; or the JSON request itself (an argument starting with
/// `{`). The response JSON goes to stdout.
#[derive(Args, Debug)]
pub struct RunCommand {
    /// A bundled function name (see `tensorlet list`) or a component path.
    function: String,
    /// Safetensors weights; defaults to the bundled function's own weights.
    #[arg(long, short, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The request: a JSON or PNG/PGM file, `-` for stdin, or inline JSON (`{...}`).
    #[arg(long, short, value_name = "FILE|JSON")]
    input: PathBuf,
    /// Pretty-print the response.
    #[arg(long)]
    pretty: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl RunCommand {
    /// Runs the request and prints the response.
    pub fn execute(self) -> Result<()> {
        let runtime = self.runtime.runtime()?;
        let function = load_function(&runtime, &self.function)?;
        let weights = match &self.weights {
            Some(p) => runtime.load_weights_file(p)?,
            None if is_path(&self.function) => {
                std::sync::Arc::new(tensorlet_host::Weights::empty())
            }
            None => {
                let b = tensorlet_host::bundled::find(&self.function)?;
                runtime.load_weights(&format!("bundled {} weights", b.name), b.weights()?)?
            }
        };
        let inline = self
            .input
            .to_str()
            .filter(|s| s.trim_start().starts_with('{'));
        let bytes = match inline {
            Some(json) => json.as_bytes().to_vec(),
            None => read_input(&self.input)?,
        };
        let request = if bytes.starts_with(b"\x89PNG") || bytes.starts_with(b"P5") {
            InferenceRequest::from_bytes_input("png", &bytes)
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                Error::invalid_input(format!(
                    "input `{}` is neither UTF-8 JSON nor a PNG/PGM image",
                    self.input.display()
                ))
            })?;
            InferenceRequest::from_json(text).map_err(|e| match inline {
                Some(_) => e.context("the inline JSON request"),
                None => e.context(format!("input `{}`", self.input.display())),
            })?
        };
        let response = function.infer_request(&weights, &request)?;
        let json = if self.pretty {
            serde_json::to_string_pretty(&response)
        } else {
            serde_json::to_string(&response)
        }
        .map_err(|e| Error::internal(format!("encoding the response: {e}")))?;
        println!("{json}");
        Ok(())
    }
}
