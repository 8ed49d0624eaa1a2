//! Connecting to ClickHouse over HTTP with the `clickhouse` crate.

use serde::{Deserialize, Serialize};

/// Where ClickHouse is and which database Tally uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of the server.
    pub url: String,
    /// Database holding Tally's tables; `migrate` creates it when missing.
    pub database: String,
    pub user: String,
    pub password: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "tally".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

impl ClickHouseConfig {
    /// A client bound to the configured database. Row-type validation against the server's
    /// schema needs `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks, so it is off
    /// until [`connect`](Self::connect) has seen a server new enough.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client()
            .with_database(&self.database)
            .with_validation(false)
    }

    /// A client without a database, for `CREATE DATABASE` and `SELECT version()`.
    pub fn server_client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false)
    }

    /// A client for the configured database, with validation on where the server supports it.
    pub async fn connect(&self) -> Result<clickhouse::Client, clickhouse::error::Error> {
        let version = server_version(&self.server_client()).await?;
        Ok(self.client().with_validation(supports_validation(&version)))
    }
}

/// `SELECT version()`, e.g. `"18.16.1"`.
pub async fn server_version(
    client: &clickhouse::Client,
) -> Result<String, clickhouse::error::Error> {
    client.query("SELECT version()").fetch_one::<String>().await
}

/// The crate's schema validation reads `RowBinaryWithNamesAndTypes`, which servers from
/// 24.x on produce with the type names it expects.
pub fn supports_validation(version: &str) -> bool {
    major_version(version).is_some_and(|major| major >= 24)
}

pub fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Most ids in one lookup query.
pub const LOOKUP_MAX_IDS: usize = 10_000;
/// Most bytes of ids in one lookup query. Quoting at most doubles them and adds three bytes
/// an id, so a lookup stays under 170 KiB, below ClickHouse's default `max_query_size` of
/// 256 KiB.
pub const LOOKUP_MAX_BYTES: usize = 64 * 1024;

/// Splits ids into runs within [`LOOKUP_MAX_IDS`] and [`LOOKUP_MAX_BYTES`]; an id larger than
/// the byte bound goes alone. Both services chunk every lookup by id list with it.
pub fn lookup_chunks<T: AsRef<str>>(ids: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        if i > start
            && (i - start >= LOOKUP_MAX_IDS || bytes + id.as_ref().len() > LOOKUP_MAX_BYTES)
        {
            chunks.push(&ids[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += id.as_ref().len();
    }
    if start < ids.len() {
        chunks.push(&ids[start..]);
    }
    chunks
}

/// The exception code of a ClickHouse error answer (`Code: 62, e.displayText() = …` on
/// 18.16, `Code: 62. DB::Exception: …` on current versions); `None` for any other error.
pub fn exception_code(err: &clickhouse::error::Error) -> Option<u32> {
    let clickhouse::error::Error::BadResponse(text) = err else {
        return None;
    };
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_bounded_in_ids_and_bytes() {
        let emoji: String = "\u{1F600}".repeat(124);
        let ids: Vec<String> = (0..1000).map(|i| format!("{emoji}{i}")).collect();
        let chunks = lookup_chunks(&ids);
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(chunk.iter().map(String::len).sum::<usize>() <= LOOKUP_MAX_BYTES);
        }
        assert_eq!(chunks.concat(), ids);
        let small: Vec<String> = (0..25_000).map(|_| "x".to_owned()).collect();
        let sizes: Vec<usize> = lookup_chunks(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
        assert!(lookup_chunks::<String>(&[]).is_empty());
    }

    #[test]
    fn exception_codes_of_old_and_new_servers() {
        let answer = |text: &str| clickhouse::error::Error::BadResponse(text.into());
        let old = "Code: 62, e.displayText() = DB::Exception: Syntax error";
        assert_eq!(exception_code(&answer(old)), Some(62));
        let new = "Code: 159. DB::Exception: Timeout exceeded. (TIMEOUT_EXCEEDED)";
        assert_eq!(exception_code(&answer(new)), Some(159));
        assert_eq!(exception_code(&answer("502 Bad Gateway")), None);
        assert_eq!(exception_code(&clickhouse::error::Error::TimedOut), None);
    }

    #[test]
    fn validation_follows_the_server_version() {
        assert!(!supports_validation("18.16.1"));
        assert!(supports_validation("24.8.1.1"));
        assert!(supports_validation("26.9.1"));
        assert!(!supports_validation("garbage"));
    }
}
