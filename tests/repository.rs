//! Model repositories in Triton's layout: `tensorlet pack` writes version folders, and a
//! registry loads the versions a model's `config.json` selects, swapping them in only
//! when every one of them built.

mod common;

use common::tensorlet;

use std::path::{Path, PathBuf};

use tensorlet_host::{ErrorKind, Registry, Repository, Runtime, RuntimeConfig, Tensor, bundled};

fn pack(function: &str, weights: Option<&Path>, out: &Path) -> std::process::Output {
    let mut args = vec!["pack", function, "-o", out.to_str().unwrap()];
    if let Some(w) = weights {
        args.extend(["--weights", w.to_str().unwrap()]);
    }
    tensorlet(&args)
}

fn temp_repo(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tensorlet-repo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bits of mlp's output for a fixed input, with `weights` (bundled if `None`).
fn mlp_bits(rt: &Runtime, weights: Option<&Path>) -> Vec<u32> {
    let f = rt.load_bundled("mlp").unwrap();
    let w = match weights {
        Some(p) => rt.load_weights_file(p).unwrap(),
        None => rt
            .load_weights("mlp", bundled::find("mlp").unwrap().weights().unwrap())
            .unwrap(),
    };
    bits(&f.infer(&w, input()).unwrap())
}

fn input() -> Vec<(String, Tensor)> {
    let x: Vec<f32> = (0..20).map(|i| i as f32 / 7.0 - 1.0).collect();
    vec![("x".into(), Tensor::from_f32(vec![2, 10], x).unwrap())]
}

fn bits(out: &[(String, Tensor)]) -> Vec<u32> {
    out[0]
        .1
        .f32s("y")
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn pack_writes_version_folders_and_refuses_bad_ones() {
    let repo = temp_repo("pack");
    let v1 = repo.join("mlp/1");
    let out = pack("mlp", None, &v1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(v1.join("function.wasm").is_file() && v1.join("weights.safetensors").is_file());
    assert_eq!(
        std::fs::read(v1.join("weights.safetensors")).unwrap(),
        bundled::find("mlp").unwrap().weights().unwrap()
    );
    let err = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Versions are immutable; a version must be a positive integer; names are checked.
    assert!(err(pack("mlp", None, &v1)).contains("already exists"));
    assert!(err(pack("mlp", None, &repo.join("mlp/latest"))).contains("positive integer"));
    assert!(err(pack("mlp", None, &repo.join("mlp/0"))).contains("positive integer"));
    assert!(err(pack("mlp", None, &repo.join("bad name/1"))).contains("not allowed"));
    // Weights that do not fit the function are refused, and nothing is written.
    let bad = common::fixture("bad_cnn_missing_conv2.weights.safetensors");
    let e = err(pack("mnist-cnn", Some(&bad), &repo.join("cnn/1")));
    assert!(e.contains("conv2") && e.contains("(not-found)"), "{e}");
    assert!(!repo.join("cnn/1").exists());
    // A precompiled artifact is never packed.
    let cwasm = repo.join("mlp.cwasm");
    let wasm = repo.join("mlp.wasm");
    std::fs::write(&wasm, bundled::find("mlp").unwrap().component).unwrap();
    assert!(
        tensorlet(&[
            "compile",
            wasm.to_str().unwrap(),
            "-o",
            cwasm.to_str().unwrap()
        ])
        .status
        .success()
    );
    let w = v1.join("weights.safetensors");
    assert!(
        err(pack(cwasm.to_str().unwrap(), Some(&w), &repo.join("mlp/2"))).contains("precompiled")
    );
    // Only the packed folder is left: no temporary folders.
    let names: Vec<_> = std::fs::read_dir(repo.join("mlp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["1"]);
    std::fs::remove_dir_all(&repo).unwrap();
}

#[test]
fn a_registry_serves_the_versions_the_policy_selects() {
    let repo = temp_repo("policy");
    let basic = common::fixture("mlp_basic.weights.safetensors");
    assert!(pack("mlp", None, &repo.join("mlp/1")).status.success());
    assert!(
        pack("mlp", Some(&basic), &repo.join("mlp/2"))
            .status
            .success()
    );
    std::fs::create_dir_all(repo.join("mlp/notes")).unwrap();
    let rt = common::runtime(RuntimeConfig::default());
    let (v1_bits, v2_bits) = (mlp_bits(&rt, None), mlp_bits(&rt, Some(&basic)));
    assert_ne!(v1_bits, v2_bits);
    let repository = Repository::open(&repo).unwrap();
    assert_eq!(repository.model_names().unwrap(), ["mlp"]);
    assert_eq!(repository.versions("mlp").unwrap(), [1, 2]);
    let registry = Registry::new(rt.clone());
    let config = repo.join("mlp/config.json");
    let serve = |policy: Option<&str>| {
        if let Some(p) = policy {
            std::fs::write(&config, p).unwrap();
        }
        registry.load_from_repository(&repository, "mlp")
    };
    let infer = |v: Option<u64>| bits(&registry.get("mlp", v).unwrap().infer(input()).unwrap());
    // Default: the latest version only.
    assert_eq!(serve(None).unwrap(), [2]);
    assert_eq!(infer(None), v2_bits);
    assert_eq!(
        registry.get("mlp", Some(1)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // All versions.
    assert_eq!(
        serve(Some(r#"{"version_policy": {"all": {}}}"#)).unwrap(),
        [1, 2]
    );
    assert_eq!(infer(Some(1)), v1_bits);
    assert_eq!(infer(Some(2)), v2_bits);
    // A specific one: the other is unloaded.
    let specific = r#"{"name": "mlp", "max_batch_size": 4, "version_policy": {"specific": {"versions": [1]}}}"#;
    assert_eq!(serve(Some(specific)).unwrap(), [1]);
    assert_eq!(registry.models(), [("mlp".to_string(), vec![1])]);
    assert_eq!(
        registry.get("mlp", None).unwrap().settings().max_batch_size,
        4
    );
    // A broken new version leaves what serves untouched, and says which version failed.
    std::fs::create_dir_all(repo.join("mlp/3")).unwrap();
    std::fs::copy(
        repo.join("mlp/1/function.wasm"),
        repo.join("mlp/3/function.wasm"),
    )
    .unwrap();
    std::fs::copy(
        common::fixture("bad_truncated.weights.safetensors"),
        repo.join("mlp/3/weights.safetensors"),
    )
    .unwrap();
    let e = serve(Some(r#"{"version_policy": {"all": {}}}"#)).unwrap_err();
    assert!(e.message().contains("version 3"), "{e}");
    assert_eq!(registry.models(), [("mlp".to_string(), vec![1])]);
    assert_eq!(infer(None), v1_bits);
    // A configuration with a typo or another model's name is refused.
    let e = serve(Some(r#"{"version_polcy": {"all": {}}}"#)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = serve(Some(r#"{"name": "other"}"#)).unwrap_err();
    assert!(e.message().contains("`other`"), "{e}");
    let e = registry
        .load_from_repository(&repository, "..")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    std::fs::remove_dir_all(&repo).unwrap();
}
