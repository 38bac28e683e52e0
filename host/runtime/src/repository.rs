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
//! before publishing any; [`pack`] and [`Repository::write_version`] write a version folder
//! atomically (a hidden temporary folder, renamed into place), and
//! [`Repository::write_config`] replaces `config.json` the same way, so a process killed
//! while writing leaves the old state or the new one, never a half-written version.

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
            dynamic_batching: self.dynamic_batching.is_some(),
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

    /// The folder of model `name`, a valid name, whether it exists or not.
    pub fn model_path(&self, name: &str) -> Result<PathBuf> {
        validate_name("model name", name)?;
        Ok(self.root.join(name))
    }

    /// The folder of model `name`, which must be a valid name and exist.
    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.model_path(name)?;
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

    /// Writes version `version` of model `name` from a component's bytes and safetensors
    /// bytes, atomically as [`pack`] does (a temporary folder renamed into place; the model
    /// folder is created if need be). An existing version is refused: versions are
    /// immutable. Nothing here checks that the files load: callers build the [`Model`]
    /// first. Returns the version folder.
    pub fn write_version(
        &self,
        name: &str,
        version: u64,
        function: &[u8],
        weights: &[u8],
    ) -> Result<PathBuf> {
        if version == 0 {
            return Err(Error::invalid_input(format!(
                "model `{name}`: versions are positive integers, got 0"
            )));
        }
        let out = self.model_path(name)?.join(version.to_string());
        write_version_dir(&out, version, |tmp| {
            write_file(&tmp.join(FUNCTION_FILE), function)?;
            write_file(&tmp.join(WEIGHTS_FILE), weights)
        })?;
        Ok(out)
    }

    /// Replaces model `name`'s `config.json` with `text` (or removes it, for `None`)
    /// atomically: the new file is written under a hidden temporary name and renamed over
    /// the old one. `text` must parse as a [`ModelConfig`] naming no other model. The model
    /// folder is created if need be.
    pub fn write_config(&self, name: &str, text: Option<&str>) -> Result<()> {
        let dir = self.model_path(name)?;
        let path = dir.join(CONFIG_FILE);
        let Some(text) = text else {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
                _ => Ok(()),
            };
        };
        let config = ModelConfig::from_json(&format!("the configuration of `{name}`"), text)?;
        if let Some(n) = config.name.as_deref().filter(|n| *n != name) {
            return Err(Error::invalid_input(format!(
                "the configuration names the model `{n}`, but it is for `{name}`"
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let tmp = dir.join(format!(".{CONFIG_FILE}.tmp-{}", std::process::id()));
        let written = write_file(&tmp, text.as_bytes())
            .and_then(|()| sync(&tmp))
            .and_then(|()| rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Removes version `version` of model `name` from the disk (see
    /// [`Repository::remove_model`] for how).
    pub fn remove_version(&self, name: &str, version: u64) -> Result<()> {
        remove_folder(&self.version_dir(name, version)?)
    }

    /// Removes model `name`'s folder so that it is never seen half deleted: it is renamed
    /// to a hidden name first, which the repository ignores, then deleted.
    pub fn remove_model(&self, name: &str) -> Result<()> {
        remove_folder(&self.model_dir(name)?)
    }
}

/// Renames the folder `path` to a hidden name beside it, then deletes it.
fn remove_folder(path: &Path) -> Result<()> {
    let (Some(parent), Some(leaf)) = (path.parent(), path.file_name()) else {
        return Err(Error::invalid_input(format!(
            "`{}` cannot be removed: it has no parent folder",
            path.display()
        )));
    };
    let hidden = parent.join(format!(
        ".{}.removed-{}",
        leaf.to_string_lossy(),
        std::process::id()
    ));
    rename(path, &hidden)?;
    std::fs::remove_dir_all(&hidden).map_err(|e| io(&hidden, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io(path, e))
}

/// Flushes the file at `path` to the disk.
fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(path, e))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| io(to, e))
}

/// Writes the version folder `out` (`DIR/<model>/<version>`) atomically: `write` fills a
/// hidden temporary folder beside it (which [`Repository::versions`] never lists), whose
/// files are then flushed to the disk, and the folder is renamed into place. A process
/// killed meanwhile leaves at most the hidden folder; on an error it is removed. An
/// existing `out` is refused.
fn write_version_dir(
    out: &Path,
    version: u64,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if out.exists() {
        return Err(Error::invalid_input(format!(
            "`{}` already exists; versions are immutable, use a new version number",
            out.display()
        )));
    }
    let model_dir = out
        .parent()
        .ok_or_else(|| Error::invalid_input(format!("`{}` has no model folder", out.display())))?;
    std::fs::create_dir_all(model_dir).map_err(|e| io(model_dir, e))?;
    let tmp = model_dir.join(format!(".{version}.tmp-{}", std::process::id()));
    // Left by a killed process that had this process's id: nobody writes it any more.
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| {
        std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
        write(&tmp)?;
        for entry in std::fs::read_dir(&tmp).map_err(|e| io(&tmp, e))? {
            sync(&entry.map_err(|e| io(&tmp, e))?.path())?;
        }
        rename(&tmp, out)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
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
    let name = out
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .ok_or_else(bad_out)?;
    let f = runtime.load_function(name, function)?;
    let w = runtime.load_weights_file(weights)?;
    Model::new(name, version, f, w, ModelSettings::default())?;
    write_version_dir(out, version, |tmp| {
        write_file(&tmp.join(FUNCTION_FILE), function)?;
        let w = tmp.join(WEIGHTS_FILE);
        std::fs::copy(weights, &w).map_err(|e| io(&w, e))?;
        Ok(())
    })
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
