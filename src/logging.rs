//! The manager's own log: `simplelog` to the terminal at `LOG_LEVEL` (default `info`).
//! Worker output never comes here; it goes to the per-worker files (see `pool::process`).

use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

/// Parses `LOG_LEVEL`; an unknown value is reported and `info` used, since refusing to start
/// over a log level would be out of proportion.
pub fn init(level: Option<&str>) {
    let (filter, unknown) = match level.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("info") => (LevelFilter::Info, None),
        Some("error") => (LevelFilter::Error, None),
        Some("warn") => (LevelFilter::Warn, None),
        Some("debug") => (LevelFilter::Debug, None),
        Some("trace") => (LevelFilter::Trace, None),
        Some(other) => (LevelFilter::Info, Some(other.to_string())),
    };
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        // tiny_http and ureq log every connection at debug; that is noise for an operator.
        .add_filter_ignore_str("tiny_http")
        .add_filter_ignore_str("ureq")
        .build();
    let _ = TermLogger::init(filter, config, TerminalMode::Stderr, ColorChoice::Never);
    if let Some(other) = unknown {
        log::warn!("LOG_LEVEL `{other}` is not one of error|warn|info|debug|trace; using info");
    }
}
