//! The journal's native protocol: each event one datagram to journald's socket, with its fields and its spans' as
//! journal fields (`JOB=top_products`, `PRIORITY=4`, `MESSAGE=…`), so `journalctl -u cachewarden JOB=top_products`
//! finds one job's lines and `journalctl -p warning` the warnings. Values travel as they are (the protocol carries
//! newlines safely: one event is one entry whatever it holds).

use std::fmt::Debug;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Where journald listens for native messages.
pub(super) const SOCKET: &str = "/run/systemd/journal/socket";
/// What `SYSLOG_IDENTIFIER` says (`journalctl -t cachewarden`).
const IDENTIFIER: &str = "cachewarden";

/// A layer sending each event to the journal.
pub(super) struct Journal {
    socket: UnixDatagram,
}

impl Journal {
    /// Connected to the journal's socket at `path`; `None` when nothing listens there.
    pub(super) fn connect(path: &Path) -> Option<Self> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(path).ok()?;
        Some(Self { socket })
    }
}

/// An event's or a span's fields, named as the journal wants them.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn push(&mut self, name: &str, value: String) {
        self.0.push((journal_name(name), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.push(field.name(), format!("{value:?}"));
    }
}

/// A field name as the journal takes it: upper case letters, digits and `_`, not starting with `_` (those are the
/// journal's own, trusted fields) or a digit, at most 64 characters. `message` is `MESSAGE`.
fn journal_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    out = out.trim_start_matches('_').to_string();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "F_");
    }
    out.truncate(64);
    out
}

/// One field in the protocol's form: `NAME=value\n`, or for a value with a newline `NAME\n`, its length (64-bit
/// little-endian) and the value.
fn put(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

/// syslog's priority for a level.
fn priority(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "3",
        tracing::Level::WARN => "4",
        tracing::Level::INFO => "6",
        _ => "7",
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Journal {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut entry = Vec::with_capacity(256);
        put(&mut entry, "PRIORITY", priority(meta.level()));
        put(&mut entry, "SYSLOG_IDENTIFIER", IDENTIFIER);
        put(&mut entry, "TARGET", meta.target());
        // The spans' fields first, the event's own after them (the journal keeps both when a name repeats).
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<Fields>() {
                    for (name, value) in &span_fields.0 {
                        put(&mut entry, name, value);
                    }
                }
            }
        }
        for (name, value) in &fields.0 {
            put(&mut entry, name, value);
        }
        if self.socket.send(&entry).is_err() {
            // Too big for a datagram, or the journal went away: the line on stderr, which the journal also reads.
            let message = fields
                .0
                .iter()
                .find(|(name, _)| name == "MESSAGE")
                .map_or("", |(_, v)| v);
            let line = format!("<{}>{}: {message}\n", priority(meta.level()), meta.target());
            let _ = std::io::stderr().write_all(&super::escape_controls(line.as_bytes(), false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_take_the_protocols_form() {
        assert_eq!(journal_name("message"), "MESSAGE");
        assert_eq!(journal_name("warm_job"), "WARM_JOB");
        assert_eq!(journal_name("_private"), "PRIVATE");
        assert_eq!(journal_name("2nd.try"), "F_2ND_TRY");
        let mut entry = Vec::new();
        put(&mut entry, "JOB", "top_products");
        put(&mut entry, "MESSAGE", "a\nb");
        let mut expected = b"JOB=top_products\nMESSAGE\n".to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\n");
        assert_eq!(entry, expected);
    }
}
