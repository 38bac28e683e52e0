//! The subcommands of the `tensorlet` binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tensorlet_host::{Error, Function, KernelBackend, Result, Runtime, RuntimeConfig};

mod compile;
mod convert;
mod deploy;
mod eval;
mod inspect;
mod pack;
mod run;
mod serve;
mod train;

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
    /// Write a model version folder (DIR/NAME/VERSION) for a model repository.
    Pack(pack::PackCommand),
    /// Serve models over HTTP (Open Inference Protocol v2, as Triton).
    Serve(serve::ServeCommand),
    /// Train the network a SPEC.toml declares and write its weights.
    Train(train::TrainCommand),
    /// Evaluate a function and weights on a test set (scikit-learn's metrics).
    Eval(eval::EvalCommand),
    /// Upload a model version folder to a running server (repository load with files).
    Deploy(deploy::DeployCommand),
    /// Rewrite a weights file's F32 tensors as F16 or BF16.
    Convert(convert::ConvertCommand),
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
            Command::Pack(c) => c.execute(),
            Command::Serve(c) => c.execute(),
            Command::Train(c) => c.execute(),
            Command::Eval(c) => c.execute(),
            Command::Deploy(c) => c.execute(),
            Command::Convert(c) => c.execute(),
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
    /// Compile every component in this process instead of reusing compiled code from the
    /// cache (`$TENSORLET_CACHE_DIR`, else `$XDG_CACHE_HOME/tensorlet`, else
    /// `~/.cache/tensorlet`).
    #[arg(long)]
    no_cache: bool,
}

/// The compiled-code cache folder: `$TENSORLET_CACHE_DIR`, `$XDG_CACHE_HOME/tensorlet` or
/// `$HOME/.cache/tensorlet`; `None` if none of them is set.
fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("TENSORLET_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("tensorlet")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("tensorlet")))
}

impl RuntimeArgs {
    /// The runtime settings these flags ask for.
    fn config(&self) -> Result<RuntimeConfig> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(Error::invalid_input(format!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            )));
        }
        Ok(RuntimeConfig {
            deadline: Duration::from_secs_f64(self.timeout),
            memory_limit: self.memory_limit.saturating_mul(1 << 20),
            max_concurrent_requests: 2,
            kernels: self.kernels,
            kernel_threads: usize::from(self.threads),
            ..RuntimeConfig::default()
        })
    }

    fn runtime(&self) -> Result<Runtime> {
        self.runtime_with(self.config()?)
    }

    /// A runtime with `config`, keeping compiled code in the cache unless `--no-cache`.
    fn runtime_with(&self, config: RuntimeConfig) -> Result<Runtime> {
        match cache_dir().filter(|_| !self.no_cache) {
            // SAFETY: the cache is the user's own folder under their home (or one they named
            // in TENSORLET_CACHE_DIR), written only by tensorlet, which is what
            // `with_compile_cache` asks the caller to vouch for.
            Some(dir) => unsafe { Runtime::with_compile_cache(config, &dir) },
            None => Runtime::new(config),
        }
    }
}

/// Loads the function `name`: a bundled name, a `.wasm` component, or a `.cwasm` artifact
/// of `tensorlet compile` that the user named on the command line.
fn load_function(runtime: &Runtime, name: &str) -> Result<Function> {
    if !is_path(name) {
        return runtime.load_bundled(name);
    }
    let path = Path::new(name);
    if path.extension().is_some_and(|e| e == "cwasm") {
        // SAFETY: a precompiled artifact is native code; the user named this local file on
        // the command line, which is the trust `load_precompiled_file` asks for (the CLI
        // never loads artifacts it received from elsewhere).
        unsafe { runtime.load_precompiled_file(path) }
    } else {
        runtime.load_function_file(path)
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
