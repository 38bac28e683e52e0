//! Deploying model files over the network: the parameters of a repository `load` request
//! (`config` and `file:<version>/<file>`, Triton's names) checked, written into the
//! repository atomically, and swapped in.
//!
//! Order of a deploy: the parameters are parsed and every name checked (versions are
//! positive integers, files are `function.wasm` and `weights.safetensors` only — never
//! precompiled native code), the configuration parsed as a [`ModelConfig`], each version's
//! component compiled ([`Runtime::load_function`](tensorlet_host::Runtime::load_function)
//! refuses artifacts) and its weights checked against it ([`Model::new`]) — all before
//! anything is written. Then the files are written ([`Repository::write_version`],
//! [`Repository::write_config`]: temporary names renamed into place) and the model is loaded
//! from the repository, which builds every selected version before publishing any. If that
//! fails, the written files are removed and the old configuration restored, so the
//! repository and the served versions are as before.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tensorlet_host::repository::{CONFIG_FILE, FUNCTION_FILE, WEIGHTS_FILE};
use tensorlet_host::{Error, ErrorKind, Model, ModelConfig, Repository, Result, validate_name};

use crate::{Source, State};

/// One version's files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VersionFiles {
    function: Vec<u8>,
    weights: Vec<u8>,
}

/// The value of one load parameter, as a transport carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parameter<'a> {
    /// Text: the configuration's JSON, or a file's bytes in base64 (HTTP).
    Text(&'a str),
    /// Raw bytes: a file (gRPC's `bytes_param`).
    Bytes(&'a [u8]),
    /// Anything else, named for the error (`a number`, `a boolean`, ...).
    Other(&'static str),
}

impl Parameter<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Parameter::Text(_) => "a string",
            Parameter::Bytes(_) => "bytes",
            Parameter::Other(kind) => kind,
        }
    }
}

/// What a load request with parameters deploys: a new configuration and/or new versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deployment {
    /// The new `config.json` text and what it parses to.
    config: Option<(String, ModelConfig)>,
    /// New versions, by number.
    versions: BTreeMap<u64, VersionFiles>,
}

impl Deployment {
    /// The deployment of an HTTP load request's `parameters` for model `model`: `config` (a
    /// model configuration as JSON text) and `file:<version>/function.wasm` plus
    /// `file:<version>/weights.safetensors` (base64) for each new version; see
    /// [`Deployment::from_entries`].
    pub fn from_parameters(model: &str, parameters: &Map<String, Value>) -> Result<Self> {
        Self::from_entries(
            model,
            parameters.iter().map(|(key, value)| {
                let value = match value {
                    Value::String(text) => Parameter::Text(text),
                    other => Parameter::Other(kind_of(other)),
                };
                (key.as_str(), value)
            }),
        )
    }

    /// The deployment of a load request's parameters for model `model`: `config` (a model
    /// configuration as JSON text) and, for each new version, `file:<version>/function.wasm`
    /// plus `file:<version>/weights.safetensors` (their bytes, or base64 text). Any other
    /// parameter, a file name that is not one of those two (`..`, separators, absolute
    /// paths, `.cwasm`), a version that is not a positive integer, a version with one file
    /// but not the other, or a configuration that does not parse is refused, naming it.
    pub fn from_entries<'a>(
        model: &str,
        parameters: impl IntoIterator<Item = (&'a str, Parameter<'a>)>,
    ) -> Result<Self> {
        validate_name("model name", model)?;
        let mut config = None;
        // Per version: the function's bytes and the weights' bytes, as they come.
        type Pair = (Option<Vec<u8>>, Option<Vec<u8>>);
        let mut files: BTreeMap<u64, Pair> = BTreeMap::new();
        for (key, value) in parameters {
            if key == "config" {
                let Parameter::Text(text) = value else {
                    return Err(Error::invalid_input(format!(
                        "load parameter `config` must be a string (the configuration's JSON), \
                         got {}",
                        value.kind()
                    )));
                };
                let parsed = ModelConfig::from_json("the `config` parameter", text)?;
                if let Some(n) = parsed.name.as_deref().filter(|n| *n != model) {
                    return Err(Error::invalid_input(format!(
                        "the `config` parameter names the model `{n}`, but it is loaded as \
                         `{model}`"
                    )));
                }
                config = Some((text.to_string(), parsed));
                continue;
            }
            let Some(path) = key.strip_prefix("file:") else {
                return Err(Error::invalid_input(format!(
                    "unknown load parameter `{key}`; expected `config` or \
                     `file:<version>/{FUNCTION_FILE}` and `file:<version>/{WEIGHTS_FILE}`"
                )));
            };
            let (version, file) = parse_file_path(path)?;
            let bytes = match value {
                Parameter::Bytes(bytes) => bytes.to_vec(),
                Parameter::Text(text) => {
                    tensorlet_host::oip::base64_decode(&format!("parameter `{key}`"), text)?
                }
                Parameter::Other(kind) => {
                    return Err(Error::invalid_input(format!(
                        "load parameter `{key}` must be the file's bytes (base64 text over \
                         HTTP), got {kind}"
                    )));
                }
            };
            if bytes.is_empty() {
                return Err(Error::invalid_input(format!(
                    "parameter `{key}` is empty; expected the file's bytes"
                )));
            }
            let slot = files.entry(version).or_default();
            match file {
                FUNCTION_FILE => slot.0 = Some(bytes),
                _ => slot.1 = Some(bytes),
            }
        }
        let mut versions = BTreeMap::new();
        for (v, pair) in files {
            match pair {
                (Some(function), Some(weights)) => {
                    versions.insert(v, VersionFiles { function, weights });
                }
                (f, _) => {
                    let missing = if f.is_none() {
                        FUNCTION_FILE
                    } else {
                        WEIGHTS_FILE
                    };
                    return Err(Error::invalid_input(format!(
                        "version {v} has no `file:{v}/{missing}`; a version needs both \
                         {FUNCTION_FILE} and {WEIGHTS_FILE}"
                    )));
                }
            }
        }
        Ok(Deployment { config, versions })
    }

    /// Whether it deploys nothing (a plain reload).
    pub fn is_empty(&self) -> bool {
        self.config.is_none() && self.versions.is_empty()
    }

    /// The versions it adds, ascending.
    pub fn versions(&self) -> Vec<u64> {
        self.versions.keys().copied().collect()
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The version and file name of a `file:` parameter's path `<version>/<file>`.
fn parse_file_path(path: &str) -> Result<(u64, &'static str)> {
    let bad = |why: &str| {
        Error::invalid_input(format!(
            "file `{path}` is refused: {why}; expected `<version>/{FUNCTION_FILE}` or \
             `<version>/{WEIGHTS_FILE}` with a positive integer version"
        ))
    };
    let (version, file) = path
        .split_once('/')
        .ok_or_else(|| bad("it names no version folder"))?;
    let version = Some(version)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .ok_or_else(|| bad("the version folder is not a positive integer"))?;
    validate_name("file name", file).map_err(|e| bad(e.message()))?;
    if file.ends_with(".cwasm") {
        return Err(bad(
            "precompiled artifacts (native code) are never accepted over the network; send \
             the .wasm component",
        ));
    }
    match file {
        FUNCTION_FILE => Ok((version, FUNCTION_FILE)),
        WEIGHTS_FILE => Ok((version, WEIGHTS_FILE)),
        _ => Err(bad("a version folder holds only these two files")),
    }
}

impl State {
    /// The repository deploys write into; an error naming `--repository` if the server
    /// serves the bundled models.
    pub fn deploy_target(&self) -> Result<&Repository> {
        match &self.source {
            Source::Repository(repo) => Ok(repo),
            Source::Bundled => Err(Error::invalid_input(
                "this server serves the bundled models; deploying files needs a model \
                 repository (start it with --repository DIR)",
            )),
        }
    }

    /// Deploys `deployment` as model `name` into the repository the server serves, then
    /// loads it (see the module documentation for the order and what a failure leaves).
    /// Returns the versions now served.
    pub fn deploy(&self, name: &str, deployment: &Deployment) -> Result<Vec<u64>> {
        let repo = self.deploy_target()?;
        validate_name("model name", name)?;
        let _changing = self.changing();
        let model_dir = repo.model_path(name)?;
        let existed = model_dir.is_dir();
        let settings = match &deployment.config {
            Some((_, config)) => config.settings(),
            None if existed => repo.config(name)?.settings(),
            None => ModelConfig::default().settings(),
        };
        // Everything is checked before anything is written.
        let runtime = self.registry.runtime();
        for (&v, files) in &deployment.versions {
            let what = format!("model `{name}` version {v}");
            if model_dir.join(v.to_string()).exists() {
                return Err(Error::invalid_input(format!(
                    "{what} already exists in the repository; versions are immutable, deploy \
                     a new version number"
                )));
            }
            let function = runtime
                .load_function(&format!("{name}/{v}/{FUNCTION_FILE}"), &files.function)
                .map_err(|e| e.context(&what))?;
            let weights = runtime
                .load_weights(&format!("{name}/{v}/{WEIGHTS_FILE}"), &files.weights)
                .map_err(|e| e.context(&what))?;
            Model::new(name, v, function, weights, settings.clone())?;
        }
        let config_path = model_dir.join(CONFIG_FILE);
        let old_config = match std::fs::read_to_string(&config_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&config_path, e)),
        };
        let mut written = Vec::new();
        let result = (|| {
            if let Some((text, _)) = &deployment.config {
                repo.write_config(name, Some(text))?;
            }
            for (&v, files) in &deployment.versions {
                repo.write_version(name, v, &files.function, &files.weights)?;
                written.push(v);
            }
            self.registry.load_from_repository(repo, name)
        })();
        if let Err(e) = result {
            // Loading publishes every new version before unloading the old ones; if only
            // that unloading failed, the new files are serving and must stay.
            let serving = self.registry.models();
            if serving
                .iter()
                .any(|(n, vs)| n == name && vs.iter().any(|v| written.contains(v)))
            {
                return Err(e);
            }
            let undone = undo(repo, name, existed, &written, old_config.as_deref());
            return Err(match undone {
                Ok(()) => e.context(format!(
                    "deploying `{name}` failed and was undone; still serving what served before"
                )),
                Err(u) => Error::new(
                    e.kind(),
                    format!(
                        "deploying `{name}` failed ({e}), and undoing it failed too ({u}); \
                         still serving what served before, but the repository needs a look"
                    ),
                ),
            });
        }
        result
    }
}

/// Removes the versions `written` of model `name` (or the whole model folder, if it did not
/// exist before) and puts back its configuration `old_config`.
fn undo(
    repo: &Repository,
    name: &str,
    existed: bool,
    written: &[u64],
    old_config: Option<&str>,
) -> Result<()> {
    if !existed {
        return match repo.remove_model(name) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    for &v in written {
        repo.remove_version(name, v)?;
    }
    repo.write_config(name, old_config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn parameters_name_config_and_version_files() {
        let d = Deployment::from_parameters(
            "mlp",
            &params(json!({
                "config": r#"{"max_batch_size": 4}"#,
                "file:2/function.wasm": "AQID",
                "file:2/weights.safetensors": "BAUG",
            })),
        )
        .unwrap();
        assert_eq!(d.versions(), [2]);
        assert_eq!(d.versions[&2].function, [1, 2, 3]);
        assert_eq!(d.versions[&2].weights, [4, 5, 6]);
        assert_eq!(d.config.as_ref().unwrap().1.max_batch_size, 4);
        assert!(!d.is_empty());
        assert!(
            Deployment::from_parameters("mlp", &Map::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_names_and_parameters_are_refused() {
        let refused = |model: &str, p: Value, says: &str| {
            let e = Deployment::from_parameters(model, &params(p)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.message().contains(says), "{says:?} not in {e}");
        };
        let both = |v: &str| {
            json!({
                format!("file:{v}/function.wasm"): "AQID",
                format!("file:{v}/weights.safetensors"): "AQID",
            })
        };
        for model in ["../x", "a/b", "/abs", "..", ""] {
            refused(model, both("1"), "not allowed");
        }
        for path in [
            "../x",
            "1/a/b",
            "/abs",
            "1/../weights.safetensors",
            "x/function.wasm",
        ] {
            refused(
                "mlp",
                json!({ format!("file:{path}"): "AQID" }),
                &format!("file `{path}` is refused"),
            );
        }
        refused("mlp", both("0"), "positive integer");
        refused(
            "mlp",
            json!({"file:1/function.cwasm": "AQID"}),
            "precompiled",
        );
        refused(
            "mlp",
            json!({"file:1/model.onnx": "AQID"}),
            "only these two",
        );
        refused(
            "mlp",
            json!({"file:1/function.wasm": "AQID"}),
            "no `file:1/weights",
        );
        refused(
            "mlp",
            json!({"file:1/function.wasm": 7}),
            "must be the file's bytes (base64 text over HTTP), got a number",
        );
        refused("mlp", json!({"file:1/function.wasm": "A*"}), "not base64");
        refused("mlp", json!({"file:1/function.wasm": ""}), "is empty");
        refused(
            "mlp",
            json!({"files": "x"}),
            "unknown load parameter `files`",
        );
        refused("mlp", json!({"config": "{\"max_batch\": 1}"}), "max_batch");
        refused("mlp", json!({"config": "{\"name\": \"other\"}"}), "`other`");
    }
}
