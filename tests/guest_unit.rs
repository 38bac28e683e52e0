//! Runs the guest workspace's own unit tests (the SDK's image decoding and resizing, its
//! WordPiece tokenizer, e-mail-to-text and BERT config reading, the `mnist-cnn` input-size
//! rule)
//! natively, so the one test command covers them too.
//!
//! The guest is a separate workspace built for wasm32-wasip2; its pure-Rust parts also
//! build for the host, where a nested `cargo test` runs them in the guest build's folder
//! `target/guest`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn guest_unit_tests_pass_natively() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let host = std::env::consts::ARCH.to_string() + "-unknown-linux-gnu";
    let out = Command::new(cargo)
        .current_dir(repo.join("guest"))
        // The guest build's own target folder and profile (`target/guest`, release), so the
        // host-side crates it already built (wit-bindgen's macros and their dependencies)
        // are reused and only the tested crates build, for the host, at opt-level 1 (about
        // 23 s, against 44 s for a separate dev build). Only the opt-level is overridden:
        // the host macros' build-override profile ignores it, whereas overriding `lto`
        // changes their fingerprints and builds them all again.
        .args([
            "test",
            "--release",
            "-p",
            "tensorlet-sdk",
            "-p",
            "mnist-cnn",
            "-p",
            "minilm",
            "--target",
            &host,
        ])
        .arg("--target-dir")
        .arg(repo.join("target/guest"))
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo test on the guest workspace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "guest unit tests failed:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        passed >= 20,
        "expected the guest's ~21 unit tests to run, saw {passed}:\n{stdout}"
    );
}
