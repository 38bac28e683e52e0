//! Embedding tensorlet in another Rust program: publish a model (a function and a weights
//! set, prepared once) in a registry, then serve many requests, each in a fresh sandboxed
//! instance.
//!
//! Run with `cargo run --release --example embed [COMPONENT.wasm WEIGHTS.safetensors]`;
//! without arguments it uses the bundled `mnist-cnn` and its default weights.

use std::time::{Duration, Instant};

use tensorlet_host::{Model, ModelSettings, Registry, Runtime, RuntimeConfig, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Set up once: engine, linker, kernels, weights cache.
    let runtime = Runtime::new(RuntimeConfig {
        deadline: Duration::from_secs(2),
        memory_limit: 64 << 20,
        ..RuntimeConfig::default()
    })?;

    // Per model: compile the component, prepare the weights (cached by content digest).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (function, weights) = match args.as_slice() {
        [component, weights] => (
            runtime.load_function_file(component.as_ref())?,
            runtime.load_weights_file(weights.as_ref())?,
        ),
        _ => {
            let bundled = tensorlet_host::bundled::find("mnist-cnn")?;
            (
                runtime.load_bundled("mnist-cnn")?,
                runtime.load_weights("mnist-cnn default", bundled.weights()?)?,
            )
        }
    };
    let meta = function.metadata().clone();
    println!("{}: {}", meta.name, meta.description);
    let registry = Registry::new(runtime.clone());
    registry.publish(Model::new(
        "digits",
        1,
        function,
        weights,
        ModelSettings::default(),
    )?);

    // Per request: a fresh instance bound to these weights.
    let image: Vec<f32> = (0..28 * 28).map(|i| (i % 28) as f32 / 27.0).collect();
    for batch in [1usize, 4] {
        let data: Vec<f32> = image.iter().copied().cycle().take(batch * 784).collect();
        let input = Tensor::from_f32(vec![batch, 1, 28, 28], data)?;
        let start = Instant::now();
        // The latest version of `digits`, held for this request even if a new one lands.
        let model = registry.get("digits", None)?;
        let outputs = model.infer(vec![("image".to_string(), input)])?;
        let (name, probs) = &outputs[0];
        let probs = probs.f32s(name)?;
        let best = probs[..10]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        println!(
            "batch {batch}: `{name}` {:?} in {:?}; first image's class {best}",
            outputs[0].1.shape(),
            start.elapsed()
        );
    }
    Ok(())
}
