//! Cross-target check: the kernels (with their NEON path) must compile for
//! `aarch64-unknown-linux-gnu`, so that `cargo test --release --workspace` stays the one
//! command that guards every target. The `wasm32-wasip2` path (SIMD128, with
//! `+simd128,+relaxed-simd`) needs no check here: the same command builds it in full, as the
//! kernels component (`tensorlet-host`'s build script, feature `wasm-kernels`, which
//! `tensorlet-cli` turns on), and its tests run it (`tests/kernels_component.rs`).
//!
//! Runs `cargo check -p tensorlet-kernels --target …` with the outer `CARGO` binary and a
//! separate target directory (`target/cross`), adding a missing target with `rustup target add`
//! first (and saying so).

use std::path::Path;
use std::process::Command;

/// Installs `target` with rustup if `rustc` does not have it yet.
fn ensure_target(target: &str) {
    let sysroot = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .expect("failed to run `rustc --print sysroot`");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .exists()
    {
        return;
    }
    println!("target `{target}` is not installed: running `rustup target add {target}`");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .unwrap_or_else(|e| panic!("failed to run `rustup target add {target}`: {e}"));
    assert!(
        status.success(),
        "`rustup target add {target}` failed ({status})"
    );
}

/// `cargo check -p tensorlet-kernels --target <target>` without extra `RUSTFLAGS`, panicking
/// with cargo's output if it fails.
fn check(target: &str) {
    ensure_target(target);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("kernels/ has a parent");
    let out = Command::new(&cargo)
        .current_dir(root)
        .args([
            "check",
            "-p",
            "tensorlet-kernels",
            "--all-features",
            "--target",
            target,
        ])
        .env("CARGO_TARGET_DIR", root.join("target/cross"))
        .env("RUSTFLAGS", "")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap_or_else(|e| panic!("failed to run `{cargo} check`: {e}"));
    assert!(
        out.status.success(),
        "tensorlet-kernels does not compile for `{target}`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compiles_for_aarch64() {
    check("aarch64-unknown-linux-gnu");
}
