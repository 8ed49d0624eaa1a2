//! Configuration: TOML files, then `TALLY_…` environment variables over them.
//!
//! Nested keys use a double underscore: `TALLY_KAFKA__BROKERS=127.0.0.1:9092` sets
//! `[kafka] brokers`. Every field has a default, so no file means the defaults. Several files
//! merge in order, a later one over an earlier one (`--config ingest.toml --config quota.toml`:
//! the `[quota]` section both services read lives in one file).

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "TALLY_";

/// `TALLY_CONFIG` names the files themselves (the binaries' `--config`); it is no setting.
const NOT_SETTINGS: [&str; 1] = ["config"];

/// Loads `T` from its defaults, then each TOML file in order, then the environment.
pub fn load<T: Serialize + DeserializeOwned + Default>(files: &[PathBuf]) -> anyhow::Result<T> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    for path in files {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&NOT_SETTINGS).split("__"));
    figment
        .extract()
        .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))
}

/// Fields of `defaults` (a configuration's `Default`, as JSON) that the annotated `files`
/// leave out, as dotted paths. A field whose default is empty (`None`, an empty table or
/// list) may be shown in a comment instead, its name at the start of a comment line;
/// `data_tables` (`quota.plans`, …) are keyed by the user's names, so only their presence
/// is asked.
pub fn undocumented(
    defaults: &Value,
    files: &[PathBuf],
    data_tables: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut figment = Figment::new();
    let mut text = String::new();
    for path in files {
        figment = figment.merge(Toml::file(path));
        text.push_str(&std::fs::read_to_string(path)?);
    }
    let written: Value = figment.extract()?;
    let commented: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .map(str::trim_start)
        .collect();
    let mut missing = Vec::new();
    walk(
        defaults,
        &written,
        "",
        &commented,
        data_tables,
        &mut missing,
    );
    Ok(missing)
}

fn walk(
    defaults: &Value,
    written: &Value,
    prefix: &str,
    commented: &[&str],
    data_tables: &[&str],
    missing: &mut Vec<String>,
) {
    let Value::Object(fields) = defaults else {
        return;
    };
    for (name, default) in fields {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match written.get(name) {
            Some(value) if default.is_object() && !data_tables.contains(&path.as_str()) => {
                walk(default, value, &path, commented, data_tables, missing)
            }
            Some(_) => {}
            None => {
                let empty = match default {
                    Value::Null => true,
                    Value::Object(map) => map.is_empty(),
                    Value::Array(items) => items.is_empty(),
                    _ => false,
                };
                let shown = |l: &&str| {
                    l.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with(['=', ']']))
                        || (l.starts_with('[') && l.trim_start_matches('[').starts_with(&path))
                };
                if !(empty && commented.iter().any(shown)) {
                    missing.push(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        workers: u32,
    }

    fn file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("tally-config-{}.toml", std::process::id()));
        let path = path.with_extension(format!("{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn later_files_win_and_tally_config_is_no_setting() {
        let a = file("listen = \"a\"\nworkers = 1\n");
        let b = file("workers = 2\n# a comment\n");
        std::env::set_var("TALLY_CONFIG", "whatever.toml");
        let sample: Sample = load(&[a, b]).unwrap();
        std::env::remove_var("TALLY_CONFIG");
        assert_eq!(
            sample,
            Sample {
                listen: "a".into(),
                workers: 2
            }
        );
        let err = load::<Sample>(&[PathBuf::from("/nonexistent/tally.toml")]).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn a_field_missing_from_the_files_is_named() {
        let defaults = json!({
            "listen": "x",
            "secret": null,
            "extra": {},
            "kafka": {"brokers": "b", "acks": "all"},
            "quota": {"plans": {"free": {"limit": 1}}},
        });
        let f = file("listen = \"y\"\n# secret = \"…\"\n[kafka]\nbrokers = \"c\"\n[quota.plans.mine]\nlimit = 2\n");
        let missing = undocumented(&defaults, std::slice::from_ref(&f), &["quota.plans"]).unwrap();
        assert_eq!(missing, ["extra", "kafka.acks"]);
        let missing = undocumented(&defaults, &[f], &[]).unwrap();
        assert!(
            missing.contains(&"quota.plans.free".to_owned()),
            "{missing:?}"
        );
    }
}
