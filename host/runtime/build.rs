//! Builds the guest components this crate embeds for `wasm32-wasip2` and hands their paths
//! to the crate: the kernels component with the `wasm-kernels` feature, the demo functions
//! and the test programs with `bundled`. With neither feature nothing is built.
//!
//! The guest workspace (`guest/`) is built by a nested `cargo build --release --target
//! wasm32-wasip2 -p ...` into the documented cache path `<repo>/target/guest` (not
//! `OUT_DIR`), so debug, release and `cargo clippy` host builds share one incremental guest
//! build instead of compiling the guest once per profile and feature set. Afterwards
//! `TENSORLET_KERNELS_COMPONENT_WASM`, `TENSORLET_MLP_WASM`, `TENSORLET_MNIST_CNN_WASM`,
//! `TENSORLET_MINILM_WASM` and
//! `TENSORLET_MISBEHAVE_WASM`, `TENSORLET_FOREIGN_IMPORT_WASM` hold the components' absolute paths, for
//! `include_bytes!(env!(...))`.
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

/// A component this crate embeds.
struct GuestComponent {
    /// The feature that asks for it (`CARGO_FEATURE_*`).
    feature: &'static str,
    /// The guest package that builds it.
    package: &'static str,
    /// The environment variable that receives its path.
    var: &'static str,
    /// The artifact's file name.
    file: &'static str,
}

/// Every component this crate can embed.
const COMPONENTS: &[GuestComponent] = &[
    // The kernels as a component (world `kernel-provider`), for `KernelBackend::Wasm`.
    GuestComponent {
        feature: "CARGO_FEATURE_WASM_KERNELS",
        package: "tensorlet-kernels-component",
        var: "TENSORLET_KERNELS_COMPONENT_WASM",
        file: "tensorlet_kernels_component.wasm",
    },
    GuestComponent {
        feature: "CARGO_FEATURE_BUNDLED",
        package: "mlp",
        var: "TENSORLET_MLP_WASM",
        file: "mlp.wasm",
    },
    GuestComponent {
        feature: "CARGO_FEATURE_BUNDLED",
        package: "mnist-cnn",
        var: "TENSORLET_MNIST_CNN_WASM",
        file: "mnist_cnn.wasm",
    },
    GuestComponent {
        feature: "CARGO_FEATURE_BUNDLED",
        package: "minilm",
        var: "TENSORLET_MINILM_WASM",
        file: "minilm.wasm",
    },
    GuestComponent {
        feature: "CARGO_FEATURE_BUNDLED",
        package: "spam",
        var: "TENSORLET_SPAM_WASM",
        file: "spam.wasm",
    },
    // A deliberately broken function for the host's containment tests.
    GuestComponent {
        feature: "CARGO_FEATURE_BUNDLED",
        package: "misbehave",
        var: "TENSORLET_MISBEHAVE_WASM",
        file: "misbehave.wasm",
    },
    // A component importing an interface no tensorlet host provides (load-time checks).
    GuestComponent {
        feature: "CARGO_FEATURE_BUNDLED",
        package: "foreign-import",
        var: "TENSORLET_FOREIGN_IMPORT_WASM",
        file: "foreign_import.wasm",
    },
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
    // host/runtime -> the repository root.
    let repo = manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or_else(|| fail(format!("`{}` has no grandparent", manifest_dir.display())))
        .to_path_buf();
    let guest = repo.join("guest");
    let target_dir = repo.join("target").join("guest");

    let wanted: Vec<&GuestComponent> = COMPONENTS
        .iter()
        .filter(|c| env::var_os(c.feature).is_some())
        .collect();
    if wanted.is_empty() {
        return;
    }
    watch_sources(&repo, &guest);
    ensure_target_installed();
    build_guest(&guest, &target_dir, &wanted);

    let artifacts = target_dir.join(GUEST_TARGET).join("release");
    for GuestComponent { var, file, .. } in wanted {
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
fn build_guest(guest: &Path, target_dir: &Path, wanted: &[&GuestComponent]) {
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
    for c in wanted {
        cmd.arg("-p").arg(c.package);
    }
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
