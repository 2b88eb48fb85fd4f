//! Loading a configuration file: figment (TOML file, then `RPROXY_*` overrides of global keys),
//! then validation. `rproxy -t`, start-up and every reload use this same function, so what `-t`
//! accepts is exactly what a reload accepts.

use std::fmt;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::value::Value;
use figment::Figment;

use crate::config::Config;
use crate::schema::File;

/// Global keys that `RPROXY_<KEY>` may override (`-` written as `_`). Figment's Env provider
/// cannot address array elements, so per-server keys are file-only.
pub const GLOBAL_KEYS: &[&str] = &[
    "daemonize",
    "user",
    "group",
    "max-nofile",
    "memtrim-sz",
    "workers",
    "pid-file",
    "shutdown-timeout",
    "heartbeat-timeout",
    "error-log",
    "log-level",
    "control-socket",
];

/// One problem in a configuration: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `environment` for an `RPROXY_*` variable.
    pub file: String,
    /// Key path such as `server[0].downstream[1].port`; empty for file-level problems.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

/// Every problem found; a configuration is used only when this is empty.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Load, override from the environment, and validate `path`. Validation resolves downstream
/// host names, compiles regexes and log formats, and checks that TLS and log files are usable.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let figment =
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("RPROXY_").filter_map(|k| {
                let key = k.as_str().to_ascii_lowercase().replace('_', "-");
                GLOBAL_KEYS.contains(&key.as_str()).then(|| key.into())
            }));
    // Syntax errors stop here: there is no tree to look further into.
    let mut tree: Value = figment
        .extract()
        .map_err(|e| ConfigErrors(figment_errors(&file, e)))?;
    let (parsed, mut errors) = typed(&file, &mut tree);
    let Some(parsed) = parsed else {
        return Err(ConfigErrors(errors));
    };
    // With type errors too, what remains is still checked, so one run shows everything.
    match crate::validate::validate(parsed, path) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// Only `control-socket` of `path` (with its `RPROXY_CONTROL_SOCKET` override), for `rproxy
/// ctl`: the rest of the file is not validated, so `ctl reload --wait` reaches the master even
/// when the file is broken (the master then reports what is wrong). `Ok(None)`: disabled.
pub fn control_socket(path: &Path) -> Result<Option<std::path::PathBuf>, String> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(rename = "control-socket")]
        control_socket: Option<String>,
    }
    let figment =
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("RPROXY_").filter_map(|k| {
                let key = k.as_str().to_ascii_lowercase().replace('_', "-");
                (key == "control-socket").then(|| key.into())
            }));
    let only: Only = figment
        .extract()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let p = only
        .control_socket
        .unwrap_or_else(|| crate::schema::DEFAULT_CONTROL_SOCKET.to_string());
    Ok((!p.is_empty()).then(|| std::path::PathBuf::from(p)))
}

/// Most type errors and unknown keys a file may hold, before a single one is reported.
const MAX_TYPE_ERRORS: usize = 64;

/// Deserialize the merged tree into the file schema. serde stops at the first unknown key or wrong
/// type, so each such key is recorded and removed from the tree (its default then applies) and
/// deserialization starts again, until it succeeds: every such error is reported at once.
/// Returns the configuration without the offending keys (when one could be made) and the errors.
fn typed(file: &str, tree: &mut Value) -> (Option<File>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    loop {
        let err = match tree.deserialize::<File>() {
            Ok(c) => return (Some(c), errors),
            Err(e) => e,
        };
        let offending = offending_path(&err);
        errors.extend(figment_errors(file, err));
        let removed = offending.is_some_and(|p| remove(tree, &p));
        if !removed || errors.len() >= MAX_TYPE_ERRORS {
            return (None, errors);
        }
    }
}

/// The key to take out of the tree so deserialization can go on past `e`.
fn offending_path(e: &figment::Error) -> Option<Vec<String>> {
    let mut path = e.path.clone();
    match &e.kind {
        figment::error::Kind::UnknownField(name, _) if path.last() != Some(name) => {
            path.push(name.clone());
        }
        // Nothing to remove for a missing key.
        figment::error::Kind::MissingField(_) => return None,
        _ => {}
    }
    (!path.is_empty()).then_some(path)
}

/// Remove the dictionary entry at `path`; false when there is none.
fn remove(tree: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for p in parents {
        node = match node {
            Value::Dict(_, d) => match d.get_mut(p) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(_, a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Dict(_, d) => d.remove(last).is_some(),
        _ => false,
    }
}

fn figment_errors(file: &str, err: figment::Error) -> Vec<ConfigError> {
    err.into_iter()
        .map(|e| {
            let origin = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(figment::Source::File(p)) => p.display().to_string(),
                Some(_) => "environment".to_string(),
                None => file.to_string(),
            };
            let mut key = key_path(&e.path);
            let reason = match &e.kind {
                figment::error::Kind::UnknownField(name, _) => {
                    // figment's path usually ends with the unknown name already.
                    key = if e.path.last() == Some(name) {
                        key
                    } else if key.is_empty() {
                        name.clone()
                    } else {
                        format!("{key}.{name}")
                    };
                    "unknown key".to_string()
                }
                figment::error::Kind::MissingField(name) => {
                    key = if key.is_empty() {
                        name.to_string()
                    } else {
                        format!("{key}.{name}")
                    };
                    "required key is missing".to_string()
                }
                figment::error::Kind::UnknownVariant(found, expected) => {
                    format!(
                        "unknown value `{found}` (expected one of: {})",
                        expected.join(", ")
                    )
                }
                // A syntax error quotes the offending line of the file: never shown, since
                // `-t -c` may be pointed at a file only root can read (only where it is).
                figment::error::Kind::Message(m) => {
                    m.lines().next().unwrap_or("syntax error").to_string()
                }
                kind => kind.to_string(),
            };
            let reason = if origin == "environment" {
                format!("{reason} (from an RPROXY_ environment variable)")
            } else {
                reason
            };
            ConfigError {
                file: origin,
                key,
                reason,
            }
        })
        .collect()
}

/// `["server", "0", "port"]` -> `server[0].port`.
pub(crate) fn key_path(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() {
            out.push('[');
            out.push_str(p);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    out
}
