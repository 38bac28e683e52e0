//! `tensorlet`: run, inspect and compile inference functions from the command line.
//!
//! A thin layer over the `tensorlet-host` library: one clap subcommand per struct in
//! `cli/`, each with `execute()`. Errors print as `error: ...` on stderr with exit code 1.

use clap::Parser;

mod cli;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli.execute() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
