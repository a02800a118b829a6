//! JSON lines (`--log-format json`): one flat object per event, `timestamp`, `level`, `target`, `message`, the
//! fields of the spans it is in (`job`, `reason` of a warm run) and its own, so CloudWatch or `jq .job` find them at
//! the top. Every key appears once: an event's field wins over a span's of the same name. Numbers and booleans are
//! JSON's, and a field written as a list (`?added`, the Debug text of a slice) is a JSON array, not a string.

use std::fmt::Debug;
use std::io::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The layer writing each event as one JSON line (to stderr; to a buffer in tests).
pub(super) struct JsonLines<W> {
    pub(super) writer: W,
}

/// A span's fields, kept in its extensions until an event inside it is written.
struct SpanFields(Map<String, Value>);

/// Records fields into a JSON object.
struct Record<'a>(&'a mut Map<String, Value>);

impl Visit for Record<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let text = format!("{value:?}");
        self.0.insert(field.name().into(), value_of(field.name(), text));
    }
}

/// A Debug text as JSON: a list (`["a", "b"]`, `[1, 2]`) as an array, anything else as the string it is. The message
/// is always a string.
fn value_of(name: &str, text: String) -> Value {
    if name != "message"
        && text.starts_with('[')
        && text.ends_with(']')
        && let Ok(list @ Value::Array(_)) = serde_json::from_str(&text)
    {
        return list;
    }
    Value::String(text)
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut Record(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut Record(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        // The spans' fields from the outermost in, then the event's own over them.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.iter().map(|(name, value)| (name.clone(), value.clone())));
                }
                line.insert("span".into(), span.name().into());
            }
        }
        event.record(&mut Record(&mut line));
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        let _ = self.writer.make_writer_for(meta).write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_an_array_and_anything_else_a_string() {
        let names: &[&str] = &["top_products", "users"];
        assert_eq!(
            value_of("added", format!("{names:?}")),
            serde_json::json!(["top_products", "users"])
        );
        assert_eq!(value_of("ids", format!("{:?}", [1, 2])), serde_json::json!([1, 2]));
        assert_eq!(
            value_of("added", format!("{:?}", Vec::<&str>::new())),
            serde_json::json!([])
        );
        assert_eq!(value_of("message", "[1]".into()), serde_json::json!("[1]"));
        // Bracketed text that is not a JSON list stays text.
        assert_eq!(value_of("key", "[product:1".into()), serde_json::json!("[product:1"));
        assert_eq!(value_of("key", "[a, b]".into()), serde_json::json!("[a, b]"));
    }

    /// Lines written into memory.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Buffer {
        type Writer = Buffer;

        fn make_writer(&self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn an_events_field_wins_over_its_spans_and_each_key_appears_once() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let buffer = Buffer::default();
        let layer = JsonLines { writer: buffer.clone() };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!("warm", job = "top_products", reason = "schedule");
            let _entered = span.enter();
            tracing::info!(reason = "retry", rows = 3u64, ok = true, "Warm job done.");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["job"], "top_products");
        assert_eq!(line["reason"], "retry");
        assert_eq!(line["rows"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["span"], "warm");
        assert_eq!(line["message"], "Warm job done.");
        assert_eq!(line["level"], "INFO");
        assert_eq!(text.matches("\"reason\"").count(), 1, "{text}");
    }
}
