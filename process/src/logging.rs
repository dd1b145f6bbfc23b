//! Logging set up the same way by every binary: `RONDO_LOG` filters
//! (`info` by default), `log_format` chooses text or one JSON object per
//! line, and text carries ANSI colours only on a terminal (never in a log
//! file or a container's log, nor with `NO_COLOR` set).

use std::io::IsTerminal;

use serde::Deserialize;

/// How log lines are written (`log_format` in a service's configuration).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for a log collector).
    Json,
}

/// Installs the process's tracing subscriber, writing to standard output.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RONDO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_ansi(false)
            .init(),
        LogFormat::Text => builder.with_ansi(colours()).init(),
    }
}

/// Whether text lines may carry colour codes.
fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
