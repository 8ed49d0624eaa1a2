//! Configuration: a TOML file, then `TALLY_…` environment variables over it.
//!
//! Nested keys use a double underscore: `TALLY_KAFKA__BROKERS=127.0.0.1:9092` sets
//! `[kafka] brokers`. Every field has a default, so a missing file means the defaults.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "TALLY_";

/// Loads `T` from its defaults, then the TOML file (if given), then the environment.
pub fn load<T: Serialize + DeserializeOwned + Default>(file: Option<&Path>) -> anyhow::Result<T> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    figment
        .extract()
        .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))
}
