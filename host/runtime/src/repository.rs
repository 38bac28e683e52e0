//! A model repository on disk, in Triton's layout, and how to write one.
//!
//! ```text
//! DIR/<model>/config.json                      optional: limits, version policy, batching
//! DIR/<model>/<version>/function.wasm          the inference function (a component)
//! DIR/<model>/<version>/weights.safetensors    its weights
//! ```
//!
//! Model names follow [`validate_name`]; version folders are positive integers (other
//! entries are ignored, as Triton does). `config.json` is Triton's model configuration in
//! its JSON form, for the fields tensorlet uses: `max_batch_size`, `version_policy`
//! (`{"latest": {"num_versions": N}}`, `{"all": {}}` or `{"specific": {"versions": [..]}}`,
//! default the latest one) and `dynamic_batching` (`preferred_batch_size`,
//! `max_queue_delay_microseconds`); an unknown field is an error, so a typo is not silently
//! ignored. [`Registry::load_from_repository`] builds every selected version completely
//! before publishing any; [`pack`] writes a version folder atomically.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Model, ModelSettings, Registry, validate_name};
use crate::runtime::Runtime;

/// The function's file name in a version folder.
pub const FUNCTION_FILE: &str = "function.wasm";
/// The weights' file name in a version folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The optional configuration's file name in a model folder.
pub const CONFIG_FILE: &str = "config.json";

/// Which versions of a model are served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The `num_versions` highest versions.
    Latest {
        /// How many.
        num_versions: u32,
    },
    /// Every version.
    All {},
    /// These versions.
    Specific {
        /// The versions.
        versions: Vec<u64>,
    },
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest { num_versions: 1 }
    }
}

/// Dynamic batching settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicBatching {
    /// Batch sizes to aim for.
    #[serde(default)]
    pub preferred_batch_size: Vec<u32>,
    /// How long a request may wait for a batch to fill, in microseconds.
    #[serde(default)]
    pub max_queue_delay_microseconds: u64,
}

/// A model's `config.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model's name; if given, it must equal the folder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Largest batch a server may form; 0 turns batching off.
    #[serde(default)]
    pub max_batch_size: u32,
    /// Which versions are served.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Dynamic batching, if wanted.
    #[serde(default)]
    pub dynamic_batching: Option<DynamicBatching>,
}

impl ModelConfig {
    /// Parses a configuration from JSON text; `what` names it in errors.
    pub fn from_json(what: &str, text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            Error::invalid_input(format!(
                "{what} is not a valid model configuration: {e}; expected e.g. \
                 {{\"max_batch_size\": 8, \"version_policy\": {{\"latest\": {{\"num_versions\": \
                 1}}}}}}"
            ))
        })
    }

    /// The registry settings this configuration asks for.
    pub fn settings(&self) -> ModelSettings {
        let batching = self.dynamic_batching.clone().unwrap_or_default();
        ModelSettings {
            max_batch_size: self.max_batch_size,
            preferred_batch_sizes: batching.preferred_batch_size,
            max_queue_delay: Duration::from_micros(batching.max_queue_delay_microseconds),
        }
    }

    /// The versions of `available` (sorted ascending) that the policy selects.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match &self.version_policy {
            VersionPolicy::Latest { num_versions } => {
                let n = (*num_versions as usize).min(available.len());
                available[available.len() - n..].to_vec()
            }
            VersionPolicy::All {} => available.to_vec(),
            VersionPolicy::Specific { versions } => available
                .iter()
                .copied()
                .filter(|v| versions.contains(v))
                .collect(),
        }
    }
}

/// A model repository folder.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

impl Repository {
    /// The repository at `root`, which must be a folder.
    pub fn open(root: &Path) -> Result<Self> {
        let meta = std::fs::metadata(root).map_err(|e| io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::invalid_input(format!(
                "model repository `{}` is not a folder",
                root.display()
            )));
        }
        Ok(Repository {
            root: root.to_path_buf(),
        })
    }

    /// The repository's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The names of the model folders, sorted (hidden entries and files are skipped).
    pub fn model_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| io(&self.root, e))? {
            let entry = entry.map_err(|e| io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// The folder of model `name`, which must be a valid name and exist.
    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        validate_name("model name", name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::not_found(format!(
                "model repository `{}` has no model `{name}`",
                self.root.display()
            )));
        }
        Ok(dir)
    }

    /// Model `name`'s configuration (`config.json`, or the defaults without one).
    pub fn config(&self, name: &str) -> Result<ModelConfig> {
        let path = self.model_dir(name)?.join(CONFIG_FILE);
        let config = match std::fs::read_to_string(&path) {
            Ok(text) => ModelConfig::from_json(&format!("`{}`", path.display()), &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ModelConfig::default(),
            Err(e) => return Err(io(&path, e)),
        };
        if let Some(n) = &config.name
            && n != name
        {
            return Err(Error::invalid_input(format!(
                "`{}` names the model `{n}`, but its folder is `{name}`",
                path.display()
            )));
        }
        Ok(config)
    }

    /// Model `name`'s version folders (positive integers), ascending.
    pub fn versions(&self, name: &str) -> Result<Vec<u64>> {
        let dir = self.model_dir(name)?;
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let file_name = entry.file_name();
            let version = file_name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&v| v > 0);
            if let Some(v) = version
                && entry.path().is_dir()
            {
                versions.push(v);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The folder of model `name`, version `version`.
    pub fn version_dir(&self, name: &str, version: u64) -> Result<PathBuf> {
        Ok(self.model_dir(name)?.join(version.to_string()))
    }
}

impl Registry {
    /// Loads model `name` from `repository`: every version its policy selects is built
    /// completely (compiled, weights prepared and checked) before any is published; then
    /// they are published, and published versions the policy no longer selects are
    /// unloaded (waiting for their requests). If any selected version fails to build,
    /// nothing changes and the error names the version. Returns the versions now served.
    pub fn load_from_repository(&self, repository: &Repository, name: &str) -> Result<Vec<u64>> {
        let config = repository.config(name)?;
        let available = repository.versions(name)?;
        let selected = config.select(&available);
        if selected.is_empty() {
            return Err(Error::not_found(format!(
                "model `{name}` in `{}` has no version to serve (version folders: {:?}, policy: \
                 {:?})",
                repository.root().display(),
                available,
                config.version_policy
            )));
        }
        let settings = config.settings();
        let mut models = Vec::with_capacity(selected.len());
        for &v in &selected {
            let dir = repository.version_dir(name, v)?;
            let model = Model::from_files(
                self.runtime(),
                name,
                v,
                &dir.join(FUNCTION_FILE),
                &dir.join(WEIGHTS_FILE),
                settings.clone(),
            )
            .map_err(|e| e.context(format!("model `{name}` version {v}")))?;
            models.push(model);
        }
        for model in models {
            self.publish(model);
        }
        let stale: Vec<u64> = self
            .models()
            .into_iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, versions)| versions)
            .filter(|v| !selected.contains(v))
            .collect();
        for v in stale {
            match self.unload(name, Some(v), self.runtime().config().deadline) {
                Ok(_) => {}
                // Unloaded meanwhile by someone else: nothing left to do.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(selected)
    }
}

/// Writes `function` (a component's bytes) and the weights file at `weights` into the
/// version folder `out` (`DIR/<model>/<version>`), after checking that they load and fit
/// together as model `<model>` version `<version>` in `runtime`. The folder is written
/// under a temporary name beside it and renamed into place, so it never exists half
/// written; an existing `out` is refused.
pub fn pack(runtime: &Runtime, function: &[u8], weights: &Path, out: &Path) -> Result<()> {
    let bad_out = || {
        Error::invalid_input(format!(
            "`{}` is not a version folder path; expected DIR/<model>/<version> with a positive \
             integer version",
            out.display()
        ))
    };
    let version: u64 = out
        .file_name()
        .and_then(|v| v.to_str())
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .ok_or_else(bad_out)?;
    let model_dir = out.parent().ok_or_else(bad_out)?;
    let name = model_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(bad_out)?;
    if out.exists() {
        return Err(Error::invalid_input(format!(
            "`{}` already exists; versions are immutable, pack a new version number",
            out.display()
        )));
    }
    let f = runtime.load_function(name, function)?;
    let w = runtime.load_weights_file(weights)?;
    Model::new(name, version, f, w, ModelSettings::default())?;
    std::fs::create_dir_all(model_dir).map_err(|e| io(model_dir, e))?;
    let tmp = model_dir.join(format!(".{version}.tmp-{}", std::process::id()));
    let written = (|| {
        std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
        let f = tmp.join(FUNCTION_FILE);
        std::fs::write(&f, function).map_err(|e| io(&f, e))?;
        let w = tmp.join(WEIGHTS_FILE);
        std::fs::copy(weights, &w).map_err(|e| io(&w, e))?;
        std::fs::rename(&tmp, out).map_err(|e| io(out, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_select_versions() {
        let available = [1, 2, 5, 9];
        let cfg = |json: &str| ModelConfig::from_json("test", json).unwrap();
        assert_eq!(cfg("{}").select(&available), vec![9]);
        assert_eq!(
            cfg(r#"{"version_policy": {"latest": {"num_versions": 2}}}"#).select(&available),
            vec![5, 9]
        );
        assert_eq!(
            cfg(r#"{"version_policy": {"latest": {"num_versions": 7}}}"#).select(&available),
            vec![1, 2, 5, 9]
        );
        assert_eq!(
            cfg(r#"{"version_policy": {"all": {}}}"#).select(&available),
            vec![1, 2, 5, 9]
        );
        assert_eq!(
            cfg(r#"{"version_policy": {"specific": {"versions": [2, 3, 9]}}}"#).select(&available),
            vec![2, 9]
        );
        let c = cfg(
            r#"{"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500}}"#,
        );
        let s = c.settings();
        assert_eq!(s.max_batch_size, 8);
        assert_eq!(s.preferred_batch_sizes, vec![4, 8]);
        assert_eq!(s.max_queue_delay, Duration::from_micros(500));
        let typo = ModelConfig::from_json("cfg", r#"{"max_batch": 8}"#).unwrap_err();
        assert_eq!(typo.kind(), ErrorKind::InvalidInput);
        assert!(typo.message().contains("max_batch"), "{typo}");
    }
}
