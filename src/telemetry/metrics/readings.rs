//! The figures the status page and the admin endpoint show, read in-process: every counter and gauge the daemon
//! records, kept beside the Prometheus exporter by the same calls, and read by name and labels — never by parsing
//! `/metrics` back.
//!
//! One recorder ([`Recording`]) feeds both: a series' handle, created once, holds the in-process value and the
//! exporter's handle, so recording costs one registry lookup, as with the exporter alone (a fan-out recorder would
//! look up each and allocate a handle at every call). Histograms are the exporter's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Level, Metadata, Recorder, SharedString,
    Unit,
};
use metrics_exporter_prometheus::PrometheusRecorder;
use metrics_util::registry::{Registry, Storage};

/// Every counter and gauge recorded, by key.
pub(crate) struct Readings {
    registry: Registry<Key, Series>,
}

impl Default for Readings {
    /// Readings of their own, exported nowhere.
    fn default() -> Self {
        Self::exporting_to(None)
    }
}

impl Readings {
    fn exporting_to(prometheus: Option<Arc<PrometheusRecorder>>) -> Self {
        Readings {
            registry: Registry::new(Series { prometheus }),
        }
    }

    /// The value of the counter or gauge `name` with exactly `labels` (in any order); `None` when it was never
    /// recorded (or registered).
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let same = |key: &Key| {
            key.name() == name
                && key.labels().count() == labels.len()
                && key.labels().all(|label| labels.contains(&(label.key(), label.value())))
        };
        let mut found = None;
        self.registry.visit_counters(|key, counter| {
            if same(key) {
                found = Some(counter.value.load(Ordering::Relaxed) as f64);
            }
        });
        self.registry.visit_gauges(|key, gauge| {
            if same(key) {
                found = Some(f64::from_bits(gauge.value.load(Ordering::Relaxed)));
            }
        });
        found
    }

    /// The gauge `name`'s highest reading over every label set (`None` when never recorded).
    pub(crate) fn max(&self, name: &str) -> Option<f64> {
        let mut highest: Option<f64> = None;
        self.registry.visit_gauges(|key, gauge| {
            if key.name() == name {
                let value = f64::from_bits(gauge.value.load(Ordering::Relaxed));
                highest = Some(highest.map_or(value, |highest| highest.max(value)));
            }
        });
        highest
    }

    /// The counter `name` summed over every label set (0 when never recorded).
    pub(crate) fn sum(&self, name: &str) -> f64 {
        let mut total = 0.0;
        self.registry.visit_counters(|key, counter| {
            if key.name() == name {
                total += counter.value.load(Ordering::Relaxed) as f64;
            }
        });
        total
    }
}

/// The global recorder: counters and gauges through [`Readings`] (which hands each series' handle to the exporter
/// too), histograms and descriptions straight to the exporter.
pub(super) struct Recording {
    readings: Arc<Readings>,
    prometheus: Arc<PrometheusRecorder>,
}

impl Recording {
    pub(super) fn new(prometheus: PrometheusRecorder) -> Self {
        let prometheus = Arc::new(prometheus);
        Recording {
            readings: Arc::new(Readings::exporting_to(Some(prometheus.clone()))),
            prometheus,
        }
    }

    pub(super) fn readings(&self) -> Arc<Readings> {
        self.readings.clone()
    }
}

impl Recorder for Recording {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.prometheus.describe_counter(name, unit, help);
    }

    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.prometheus.describe_gauge(name, unit, help);
    }

    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.prometheus.describe_histogram(name, unit, help);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.readings.registry.get_or_create_counter(key, Arc::clone))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.readings.registry.get_or_create_gauge(key, Arc::clone))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.prometheus.register_histogram(key, metadata)
    }
}

/// How [`Readings`] creates a series: its value here, and the exporter's handle of the same key (if exported).
struct Series {
    prometheus: Option<Arc<PrometheusRecorder>>,
}

/// The metadata the exporter is registered with (it ignores it).
const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

impl Storage<Key> for Series {
    type Counter = Arc<Both<Counter>>;
    type Gauge = Arc<Both<Gauge>>;
    type Histogram = Arc<NoHistogram>;

    fn counter(&self, key: &Key) -> Self::Counter {
        let exported = self
            .prometheus
            .as_ref()
            .map_or_else(Counter::noop, |p| p.register_counter(key, &METADATA));
        Arc::new(Both::new(exported))
    }

    fn gauge(&self, key: &Key) -> Self::Gauge {
        let exported = self
            .prometheus
            .as_ref()
            .map_or_else(Gauge::noop, |p| p.register_gauge(key, &METADATA));
        Arc::new(Both::new(exported))
    }

    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::new(NoHistogram)
    }
}

/// A series' value here (a count, or a gauge's f64 bits) and the exporter's handle, moved together.
struct Both<H> {
    value: AtomicU64,
    exported: H,
}

impl<H> Both<H> {
    fn new(exported: H) -> Self {
        Both {
            value: AtomicU64::new(0),
            exported,
        }
    }
}

impl CounterFn for Both<Counter> {
    fn increment(&self, value: u64) {
        CounterFn::increment(&self.value, value);
        self.exported.increment(value);
    }

    fn absolute(&self, value: u64) {
        CounterFn::absolute(&self.value, value);
        self.exported.absolute(value);
    }
}

impl GaugeFn for Both<Gauge> {
    fn increment(&self, value: f64) {
        GaugeFn::increment(&self.value, value);
        self.exported.increment(value);
    }

    fn decrement(&self, value: f64) {
        GaugeFn::decrement(&self.value, value);
        self.exported.decrement(value);
    }

    fn set(&self, value: f64) {
        GaugeFn::set(&self.value, value);
        self.exported.set(value);
    }
}

/// Histograms are not kept here (the registry's storage must still name a type).
struct NoHistogram;

impl HistogramFn for NoHistogram {
    fn record(&self, _: f64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_read_by_name_and_labels_and_exported_alike() {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exported = prometheus.handle();
        let recorder = Recording::new(prometheus);
        let readings = recorder.readings();
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
        // The exporter got the same calls; a handle registered again is the same series.
        recorder.register_counter(&applied, &metadata).increment(2);
        let text = exported.render();
        for line in [
            r#"messages_total{outcome="applied"} 5"#,
            r#"messages_total{outcome="refused"} 1"#,
            r#"lag_seconds{a="1",b="2"} 2.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert_eq!(readings.get("messages_total", &[("outcome", "applied")]), Some(5.0));
    }
}
