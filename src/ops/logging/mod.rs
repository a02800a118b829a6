//! Where logs go and how they look: the filter (`RUST_LOG`, else `[daemon] log_level`); under systemd the journal's
//! native protocol with structured fields (`journal`); else text or JSON lines (`json`) on stderr, one line per event
//! whatever the event carries.
//!
//! Messages, keys and SQL errors come from outside; a newline inside one would start a forged log line. Every
//! control character in an event's text is therefore written escaped (`\n`, `\u{1b}`), except the line's own end and,
//! on a terminal, the colour codes the formatter adds itself. JSON lines escape them already.

mod journal;
mod json;

use std::io::{IsTerminal as _, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};

/// Other crates' chatter kept out of the default filter: sqlx's own WARN with the full SQL of every statement over
/// 1 s (our statement timeouts and errors are logged by us), and tokio-cron-scheduler's start-up lines.
const QUIET: &str = "sqlx::query=error,tokio_cron_scheduler=warn";

/// Installs the global subscriber for `config`, with `flag` (`--log-format`) over `[daemon] log_format`.
///
/// When stderr is the journal (`JOURNAL_STREAM` names it) and no `--log-format json` asks for JSON lines, events go
/// to the journal's socket with their fields (`CACHEWARDEN_JOURNAL_SOCKET` names another socket, for tests); if
/// nothing listens there, text lines start with their syslog priority (`<3>` for ERROR … `<7>` for DEBUG) so that
/// `journalctl -p warning` finds them, and carry no timestamp (the journal has its own). `NO_COLOR` turns colours off
/// on a terminal.
pub(crate) fn init(config: &Config, flag: Option<LogFormat>) {
    let level = config.daemon.log_level.as_deref().unwrap_or("info");
    let default = || EnvFilter::try_new(format!("{level},{QUIET}")).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, bad_rust_log) = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (default(), Some((directives, error))),
        },
        _ => (default(), None),
    };
    let journal = stderr_is_journal();
    let format = flag.unwrap_or(config.daemon.log_format);
    if journal && format == LogFormat::Text {
        let socket = std::env::var_os("CACHEWARDEN_JOURNAL_SOCKET").unwrap_or_else(|| journal::SOCKET.into());
        if let Some(native) = journal::Journal::connect(std::path::Path::new(&socket)) {
            tracing_subscriber::registry().with(filter).with(native).init();
            warn_bad_rust_log(bad_rust_log);
            return;
        }
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let ansi = std::io::stderr().is_terminal() && !journal && !no_color;
    let writer = OneLine { ansi, journal };
    if format == LogFormat::Json {
        // JSON escapes control characters itself; the writer only adds the journal's priority.
        tracing_subscriber::registry()
            .with(filter)
            .with(json::JsonLines { writer })
            .init();
        warn_bad_rust_log(bad_rust_log);
        return;
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if journal {
        builder.with_ansi(false).without_time().init();
    } else {
        builder.with_ansi(ansi).init();
    }
    warn_bad_rust_log(bad_rust_log);
}

/// Says that `RUST_LOG` was not used, once logging is up.
fn warn_bad_rust_log(bad: Option<(String, tracing_subscriber::filter::ParseError)>) {
    if let Some((directives, error)) = bad {
        tracing::warn!(
            rust_log = %directives,
            %error,
            "RUST_LOG is not a valid filter; ignored, logging at [daemon] log_level."
        );
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` (`device:inode`, set by systemd) names stderr's file.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", stderr.dev(), stderr.ino())
}

/// Stderr, with every event kept to one line (and, for the journal, its priority first).
#[derive(Clone, Copy)]
struct OneLine {
    /// Colour codes (ESC) are the formatter's own and pass through.
    ansi: bool,
    /// Prefix each line with its syslog priority.
    journal: bool,
}

/// One event's writer.
struct EventWriter {
    line: OneLine,
    /// `<N>` for the journal, else empty.
    priority: &'static [u8],
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            line: *self,
            priority: b"",
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let priority: &'static [u8] = match (self.journal, *meta.level()) {
            (false, _) => b"",
            (true, tracing::Level::ERROR) => b"<3>",
            (true, tracing::Level::WARN) => b"<4>",
            (true, tracing::Level::INFO) => b"<6>",
            (true, _) => b"<7>",
        };
        EventWriter { line: *self, priority }
    }
}

impl Write for EventWriter {
    /// The formatter hands over one whole event per call.
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(self.priority)?;
        stderr.write_all(&escape_controls(event, self.line.ansi))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with its control characters escaped, but for a final newline (and ESC when `keep_escape`).
pub(crate) fn escape_controls(event: &[u8], keep_escape: bool) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let needs = |b: u8| (b < 0x20 && b != b'\t' && !(keep_escape && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| needs(b)) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut out = Vec::with_capacity(event.len() + 16);
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            byte if needs(byte) => out.extend_from_slice(format!("\\u{{{byte:x}}}").as_bytes()),
            byte => out.push(byte),
        }
    }
    out.extend_from_slice(end);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_inside_an_event_cannot_start_a_forged_line() {
        let event = b"WARN refused message=sentinel:1\n2026-11-26T11:00:00Z ERROR cachewarden::ops::app: FORGED\n";
        let written = escape_controls(event, false);
        assert_eq!(
            &*written,
            &b"WARN refused message=sentinel:1\\n2026-11-26T11:00:00Z ERROR cachewarden::ops::app: FORGED\n"[..]
        );
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            &*escape_controls(b"a\rb\x1b[31m\x07\n", false),
            &b"a\\rb\\u{1b}[31m\\u{7}\n"[..]
        );
        assert_eq!(
            &*escape_controls(b"\x1b[31mERROR\x1b[0m tab\there\n", true),
            b"\x1b[31mERROR\x1b[0m tab\there\n"
        );
    }
}
