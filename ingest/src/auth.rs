//! Projects and their API keys. Keys are configured and kept only as SHA-256 hashes; a request
//! presents `Authorization: Bearer <key>` and gets its project if the key's scope allows the route.

use crate::error::ApiError;
use actix_web::http::header;
use actix_web::HttpRequest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Post events (`POST /v1/batch`).
    Ingest,
    /// Read sessions and metrics.
    Read,
    /// Administer the project.
    Admin,
}

impl Scope {
    fn action(self) -> &'static str {
        match self {
            Self::Ingest => "post events",
            Self::Read => "read data",
            Self::Admin => "administer",
        }
    }
}

/// One project and its keys, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project's id: letters, digits, `-` and `_`.
    pub id: String,
    pub keys: Vec<KeyConfig>,
    /// What ingest removes from this project's events before they leave it.
    #[serde(default)]
    pub redact: Redaction,
}

/// Redaction applied by ingest, before anything is published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redaction {
    /// Drop every event's `content`.
    pub drop_content: bool,
    /// Replace `account_id` with the hex HMAC-SHA256 of `project_id:account_id` under
    /// `account_id_secret`, so usage is still per account but the account's own id never
    /// reaches Kafka or ClickHouse, and guessable ids cannot be recovered from the hashes.
    /// Every route that takes an `account_id` (usage, quota checks, read filters) hashes it
    /// the same way.
    pub hash_account_id: bool,
    /// The project's secret key of that HMAC, at least 16 characters; required with
    /// `hash_account_id`. Changing it starts every account over under a new id.
    pub account_id_secret: String,
}

/// Shortest `account_id_secret` accepted.
pub const MIN_ACCOUNT_ID_SECRET_CHARS: usize = 16;

impl Redaction {
    pub fn apply(&self, project_id: &str, event: &mut tally_schema::Event) {
        if self.drop_content {
            event.content = None;
        }
        if self.hash_account_id {
            event.account_id = self.account_id(project_id, &event.account_id);
        }
    }

    /// The account id as it is stored: hashed when the project hashes account ids.
    pub fn account_id(&self, project_id: &str, account_id: &str) -> String {
        if self.hash_account_id {
            keyed_hash(
                &self.account_id_secret,
                &format!("{project_id}:{account_id}"),
            )
        } else {
            account_id.to_owned()
        }
    }
}

/// Hex HMAC-SHA256 of `message` under `secret`.
pub fn keyed_hash(secret: &str, message: &str) -> String {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
}

/// The hex SHA-256 of a key, as stored in config.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The project a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub project_id: String,
    /// The key's hash: identifies the key (for rate limits) without holding it.
    pub key_id: String,
    pub redact: Redaction,
}

struct KeyEntry {
    project_id: String,
    scopes: Vec<Scope>,
    redact: Redaction,
}

/// Key hash → project and scopes.
pub struct KeyRing {
    keys: HashMap<String, KeyEntry>,
}

impl KeyRing {
    pub fn new(projects: &[ProjectConfig]) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for project in projects {
            let valid_id = !project.id.is_empty()
                && project.id.len() <= 64
                && project
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_id {
                anyhow::bail!(
                    "project id {:?} must be 1-64 letters, digits, '-' or '_'",
                    project.id
                );
            }
            if project.redact.hash_account_id
                && project.redact.account_id_secret.chars().count() < MIN_ACCOUNT_ID_SECRET_CHARS
            {
                anyhow::bail!(
                    "project {} hashes account ids: set redact.account_id_secret to a secret of at least {MIN_ACCOUNT_ID_SECRET_CHARS} characters",
                    project.id
                );
            }
            for key in &project.keys {
                let hash = key.sha256.to_ascii_lowercase();
                if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                    anyhow::bail!("a key of project {} is not a hex SHA-256 hash", project.id);
                }
                let entry = KeyEntry {
                    project_id: project.id.clone(),
                    scopes: key.scopes.clone(),
                    redact: project.redact.clone(),
                };
                if keys.insert(hash, entry).is_some() {
                    anyhow::bail!("a key hash is configured twice");
                }
            }
        }
        Ok(Self { keys })
    }

    /// Authenticates the request's bearer key and checks it may act in `scope`.
    pub fn authorize(&self, request: &HttpRequest, scope: Scope) -> Result<Principal, ApiError> {
        let key = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let key_id = hash_key(key);
        let entry = self.keys.get(&key_id).ok_or(ApiError::Unauthorized)?;
        if !entry.scopes.contains(&scope) {
            return Err(ApiError::Forbidden(scope.action()));
        }
        Ok(Principal {
            project_id: entry.project_id.clone(),
            key_id,
            redact: entry.redact.clone(),
        })
    }
}

#[cfg(test)]
mod keyed_hash_tests {
    use super::*;

    #[test]
    fn keyed_hash_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed_hash("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hashing_needs_a_secret() {
        let project = |secret: &str| ProjectConfig {
            id: "p".into(),
            keys: Vec::new(),
            redact: Redaction {
                drop_content: false,
                hash_account_id: true,
                account_id_secret: secret.into(),
            },
        };
        let err = KeyRing::new(&[project("short")]).err().expect("refused");
        assert!(err.to_string().contains("account_id_secret"), "{err}");
        assert!(KeyRing::new(&[project("sixteen-chars-ok")]).is_ok());
    }
}
