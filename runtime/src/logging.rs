//! JSON logs on stderr, one object per line; the level comes from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global JSON logger at `info`. Safe to call more than once (later calls do nothing).
pub fn init() {
    init_with_default("info");
}

/// Installs the global JSON logger; `RUST_LOG` wins over `default_level`.
pub fn init_with_default(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}
