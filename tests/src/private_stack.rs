//! A private Kafka broker or ClickHouse server for a test that stops it, started by the
//! project's own stack script with its own folder and ports, so the shared stack is untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf()
}

/// One part of the stack (`kafka` or `clickhouse`) run privately. Stopped when dropped.
pub struct PrivatePart {
    part: &'static str,
    state_dir: PathBuf,
    ports: Vec<(&'static str, u16)>,
}

impl PrivatePart {
    pub fn kafka() -> Self {
        Self::new(
            "kafka",
            &["TALLY_KAFKA_PORT", "TALLY_KAFKA_CONTROLLER_PORT"],
        )
    }

    pub fn clickhouse() -> Self {
        Self::new(
            "clickhouse",
            &["TALLY_CLICKHOUSE_HTTP_PORT", "TALLY_CLICKHOUSE_TCP_PORT"],
        )
    }

    fn new(part: &'static str, port_vars: &[&'static str]) -> Self {
        let state_dir =
            std::env::temp_dir().join(format!("tally-{part}-{}", uuid::Uuid::new_v4().simple()));
        let ports = port_vars.iter().map(|var| (*var, free_port())).collect();
        Self {
            part,
            state_dir,
            ports,
        }
    }

    /// The main port: Kafka's broker port or ClickHouse's HTTP port.
    pub fn port(&self) -> u16 {
        self.ports[0].1
    }

    pub fn start(&self) {
        self.stack("start");
    }

    pub fn stop(&self) {
        self.stack("stop");
    }

    fn stack(&self, action: &str) {
        let root = repo_root();
        let shared_state = std::env::var("TALLY_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".tally"));
        let mut command = Command::new("bash");
        command
            .arg(root.join("deploy/local/stack.sh"))
            .args([action, self.part])
            .env("TALLY_STATE_DIR", &self.state_dir)
            .env("TALLY_KAFKA_LIBS", shared_state.join("kafka-libs"));
        for (var, port) in &self.ports {
            command.env(var, port.to_string());
        }
        // What stack.sh and the servers it starts say goes to a file, not into the test
        // output; a failure shows its end.
        let _ = std::fs::create_dir_all(&self.state_dir);
        let log_path = self.state_dir.join("stack.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("stack log");
        let status = command
            .stdout(log.try_clone().expect("stack log"))
            .stderr(log)
            .status()
            .expect("stack.sh runs");
        if !status.success() {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "stack.sh {action} {} failed:\n{}",
                self.part,
                tail.join("\n")
            );
        }
    }
}

impl Drop for PrivatePart {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
