//! The status page's charts of the last hour: inline SVG with a time axis (minutes ago), a value axis in the
//! chart's unit, and one line per series (per job for warm runs) named in a legend.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::escape;
use super::history::{Sample, epoch_seconds, rates};

/// The plot's size and the room around it for the axes' labels, in SVG units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
/// Series colours, in order; a page with more series reuses them.
const PALETTE: [&str; 8] = [
    "#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#1098ad", "#e67700", "#495057",
];
/// The window a chart shows.
const WINDOW: f64 = 3600.0;

/// One line of a chart: its name in the legend and its points (seconds since the epoch, value).
pub(super) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The "Last hour" section.
pub(super) fn charts(samples: &[Sample]) -> String {
    let mut html = String::from("<h2>Last hour</h2>");
    let mut per_job: Vec<Series> = Vec::new();
    for sample in samples {
        for (job, seconds) in &sample.runs {
            match per_job.iter_mut().find(|series| &series.name == job) {
                Some(series) => series.points.push((sample.at, *seconds)),
                None => per_job.push(Series {
                    name: job.clone(),
                    points: vec![(sample.at, *seconds)],
                }),
            }
        }
    }
    per_job.sort_by(|a, b| a.name.cmp(&b.name));
    html.push_str(&chart("Warm run durations, per job", "s", &per_job));
    let one = |name: &str, points: Vec<(f64, f64)>| {
        vec![Series {
            name: name.into(),
            points,
        }]
    };
    let lag = samples.iter().filter_map(|s| Some((s.at, s.binlog_lag?))).collect();
    html.push_str(&chart("Binlog lag", "s", &one("lag", lag)));
    let invalidated = rates(samples, |s| s.invalidated);
    html.push_str(&chart("Invalidated keys", "/s", &one("keys", invalidated)));
    let messages = rates(samples, |s| s.messages);
    html.push_str(&chart("Channel messages applied", "/s", &one("messages", messages)));
    html.push_str(&chart(
        "Redis hit ratio (server-wide)",
        "%",
        &one("hits", hit_ratios(samples)),
    ));
    let evicted = rates(samples, |s| s.evicted);
    html.push_str(&chart("Redis evictions (server-wide)", "/s", &one("evicted", evicted)));
    html
}

/// The share of reads that hit, in percent, between consecutive samples that saw reads.
fn hit_ratios(samples: &[Sample]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|pair| {
            let hits = pair[1].hits - pair[0].hits;
            let reads = hits + pair[1].misses - pair[0].misses;
            (reads > 0.0 && hits >= 0.0).then(|| (pair[1].at, hits / reads * 100.0))
        })
        .collect()
}

/// A value for an axis label: as few digits as the scale needs.
fn label(value: f64) -> String {
    match value {
        v if v >= 100.0 || v == 0.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.1}"),
        v => format!("{v:.3}"),
    }
}

/// Where a chart puts a point: the window's start, and the value at the top of the plot.
struct Frame {
    start: f64,
    top: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.start) / WINDOW * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let height = HEIGHT - TOP - BOTTOM;
        TOP + height - v / self.top * height
    }

    /// The value axis (0, half and top, in `unit`, with grid lines) and the time axis (minutes ago).
    fn axes(&self, unit: &str) -> String {
        let mut svg = String::new();
        for step in 0..=2 {
            let value = self.top * f64::from(step) / 2.0;
            let y = self.y(value);
            let _ = write!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=grid />\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=end>{} {}</text>",
                WIDTH - RIGHT,
                LEFT - 4.0,
                y + 3.0,
                label(value),
                escape(unit),
            );
        }
        for minutes in [60, 45, 30, 15, 0] {
            let at = self.start + WINDOW - f64::from(minutes) * 60.0;
            let text = if minutes == 0 {
                "now".to_string()
            } else {
                format!("−{minutes} min")
            };
            let anchor = match minutes {
                60 => "start",
                0 => "end",
                _ => "middle",
            };
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor={anchor}>{text}</text>",
                self.x(at),
                HEIGHT - 6.0
            );
        }
        svg
    }
}

/// A line chart of `series` over the last hour, with its axes and a legend; "no data yet" when every series is
/// empty.
pub(super) fn chart(title: &str, unit: &str, series: &[Series]) -> String {
    let start = epoch_seconds(SystemTime::now()) - WINDOW;
    let shown: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(|p| p.0 >= start).collect())
        .collect();
    let top = shown.iter().flatten().map(|p| p.1).fold(0.0_f64, f64::max);
    let frame = Frame {
        start,
        top: if top > 0.0 { top } else { 1.0 },
    };
    let mut svg = format!(
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=img aria-label=\"{}\">\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" class=bg />{}",
        escape(title),
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM,
        frame.axes(unit)
    );
    let mut legend = String::new();
    for (index, (series, points)) in series.iter().zip(&shown).enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let coords: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", frame.x(*t), frame.y(*v)))
            .collect();
        let _ = write!(svg, "<polyline points=\"{}\" stroke=\"{colour}\" />", coords.join(" "));
        // Sparse series (warm runs) are points in time more than a line: each is marked.
        if points.len() < 60 {
            for (t, v) in points {
                let (x, y) = (frame.x(*t), frame.y(*v));
                let _ = write!(svg, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=2.5 fill=\"{colour}\" />");
            }
        }
        let last = points
            .last()
            .map_or("no data".to_string(), |p| format!("{} {unit}", label(p.1)));
        let _ = write!(
            legend,
            "<span class=key><span style=\"color:{colour}\">■</span> {}: {}</span>",
            escape(&series.name),
            escape(&last)
        );
    }
    svg.push_str("</svg>");
    if shown.iter().all(Vec::is_empty) {
        legend = "<span class=dim>no data yet</span>".into();
    }
    format!(
        "<figure><figcaption>{} <span class=dim>({})</span></figcaption>{svg}<div class=legend>{legend}</div></figure>",
        escape(title),
        escape(unit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_axes_in_its_unit_and_a_line_and_legend_entry_per_series() {
        let now = epoch_seconds(SystemTime::now());
        let series = [
            Series {
                name: "top".into(),
                points: vec![(now - 1200.0, 2.0), (now - 600.0, 4.0)],
            },
            Series {
                name: "catalog".into(),
                points: vec![(now - 300.0, 1.0), (now - 7200.0, 99.0)],
            },
        ];
        let svg = chart("Warm run durations, per job", "s", &series);
        // The value axis runs from 0 to the largest value shown (the 2-hour-old one is not), in the unit.
        for tick in [">0 s</text>", ">2.0 s</text>", ">4.0 s</text>"] {
            assert!(svg.contains(tick), "{tick}: {svg}");
        }
        assert!(!svg.contains("99"), "{svg}");
        for tick in [">−60 min</text>", ">−30 min</text>", ">now</text>"] {
            assert!(svg.contains(tick), "{tick}: {svg}");
        }
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("top: 4.0 s") && svg.contains("catalog: 1.0 s"), "{svg}");
        let empty = chart("Binlog lag", "s", &[]);
        assert!(empty.contains("no data yet"), "{empty}");
    }

    #[test]
    fn the_hit_ratio_is_taken_between_samples_that_saw_reads() {
        let sample = |at: f64, hits: f64, misses: f64| Sample {
            at,
            hits,
            misses,
            ..Sample::default()
        };
        let samples = [
            sample(0.0, 100.0, 100.0),
            sample(10.0, 190.0, 110.0),
            sample(20.0, 190.0, 110.0),
        ];
        assert_eq!(hit_ratios(&samples), vec![(10.0, 90.0)]);
    }
}
