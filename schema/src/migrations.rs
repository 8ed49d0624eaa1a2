//! Schema migrations, applied in order by `tally-aggregator migrate` and recorded in
//! `tally_migrations`. Each file holds statements separated by `;` at line ends, and must run
//! on ClickHouse 18.16 and on current ClickHouse.

/// One migration: a version (its order), a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The statements of the file, without comments or blanks.
    pub fn statements(&self) -> Vec<String> {
        split_statements(self.sql)
    }
}

/// Splits SQL text on `;` at the end of a line, dropping `--` comment lines.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events_and_sessions",
        sql: include_str!("../migrations/0001_events_and_sessions.sql"),
    },
    Migration {
        version: 2,
        name: "usage_rollups",
        sql: include_str!("../migrations/0002_usage_rollups.sql"),
    },
    Migration {
        version: 3,
        name: "quotas",
        sql: include_str!("../migrations/0003_quotas.sql"),
    },
    Migration {
        version: 4,
        name: "session_models_cap",
        sql: include_str!("../migrations/0004_session_models_cap.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_files_split() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for m in MIGRATIONS {
            assert!(!m.statements().is_empty(), "{} has no statements", m.name);
        }
    }

    #[test]
    fn splits_on_line_end_semicolons_only() {
        let sql = "-- note\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Log;\n\nSELECT 1;";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE TABLE a (x String DEFAULT ';')\nENGINE = Log",
                "SELECT 1"
            ]
        );
    }
}
