//! Builds the guest workspace (`guest/`: the SDK and the example inference functions) for
//! `wasm32-wasip2` and hands the components' paths to the host crate.
//!
//! The guest is built by a nested `cargo build --release --target wasm32-wasip2` into
//! `<repo>/target/guest`, so debug and release host builds share one incremental guest
//! build. Afterwards `TENSORLET_MLP_WASM`, `TENSORLET_MNIST_CNN_WASM`,
//! `TENSORLET_KERNELS_COMPONENT_WASM` and (for tests) `TENSORLET_MISBEHAVE_WASM` hold the
//! components' absolute paths, for `include_bytes!(env!("TENSORLET_MNIST_CNN_WASM"))`.
//! The nested cargo runs with `guest/` as its working directory, so it reads
//! `guest/.cargo/config.toml` (the `+simd128,+relaxed-simd` target features): cargo finds
//! configuration from the working directory, not from `--manifest-path`.
//! If the `wasm32-wasip2` standard library is missing and `rustup` is available, it is
//! installed first. Std only: no build dependencies.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target the guest components are built for.
const GUEST_TARGET: &str = "wasm32-wasip2";

/// The components this crate embeds: (environment variable, artifact file name).
const COMPONENTS: &[(&str, &str)] = &[
    ("TENSORLET_MLP_WASM", "mlp.wasm"),
    ("TENSORLET_MNIST_CNN_WASM", "mnist_cnn.wasm"),
    // The kernels as a component (world `kernel-provider`), for `--kernels wasm`.
    (
        "TENSORLET_KERNELS_COMPONENT_WASM",
        "tensorlet_kernels_component.wasm",
    ),
    // A deliberately broken function for the host's containment tests.
    ("TENSORLET_MISBEHAVE_WASM", "misbehave.wasm"),
];

/// Environment variables the outer cargo sets (or the user set for the host build) that
/// must not reach the nested guest build: flags and targets meant for the host, and
/// wrappers such as clippy's that would lint the guest as part of the host.
const LEAKED_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
];

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let repo = manifest_dir
        .parent()
        .unwrap_or_else(|| fail(format!("`{}` has no parent", manifest_dir.display())))
        .to_path_buf();
    let guest = repo.join("guest");
    let target_dir = repo.join("target").join("guest");

    watch_sources(&repo, &guest);
    ensure_target_installed();
    build_guest(&guest, &target_dir);

    let artifacts = target_dir.join(GUEST_TARGET).join("release");
    for (var, file) in COMPONENTS {
        let path = artifacts.join(file);
        if !path.is_file() {
            fail(format!(
                "the guest build succeeded but did not produce `{}`",
                path.display()
            ));
        }
        println!("cargo::rustc-env={var}={}", path.display());
    }
}

/// Reruns this script when the WIT, the kernels (which the kernels component compiles
/// in), or any guest source, manifest or lockfile changes.
/// Every entry of `guest/` except build output is watched (directories recursively), so
/// new guest crates are covered too.
fn watch_sources(repo: &Path, guest: &Path) {
    println!("cargo::rerun-if-changed={}", repo.join("wit").display());
    println!("cargo::rerun-if-changed={}", repo.join("kernels").display());
    let entries = fs::read_dir(guest)
        .unwrap_or_else(|e| fail(format!("failed to read `{}`: {e}", guest.display())));
    for entry in entries {
        let entry =
            entry.unwrap_or_else(|e| fail(format!("failed to read `{}`: {e}", guest.display())));
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with('.') && name != ".cargo";
        if name == "target" || hidden {
            continue;
        }
        println!("cargo::rerun-if-changed={}", entry.path().display());
    }
}

/// Installs the `wasm32-wasip2` standard library with `rustup` if the toolchain lacks it.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| {
            fail(format!(
                "failed to run `{} --print sysroot`: {e}",
                rustc.display()
            ))
        });
    if !output.status.success() {
        fail(format!(
            "`{} --print sysroot` failed: {}",
            rustc.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let target_lib = sysroot.join("lib").join("rustlib").join(GUEST_TARGET);
    if target_lib.is_dir() {
        return;
    }
    println!(
        "cargo::warning=the {GUEST_TARGET} target is missing from `{}`; running `rustup target add {GUEST_TARGET}`",
        sysroot.display()
    );
    let status = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .stdout(Stdio::from(io::stderr()))
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(format!(
            "`rustup target add {GUEST_TARGET}` failed ({status}); install the {GUEST_TARGET} \
             target for the toolchain at `{}` and build again",
            sysroot.display()
        )),
        Err(e) => fail(format!(
            "the {GUEST_TARGET} target is not installed for the toolchain at `{}` and `rustup` \
             could not be run ({e}); install the target (e.g. `rustup target add \
             {GUEST_TARGET}`, or your distribution's rust-std package for it) and build again",
            sysroot.display()
        )),
    }
}

/// Runs the nested `cargo build --release --target wasm32-wasip2` of the guest workspace,
/// inside `guest` so that cargo reads `guest/.cargo/config.toml`.
fn build_guest(guest: &Path, target_dir: &Path) {
    let manifest = guest.join("Cargo.toml");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guest)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for var in LEAKED_ENV {
        cmd.env_remove(var);
    }
    // Miri wraps rustc with its own sysroot; the guest needs the real compiler.
    if env::var_os("CARGO_CFG_MIRI").is_some() {
        cmd.env_remove("RUSTC").env_remove("RUSTC_WRAPPER");
    }
    // CARGO_MAKEFLAGS stays: the nested cargo joins the outer jobserver, so the two builds
    // together run no more jobs than `-j` allows. Cargo writes directives to stdout, so the
    // nested build's stdout goes to stderr, where nothing parses it.
    cmd.stdout(Stdio::from(io::stderr()));
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(format!("failed to run the guest build {cmd:?}: {e}")));
    if !status.success() {
        fail(format!(
            "the guest build failed ({status}): `cargo build --release --target {GUEST_TARGET} \
             --manifest-path {}` (its errors are above)",
            manifest.display()
        ));
    }
}

/// The value of an environment variable cargo always sets for build scripts.
fn env_var(name: &str) -> OsString {
    env::var_os(name).unwrap_or_else(|| fail(format!("cargo did not set `{name}`")))
}

/// Reports `message` as a build error and stops the build.
fn fail(message: String) -> ! {
    println!("cargo::error={message}");
    eprintln!("error: {message}");
    std::process::exit(1)
}
