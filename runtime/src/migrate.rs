//! Applies [`tally_schema::migrations::MIGRATIONS`] in order, once each, recording them in
//! `tally_migrations`.

use crate::clickhouse::ClickHouseConfig;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_schema::migrations::{Migration, MIGRATIONS};

#[derive(Debug, Row, Serialize, Deserialize)]
struct AppliedMigration {
    version: u32,
    name: String,
    applied_at: u32,
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS tally_migrations \
    (version UInt32, name String, applied_at DateTime) \
    ENGINE = ReplacingMergeTree() ORDER BY version";

/// Creates the database if needed and applies every migration not yet recorded.
/// Returns the versions applied by this call.
pub async fn run(config: &ClickHouseConfig) -> anyhow::Result<Vec<u32>> {
    // The database name cannot be a bound value; refuse anything but a plain identifier.
    if !is_identifier(&config.database) {
        anyhow::bail!(
            "clickhouse.database {:?} must be letters, digits and underscores",
            config.database
        );
    }
    config
        .server_client()
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            config.database
        ))
        .execute()
        .await?;
    let client = config.client();
    client.query(CREATE_LEDGER).execute().await?;
    let applied: Vec<u32> = client
        .query("SELECT DISTINCT version FROM tally_migrations")
        .fetch_all()
        .await?;

    let mut newly = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        apply(&client, migration).await?;
        newly.push(migration.version);
    }
    Ok(newly)
}

async fn apply(client: &clickhouse::Client, migration: &Migration) -> anyhow::Result<()> {
    for statement in migration.statements() {
        client.query(&statement).execute().await.map_err(|err| {
            anyhow::anyhow!(
                "migration {} ({}) failed: {err}",
                migration.version,
                migration.name
            )
        })?;
    }
    let mut insert = client
        .insert::<AppliedMigration>("tally_migrations")
        .await?;
    insert
        .write(&AppliedMigration {
            version: migration.version,
            name: migration.name.to_owned(),
            applied_at: u32::try_from(chrono_now_secs()).unwrap_or(0),
        })
        .await?;
    insert.end().await?;
    tracing::info!(
        version = migration.version,
        name = migration.name,
        "applied migration"
    );
    Ok(())
}

fn chrono_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}
