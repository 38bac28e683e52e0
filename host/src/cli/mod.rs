//! The subcommands of the `tensorlet` binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tensorlet_host::{Error, KernelBackend, Result, Runtime, RuntimeConfig};

mod compile;
mod inspect;
mod run;

/// tensorlet: AI models as a service, at the edge — inference functions as WebAssembly
/// components with native SIMD kernels.
#[derive(Parser, Debug)]
#[command(name = "tensorlet", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a function on one request and print the response JSON.
    Run(run::RunCommand),
    /// Describe a safetensors weights file or a function component.
    Inspect(inspect::InspectCommand),
    /// Compile a component ahead of time into an artifact `run` accepts.
    Compile(compile::CompileCommand),
    /// List the bundled functions.
    List,
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn execute(self) -> Result<()> {
        match self.command {
            Command::Run(c) => c.execute(),
            Command::Inspect(c) => c.execute(),
            Command::Compile(c) => c.execute(),
            Command::List => {
                for b in tensorlet_host::bundled::BUNDLED {
                    println!("{:<12} {}", b.name, b.summary);
                }
                Ok(())
            }
        }
    }
}

/// Runtime limits shared by the subcommands that run code.
#[derive(Args, Debug, Clone)]
struct RuntimeArgs {
    /// Wall-clock limit for the request, in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// Maximum linear memory of the function, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    memory_limit: usize,
    /// Which kernels run the ops: `native` (the host's SIMD plugin) or `wasm` (the
    /// kernels component, instantiated beside the function).
    #[arg(long, default_value_t = KernelBackend::Native, value_name = "native|wasm")]
    kernels: KernelBackend,
    /// Threads one native dense op may use (large products only, split by rows).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

impl RuntimeArgs {
    fn runtime(&self) -> Result<Runtime> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(Error::invalid_input(format!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            )));
        }
        Runtime::new(RuntimeConfig {
            deadline: Duration::from_secs_f64(self.timeout),
            memory_limit: self.memory_limit.saturating_mul(1 << 20),
            max_concurrent_requests: 2,
            kernels: self.kernels,
            kernel_threads: usize::from(self.threads),
            ..RuntimeConfig::default()
        })
    }
}

/// Reads a file, or stdin for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path, e))?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| Error::io(path, e))
    }
}

/// Whether `s` names a file rather than a bundled function.
fn is_path(s: &str) -> bool {
    s.contains('/')
        || s.contains('\\')
        || s.ends_with(".wasm")
        || s.ends_with(".cwasm")
        || PathBuf::from(s).is_file()
}
