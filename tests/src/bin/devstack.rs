//! `tally-devstack`: a private Tally for a test suite in any language.
//!
//! ```text
//! tally-devstack --spec '{"aggregator": true, "projects": ["a", "b"]}'
//! ```
//!
//! Starts the real `tally-aggregator` and `tally-ingest` (built beside this binary) on free
//! loopback ports, on the local stack's Kafka and ClickHouse with their own topics, database,
//! consumer group and freshly generated keys. The spec's fields are documented on
//! `tally_tests::devstack::spec::Spec`; `--spec-file` reads it from a file.
//!
//! Once both services are ready it prints one JSON line on stdout:
//! `ingest_url`, `aggregator_url` (null without the aggregator), `brokers`, `clickhouse`,
//! `database`, `group_id`, `partitions`, `topics` (`events_topic`, `dead_letter_topic`,
//! `quota_topic`, `alerts_topic`), `projects` (id → `keys` by scope: `ingest`, `read`,
//! `admin`, `all`), `ingest_config` (the settings ingest runs with, as `--print-config` shows
//! them) and `log_dir`. If it cannot start, it prints `{"error": "..."}` and exits with 1.
//!
//! Then it reads commands on stdin, one per line, and answers each with one JSON line
//! (`{"ok": true}` or `{"ok": false, "error": "..."}`):
//! - `kill ingest` / `kill aggregator`: SIGKILL;
//! - `stop ingest` / `stop aggregator`: SIGTERM, a graceful shutdown;
//! - `start ingest` / `start aggregator`: start it again on the same port, answer once ready;
//! - `describe`: the startup line again.
//!
//! When stdin closes (so also when the suite that started it dies), on `exit`, SIGTERM or
//! SIGINT, it stops both services, deletes the topics and the consumer group, drops the
//! database and removes its log folder (kept when a service failed), then exits: 0 when
//! every service ended cleanly, 1 otherwise.

use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use tally_tests::devstack::spec::Spec;
use tally_tests::devstack::{DevStack, Which};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(name = "tally-devstack")]
struct Cli {
    /// The stack to start, as JSON (`{}` when neither this nor `--spec-file` is given).
    #[arg(long, conflicts_with = "spec_file")]
    spec: Option<String>,
    /// A file holding the spec as JSON.
    #[arg(long)]
    spec_file: Option<PathBuf>,
}

fn read_spec(cli: &Cli) -> anyhow::Result<Spec> {
    let text = match (&cli.spec, &cli.spec_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)?,
        (None, None) => "{}".into(),
    };
    serde_json::from_str(&text).map_err(|err| anyhow::anyhow!("invalid spec: {err}"))
}

fn say(line: serde_json::Value) {
    println!("{line}");
}

enum Command {
    Start(Which),
    Stop(Which),
    Kill(Which),
    Describe,
    Exit,
}

fn parse(line: &str) -> anyhow::Result<Command> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let which = |name: &str| match name {
        "ingest" => Ok(Which::Ingest),
        "aggregator" => Ok(Which::Aggregator),
        other => anyhow::bail!("unknown service {other:?}: ingest or aggregator"),
    };
    Ok(match words.as_slice() {
        ["start", name] => Command::Start(which(name)?),
        ["stop", name] => Command::Stop(which(name)?),
        ["kill", name] => Command::Kill(which(name)?),
        ["describe"] => Command::Describe,
        ["exit"] => Command::Exit,
        _ => anyhow::bail!(
            "unknown command {line:?}: start|stop|kill ingest|aggregator, describe or exit"
        ),
    })
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let mut stack = match read_spec(&cli) {
        Ok(spec) => match DevStack::start(spec).await {
            Ok(stack) => stack,
            Err(err) => {
                say(json!({"error": format!("{err:#}")}));
                std::process::exit(1);
            }
        },
        Err(err) => {
            say(json!({"error": format!("{err:#}")}));
            std::process::exit(1);
        }
    };
    say(stack.describe());

    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        say(json!({"error": "cannot watch signals"}));
        stack.stop().await;
        std::process::exit(1);
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let Ok(Some(line)) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let done = match parse(&line) {
            Ok(Command::Exit) => break,
            Ok(Command::Describe) => {
                say(stack.describe());
                continue;
            }
            Ok(Command::Start(which)) => stack.start_service(which).await,
            Ok(Command::Stop(which)) => stack.stop_service(which).await,
            Ok(Command::Kill(which)) => stack.kill_service(which),
            Err(err) => Err(err),
        };
        match done {
            Ok(()) => say(json!({"ok": true})),
            Err(err) => say(json!({"ok": false, "error": format!("{err:#}")})),
        }
    }
    let clean = stack.stop().await;
    std::process::exit(if clean { 0 } else { 1 });
}
