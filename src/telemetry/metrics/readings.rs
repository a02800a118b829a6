//! The figures the status page and the admin endpoint show, read in-process: every counter and gauge the daemon
//! records, kept beside the Prometheus exporter by the same calls (one fan-out recorder feeds both), and read by name
//! and labels — never by parsing `/metrics` back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Every counter and gauge recorded, by key (histograms are the exporter's alone).
pub struct Readings {
    registry: Registry<Key, AtomicStorage>,
}

impl Default for Readings {
    fn default() -> Self {
        Readings {
            registry: Registry::atomic(),
        }
    }
}

impl Readings {
    /// The value of the counter or gauge `name` with exactly `labels` (in any order); `None` when it was never
    /// recorded (or registered).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let same = |key: &Key| {
            key.name() == name
                && key.labels().count() == labels.len()
                && key.labels().all(|label| labels.contains(&(label.key(), label.value())))
        };
        let mut found = None;
        self.registry.visit_counters(|key, counter| {
            if same(key) {
                found = Some(counter.load(Ordering::Relaxed) as f64);
            }
        });
        self.registry.visit_gauges(|key, gauge| {
            if same(key) {
                found = Some(f64::from_bits(gauge.load(Ordering::Relaxed)));
            }
        });
        found
    }

    /// The counter `name` summed over every label set (0 when never recorded).
    pub fn sum(&self, name: &str) -> f64 {
        let mut total = 0.0;
        self.registry.visit_counters(|key, counter| {
            if key.name() == name {
                total += counter.load(Ordering::Relaxed) as f64;
            }
        });
        total
    }
}

/// The recorder half of [`Readings`].
pub(super) struct ReadingsRecorder(pub Arc<Readings>);

impl Recorder for ReadingsRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.registry.get_or_create_counter(key, Arc::clone))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.registry.get_or_create_gauge(key, Arc::clone))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_read_by_name_and_labels_in_any_order() {
        let readings = Arc::new(Readings::default());
        let recorder = ReadingsRecorder(readings.clone());
        let metadata = Metadata::new("test", metrics::Level::INFO, None);
        let applied = Key::from_parts("messages_total", vec![metrics::Label::new("outcome", "applied")]);
        let refused = Key::from_parts("messages_total", vec![metrics::Label::new("outcome", "refused")]);
        recorder.register_counter(&applied, &metadata).increment(3);
        recorder.register_counter(&refused, &metadata).increment(1);
        let both = Key::from_parts(
            "lag_seconds",
            vec![metrics::Label::new("a", "1"), metrics::Label::new("b", "2")],
        );
        recorder.register_gauge(&both, &metadata).set(2.5);
        assert_eq!(readings.get("messages_total", &[("outcome", "applied")]), Some(3.0));
        assert_eq!(readings.sum("messages_total"), 4.0);
        assert_eq!(readings.get("lag_seconds", &[("b", "2"), ("a", "1")]), Some(2.5));
        assert_eq!(
            readings.get("lag_seconds", &[("a", "1")]),
            None,
            "a label set is matched whole"
        );
        assert_eq!(readings.get("messages_total", &[]), None);
        assert_eq!(readings.sum("absent_total"), 0.0);
    }
}
