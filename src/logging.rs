//! Where logs go and how they look: the filter (`RUST_LOG`, else `[daemon] log_level`), text or JSON lines on stderr
//! (journald collects them), and one line per event whatever the event carries.
//!
//! Messages, keys and SQL errors come from outside; a newline inside one would start a forged log line. Every
//! control character in an event's text is therefore written escaped (`\n`, `\u{1b}`), except the line's own end and,
//! on a terminal, the colour codes the formatter adds itself. JSON lines escape them already.

use std::io::{IsTerminal as _, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber for `config`, with `flag` (`--log-format`) over `[daemon] log_format`.
pub fn init(config: &Config, flag: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.daemon.log_level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(OneLine { ansi });
    match flag.unwrap_or(config.daemon.log_format) {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

/// Stderr, with every event kept to one line.
#[derive(Clone, Copy)]
struct OneLine {
    /// Colour codes (ESC) are the formatter's own and pass through.
    ansi: bool,
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLine;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for OneLine {
    /// The formatter hands over one whole event per call.
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&escape_controls(event, self.ansi))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with its control characters escaped, but for a final newline (and ESC when `keep_escape`).
pub fn escape_controls(event: &[u8], keep_escape: bool) -> std::borrow::Cow<'_, [u8]> {
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
        let event = b"WARN refused message=sentinel:1\n2026-11-26T11:00:00Z ERROR cachewarden::app: FORGED\n";
        let written = escape_controls(event, false);
        assert_eq!(
            &*written,
            &b"WARN refused message=sentinel:1\\n2026-11-26T11:00:00Z ERROR cachewarden::app: FORGED\n"[..]
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
