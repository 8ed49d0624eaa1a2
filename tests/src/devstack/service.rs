//! One service of a dev stack as a child process: its config file, its port (kept across
//! restarts, so a client pointed at it finds it again), its log and its readiness.

use crate::processes::service_command;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often a starting service is asked whether it is ready.
const READY_POLL: Duration = Duration::from_millis(200);
/// How long a started service must stay up before its port counts as taken by it: a port
/// lost to another process between choosing and binding shows as an early exit.
const BIND_GRACE: Duration = Duration::from_secs(2);
/// Attempts at a free port before giving up.
const PORT_ATTEMPTS: usize = 3;

pub struct Service {
    /// The binary: `tally-ingest` or `tally-aggregator`.
    pub name: &'static str,
    /// Arguments after the config files (`run` for the aggregator).
    args: Vec<String>,
    /// The generated config, without `listen`.
    config: Value,
    /// Files read before the generated one.
    config_files: Vec<PathBuf>,
    env: BTreeMap<String, String>,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Service {
    pub fn new(
        name: &'static str,
        args: &[&str],
        config: Value,
        config_files: &[PathBuf],
        env: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Self {
        Self {
            name,
            args: args.iter().map(|a| a.to_string()).collect(),
            config,
            config_files: config_files.to_vec(),
            env: env.clone(),
            dir: dir.to_path_buf(),
            port: 0,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The config files in the order the service reads them.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = self.config_files.clone();
        files.push(self.dir.join(format!("{}.toml", self.name)));
        files
    }

    /// The command running the binary on this service's files, with its environment.
    pub fn command(&self) -> Command {
        let mut command = service_command(self.name);
        for (var, _) in std::env::vars_os() {
            let var_text = var.to_string_lossy();
            if var_text.starts_with("TALLY_") || var_text.starts_with("OTEL_") {
                command.env_remove(&var);
            }
        }
        command.env("RUST_LOG", "info").envs(&self.env);
        for file in self.files() {
            command.arg("--config").arg(file);
        }
        command
    }

    /// Starts the service and waits until `/readyz` answers 200. The first start picks a free
    /// port; later ones reuse it.
    pub async fn start(&mut self, ready_timeout: Duration) -> anyhow::Result<()> {
        anyhow::ensure!(!self.running(), "{} is already running", self.name);
        let attempts = if self.port == 0 { PORT_ATTEMPTS } else { 1 };
        for attempt in 1..=attempts {
            if self.port == 0 || attempt > 1 {
                self.port = crate::private_stack::free_port();
            }
            self.spawn()?;
            let deadline = Instant::now() + BIND_GRACE;
            while Instant::now() < deadline && self.running() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if self.running() {
                return self.wait_ready(ready_timeout).await;
            }
            let tail = self.log_tail(40);
            if !tail.to_lowercase().contains("in use") || attempt == attempts {
                anyhow::bail!(
                    "{} exited at start; log {}:\n{tail}",
                    self.name,
                    self.log_path().display()
                );
            }
        }
        unreachable!("the last attempt returns or fails")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut config = self.config.clone();
        if let Value::Object(fields) = &mut config {
            fields.insert("listen".into(), format!("127.0.0.1:{}", self.port).into());
        }
        let path = self.dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, toml::to_string(&config)?)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = self
            .command()
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/readyz", self.url());
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            anyhow::ensure!(
                self.running(),
                "{} exited before it was ready; log {}:\n{}",
                self.name,
                self.log_path().display(),
                self.log_tail(40)
            );
            match http.get(&url).send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => last = format!("{}", answer.status()),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(READY_POLL).await;
        }
        anyhow::bail!(
            "{} not ready after {timeout:?} ({last}); log {}:\n{}",
            self.name,
            self.log_path().display(),
            self.log_tail(40)
        )
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL: no shutdown, no flush, requests in flight cut off.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. True when the service ended by itself, cleanly.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// The last `lines` lines of the service's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
