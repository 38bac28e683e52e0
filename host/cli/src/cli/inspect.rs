//! `tensorlet inspect`: describe a weights file or a component.

use clap::Args;
use tensorlet_host::{DType, FunctionMetadata, IoSpec, Result, Weights};

use super::{RuntimeArgs, is_path, load_function, read_input};

/// Describe a safetensors file (tensors, dtypes, shapes, bytes, digest) or a function —
/// a component path or a bundled name — (its imports, exports and metadata).
#[derive(Args, Debug)]
pub struct InspectCommand {
    /// A .safetensors file, a .wasm/.cwasm component, or a bundled function name.
    target: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl InspectCommand {
    /// Prints the description.
    pub fn execute(self) -> Result<()> {
        if !is_path(&self.target) {
            return self.describe_component();
        }
        let bytes = read_input(self.target.as_ref())?;
        if bytes.starts_with(b"\0asm") || bytes.starts_with(b"\x7fELF") {
            self.describe_component()
        } else {
            describe_weights(&Weights::from_bytes(&bytes, &self.target)?);
            print_weights_metadata(&tensorlet_train::weights::metadata_of(&bytes));
            Ok(())
        }
    }

    fn describe_component(&self) -> Result<()> {
        let runtime = self.runtime.runtime()?;
        let f = load_function(&runtime, &self.target)?;
        println!("component {}", self.target);
        println!("imports:");
        for i in f.imports() {
            println!("  {i}");
        }
        println!("exports:");
        for e in f.exports() {
            println!("  {e}");
        }
        print_metadata(f.metadata());
        Ok(())
    }
}

/// Prints `__metadata__`: how `tensorlet train` made the weights (spec, data digest, seed,
/// epochs, final metrics), or whatever another writer recorded. Multi-line values (the
/// spec) are indented below their key.
fn print_weights_metadata(meta: &std::collections::BTreeMap<String, String>) {
    if meta.is_empty() {
        return;
    }
    println!("metadata:");
    for (key, value) in meta {
        if value.contains('\n') {
            println!("  {key}:");
            for line in value.lines() {
                println!("    {line}");
            }
        } else {
            println!("  {key}: {value}");
        }
    }
}

fn describe_weights(w: &Weights) {
    println!("weights {}", w.source());
    println!("sha256 {}", w.digest());
    println!(
        "{:<32} {:<5} {:<20} {:>12}",
        "tensor", "dtype", "shape", "bytes"
    );
    let (mut params, mut bytes) = (0usize, 0usize);
    for (name, weight) in w.iter() {
        let n = weight.tensor.len();
        let b = n * match weight.stored {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::Bytes => 1,
        };
        params += n;
        bytes += b;
        let shape = format!("{:?}", weight.tensor.shape());
        println!(
            "{name:<32} {:<5} {shape:<20} {b:>12}",
            weight.stored.as_str()
        );
    }
    println!("{} tensors, {params} parameters, {bytes} bytes", w.len());
}

fn print_metadata(m: &FunctionMetadata) {
    println!("function {}: {}", m.name, m.description);
    let section = |title: &str, specs: &[IoSpec]| {
        println!("{title}:");
        for s in specs {
            let dtype: DType = s.dtype.into();
            println!(
                "  {:<14} {:<4} {:<18} {}",
                s.name,
                dtype.as_str(),
                format!("{:?}", s.shape),
                s.description
            );
        }
    };
    section("inputs", &m.inputs);
    section("outputs", &m.outputs);
    section("weights", &m.weights);
}
