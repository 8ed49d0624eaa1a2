//! What a dev stack should be: the JSON a suite hands to `tally-devstack --spec`. Every field
//! is optional; `{}` is a stack of ingest and the aggregator with projects `a` and `b`.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A private Tally to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spec {
    /// Run `tally-aggregator` (it folds events into ClickHouse). Default true.
    pub aggregator: bool,
    /// Without the aggregator, still apply the ClickHouse migrations so the read routes
    /// answer. Default true.
    pub migrate: bool,
    /// The projects to configure, each with a fresh key per scope: ids (`"a"`) or
    /// `{"id": "b", "redact": {"drop_content": true}}`. Default `["a", "b"]`.
    pub projects: Vec<ProjectSpec>,
    /// Partitions of the private event topic. Default 3.
    pub partitions: i32,
    /// Kafka bootstrap servers; default `TALLY_TEST_KAFKA`, else `127.0.0.1:9092`.
    pub brokers: Option<String>,
    /// ClickHouse HTTP URL; default `TALLY_TEST_CLICKHOUSE`, else `http://127.0.0.1:8123`.
    pub clickhouse: Option<String>,
    /// Config files both services read before the generated one (e.g.
    /// `deploy/local/quota.toml`); the generated file's fields win.
    pub config_files: Vec<PathBuf>,
    /// Fields laid over both services' generated config, nested tables merged key by key.
    pub config: Value,
    /// Fields laid over ingest's generated config, after `config`.
    pub ingest_config: Value,
    /// Fields laid over the aggregator's generated config, after `config`.
    pub aggregator_config: Value,
    /// Environment of both services. They start with every `TALLY_` and `OTEL_` variable
    /// removed, so their settings are the ones written here; `RUST_LOG` defaults to `info`.
    pub env: BTreeMap<String, String>,
    /// Seconds each service has to answer `/readyz` with 200. Default 60.
    pub ready_timeout_secs: f64,
    /// Seconds of graceful shutdown (SIGTERM) before a service is killed. Default 10.
    pub stop_timeout_secs: f64,
    /// Where the configs and logs go; default a temporary folder, removed at exit unless a
    /// service failed (its path is then in the error).
    pub log_dir: Option<PathBuf>,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            aggregator: true,
            migrate: true,
            projects: vec![ProjectSpec::Id("a".into()), ProjectSpec::Id("b".into())],
            partitions: 3,
            brokers: None,
            clickhouse: None,
            config_files: Vec::new(),
            config: Value::Null,
            ingest_config: Value::Null,
            aggregator_config: Value::Null,
            env: BTreeMap::new(),
            ready_timeout_secs: 60.0,
            stop_timeout_secs: 10.0,
            log_dir: None,
        }
    }
}

/// A project: its id alone, or its id and its redaction settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProjectSpec {
    Id(String),
    WithOptions {
        id: String,
        #[serde(default)]
        redact: Value,
    },
}

impl ProjectSpec {
    pub fn id(&self) -> &str {
        match self {
            ProjectSpec::Id(id) | ProjectSpec::WithOptions { id, .. } => id,
        }
    }

    pub fn redact(&self) -> Option<&Value> {
        match self {
            ProjectSpec::WithOptions { redact, .. } if !redact.is_null() => Some(redact),
            _ => None,
        }
    }
}

/// `base` with `overlay` laid over it: objects merged key by key, anything else replaced.
/// A null overlay leaves `base` as it is.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(base), Value::Object(overlay)) => {
            for (name, value) in overlay {
                match base.get_mut(name) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        deep_merge(existing, value)
                    }
                    _ => {
                        base.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_spec_is_both_services_and_two_projects() {
        let spec: Spec = serde_json::from_value(json!({})).expect("spec");
        assert!(spec.aggregator && spec.migrate);
        let ids: Vec<&str> = spec.projects.iter().map(ProjectSpec::id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(spec.partitions, 3);
    }

    #[test]
    fn projects_are_ids_or_objects_with_redaction() {
        let spec: Spec = serde_json::from_value(json!({
            "projects": ["a", {"id": "b", "redact": {"drop_content": true}}]
        }))
        .expect("spec");
        assert_eq!(spec.projects[0].redact(), None);
        assert_eq!(spec.projects[1].id(), "b");
        assert_eq!(
            spec.projects[1].redact(),
            Some(&json!({"drop_content": true}))
        );
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let err = serde_json::from_value::<Spec>(json!({"agregator": false}))
            .expect_err("a misspelt field is refused");
        assert!(err.to_string().contains("agregator"), "{err}");
    }

    #[test]
    fn overlays_merge_tables_and_replace_values() {
        let mut base = json!({"kafka": {"brokers": "x", "events_topic": "t"}, "workers": 2});
        deep_merge(
            &mut base,
            &json!({"kafka": {"brokers": "y"}, "workers": 4, "limits": {"max_batch_events": 10}}),
        );
        assert_eq!(
            base,
            json!({"kafka": {"brokers": "y", "events_topic": "t"}, "workers": 4,
                   "limits": {"max_batch_events": 10}})
        );
        let before = base.clone();
        deep_merge(&mut base, &Value::Null);
        assert_eq!(base, before);
    }
}
