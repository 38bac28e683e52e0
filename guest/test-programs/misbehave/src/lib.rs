//! A deliberately broken inference function, for the host's containment tests.
//!
//! The name of its one input picks the misbehaviour: `trap` executes `unreachable`,
//! `panic` panics, `loop` spins forever, `alloc` grows guest memory without bound,
//! `host-alloc` asks the host for tensors without bound, and `count` returns how many
//! times `infer` ran in this instance (1 if every request gets a fresh instance).

use std::sync::atomic::{AtomicU32, Ordering};

use tensorlet_sdk::{Dtype, Error, Function, FunctionMetadata, IoSpec, NamedTensor, Tensor};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Misbehave;

impl Function for Misbehave {
    fn metadata() -> FunctionMetadata {
        let any = |name: &str, what: &str| IoSpec::new(name, Dtype::F32, &[-1], what);
        FunctionMetadata {
            name: "misbehave".into(),
            description: "Misbehaves as its input's name says (host containment tests).".into(),
            inputs: vec![
                any("trap", "executes `unreachable`"),
                any("panic", "panics"),
                any("loop", "loops forever"),
                any("alloc", "allocates guest memory without bound"),
                any("host-alloc", "allocates host tensors without bound"),
                any("count", "returns how many times infer ran in this instance"),
            ],
            outputs: vec![any("count", "calls of infer in this instance")],
            weights: vec![],
        }
    }

    fn infer(inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, Error> {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(first) = inputs.first() else {
            return Err(Error::invalid_input("give one input"));
        };
        match first.name.as_str() {
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("deliberate panic in misbehave"),
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "host-alloc" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(Tensor::from_f32(&[1 << 20], &vec![0.0; 1 << 20])?);
                }
            }
            "count" => Ok(vec![NamedTensor::new(
                "count",
                Tensor::from_f32(&[1], &[calls as f32])?,
            )]),
            other => Err(Error::invalid_input(format!(
                "unknown misbehaviour `{other}`"
            ))),
        }
    }
}

tensorlet_sdk::export!(Misbehave);
