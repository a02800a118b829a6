//! The status page at `GET /` of the admin endpoint, for a person: readiness and role, jobs (a failing one's error on
//! screen, a button to run one now), binlog, channel and consistency at a glance, with charts of the last hour from an
//! in-memory [`History`]. One self-contained HTML page (inline CSS and SVG, no script, no external assets, reloaded by
//! the browser every [`SAMPLE_EVERY`]), so it works on a host without internet.

mod charts;
mod history;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use crate::telemetry::health::HealthState;
use crate::telemetry::metrics::Readings;

use history::epoch_seconds;
pub(crate) use history::{History, SAMPLE_EVERY};

/// How long the daemon can be down without a gap in the binlog `source`, from the metrics: the server's binlog
/// retention less the lag (a daemon behind holds an older position). `None` when not following it or the retention
/// is unknown; infinite when binlogs are never purged.
pub(crate) fn can_be_down_for(readings: &Readings, source: &str) -> Option<f64> {
    let labels = [("source", source)];
    let retention = readings
        .get("cachewarden_binlog_retention_seconds", &labels)
        .filter(|r| !r.is_nan())?;
    let lag = readings.get("cachewarden_binlog_lag_seconds", &labels).unwrap_or(0.0);
    Some((retention - lag).max(0.0))
}

/// [`can_be_down_for`] for people.
pub(crate) fn down_for_words(seconds: Option<f64>) -> String {
    match seconds {
        None => "unknown".into(),
        Some(s) if s.is_infinite() => "any time (binlogs never expire)".into(),
        Some(s) if s < crate::source::binlog::SHORT_RETENTION.as_secs_f64() => {
            format!("{} — raise the binlog retention", crate::pure::words::seconds(s))
        }
        Some(s) => crate::pure::words::seconds(s),
    }
}

/// Everything the page shows.
pub(crate) struct Page<'a> {
    pub health: &'a HealthState,
    /// The `/jobs` document.
    pub jobs: &'a serde_json::Value,
    /// The daemon's counters and gauges (none without metrics).
    pub readings: &'a Readings,
    pub history: &'a History,
    /// With `[ha]`: this instance's role.
    pub ha: Option<crate::ops::ha::Status>,
    /// The servers this instance talks to (what, where: URLs without their passwords).
    pub servers: &'a [(String, String)],
    /// The binlog sources followed (their names).
    pub binlogs: &'a [Arc<str>],
    /// The last checkpoint each source saved (`file:pos`, `gtid=…`), by name.
    pub binlog_checkpoints: &'a BTreeMap<String, String>,
    /// Whether the page offers a "run now" button (not when POST routes need the admin token, which a form
    /// cannot send).
    pub run_now: bool,
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `[misses]` section: whether Redis reports misses, the fills, and the most missed key templates first.
fn misses(page: &Page<'_>) -> String {
    let readings = page.readings;
    let reported = match readings.get("cachewarden_cache_misses_reported", &[]) {
        Some(1.0) => "<span class=ok>yes</span>",
        Some(_) => "<span class=bad>no: notify-keyspace-events lacks E and m (see the log for what to set)</span>",
        None => "not known: this instance does not follow misses (a standby, or starting)",
    };
    let fills = |outcome: &str| {
        readings
            .get("cachewarden_cache_fills_total", &[("outcome", outcome)])
            .unwrap_or(0.0)
    };
    let mut html = format!(
        "<h2>Misses</h2><table><tr><td>reported by Redis</td><td>{reported}</td></tr>\
         <tr><td>filled</td><td>{:.0}</td></tr><tr><td>absent (no row)</td><td>{:.0}</td></tr>\
         <tr><td>fills failed</td><td>{:.0}</td></tr><tr><td>not filled (recent, absent, queue full, not allowed)</td>\
         <td>{:.0}</td></tr><tr><td>misses of no job's keys</td><td>{:.0}</td></tr></table>",
        fills("written"),
        fills("absent"),
        fills("failed"),
        readings.sum("cachewarden_cache_fills_skipped_total"),
        readings.sum("cachewarden_cache_misses_ignored_total"),
    );
    let mut by_job: Vec<(f64, &str, &str)> = page
        .jobs
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let name = job["name"].as_str().unwrap_or_default();
            let misses = readings
                .get("cachewarden_cache_misses_total", &[("warm_job", name)])
                .unwrap_or(0.0);
            (misses, name, job["key"].as_str().unwrap_or_default())
        })
        .collect();
    by_job.sort_by(|a, b| b.0.total_cmp(&a.0));
    html.push_str("<table><tr><th>key template</th><th>job</th><th>misses</th></tr>");
    for (misses, name, key) in by_job.iter().take(MISSED_TEMPLATES_SHOWN) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{misses:.0}</td></tr>",
            escape(key),
            escape(name)
        );
    }
    html.push_str("</table>");
    html
}

/// The most missed key templates the page lists.
const MISSED_TEMPLATES_SHOWN: usize = 10;

/// The whole page: its sections in the order they appear.
pub(crate) fn render(page: &Page<'_>) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <meta http-equiv=refresh content=10><title>cachewarden</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2430;background:#fff}\
         h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}\
         table{border-collapse:collapse}\
         td,th{padding:4px 10px;border-bottom:1px solid #e3e7ee;text-align:left;white-space:nowrap}\
         .ok{color:#137333}.bad{color:#b3261e;font-weight:600}.dim{color:#6b7480;font-size:12px}\
         svg .bg{fill:#f5f7fa}svg polyline{fill:none;stroke-width:1.5}svg .grid{stroke:#dde2ea}\
         svg text{font-size:10px;fill:#6b7480}.legend{font-size:12px}.legend .key{margin-right:14px}\
         figure{margin:8px 0 16px}figcaption{margin-bottom:4px}form{margin:0}\
         tr.error td{color:#b3261e;background:#fdf3f2;border-bottom:1px solid #f3c9c5;white-space:normal}\
         </style></head><body>",
    );
    let ready = if page.health.is_ready() {
        "<span class=ok>ready</span>".to_string()
    } else {
        format!("<span class=bad>not ready: {}</span>", escape(&page.health.reason()))
    };
    let _ = write!(
        html,
        "<h1>cachewarden {}</h1><div>{ready}</div><div>{}</div>",
        env!("CARGO_PKG_VERSION"),
        role(page.ha.as_ref())
    );

    jobs(page, &mut html);
    feeds(page, &mut html);
    servers(page, &mut html);
    consistency(page, &mut html);
    html.push_str(&charts::charts(&page.history.snapshot()));
    let _ = write!(
        html,
        "<p class=dim>Sampled every {} s; the same figures, and more, at <a href=\"/metrics\">/metrics</a> and \
         <a href=\"/jobs\">/jobs</a>.</p></body></html>",
        SAMPLE_EVERY.as_secs()
    );
    html
}

/// This instance's role and what it holds.
fn role(ha: Option<&crate::ops::ha::Status>) -> String {
    use crate::ops::ha::Role;
    let Some(status) = ha else {
        return "role: the only instance (no <code>[ha]</code>): runs the schedule and follows every feed".into();
    };
    let holds = match status.role {
        Role::Leader => "holds the lease: runs the schedule and follows every feed",
        Role::Standby => "runs no job and follows no feed until it takes the lease",
        Role::Starting => "has not competed for the lease yet",
    };
    format!(
        "role: <b>{}</b>, instance {}; {holds}",
        escape(&status.describe()),
        escape(&status.instance)
    )
}

/// The warm jobs: each one's last run and next run; a failing one's error, last success and streak on a row below.
fn jobs(page: &Page<'_>, html: &mut String) {
    html.push_str(
        "<h2>Warm jobs</h2><table><tr><th>job</th><th>schedule</th><th>last run</th><th>finished</th>\
                   <th>duration</th><th>keys written</th><th>in Redis (sampled)</th><th>next run</th><th></th></tr>",
    );
    let sampled = page
        .readings
        .get("cachewarden_keyspace_sample_timestamp_seconds", &[])
        .is_some_and(|at| at > 0.0);
    for job in page.jobs.as_array().into_iter().flatten() {
        let field = |value: &serde_json::Value| match value {
            serde_json::Value::String(text) => escape(text),
            serde_json::Value::Null => "–".into(),
            other => escape(&other.to_string()),
        };
        let last = &job["last_run"];
        let outcome = match last["outcome"].as_str() {
            Some("success") => "<span class=ok>success</span>".to_string(),
            Some(_) => "<span class=bad>failure</span>".to_string(),
            None if job["running"] == true => "running".into(),
            None => "never run".into(),
        };
        let name = job["name"].as_str().unwrap_or_default();
        let action = match (page.run_now, job["running"] == true) {
            (_, true) => "running".to_string(),
            (true, false) => format!(
                "<form method=post action=\"/jobs/{}/run\"><button>run now</button></form>",
                escape(name)
            ),
            (false, false) => format!("<span class=dim>cachewarden trigger {}</span>", escape(name)),
        };
        let duration = last["duration_seconds"]
            .as_f64()
            .map_or("–".into(), crate::pure::words::seconds);
        let footprint = footprint(page.readings, name, sampled);
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{outcome}</td><td>{}</td><td>{duration}</td><td>{}</td><td>{footprint}</td>\
             <td>{}</td><td>{action}</td></tr>",
            field(&job["name"]),
            field(&job["schedule"]),
            field(&last["finished_at"]),
            field(&last["keys_written"]),
            field(&job["next_run"]),
        );
        if last["outcome"] == "failure" {
            let streak = job["failure_streak"].as_u64().unwrap_or(1);
            let since = match job["last_success_at"].as_str() {
                Some(at) => format!("last success {}", escape(at)),
                None => "no success since the start".into(),
            };
            let next = match job["next_run"].as_str() {
                Some(at) => format!("next try at {}", escape(at)),
                None => "no next try scheduled".into(),
            };
            let _ = write!(
                html,
                "<tr class=error><td colspan=9>{}: {}; failed {streak} time{} in a row; {since}; {next}</td></tr>",
                escape(name),
                field(&last["error"]),
                if streak == 1 { "" } else { "s" },
            );
        }
    }
    html.push_str("</table>");
    if sampled {
        let drawn = page
            .readings
            .get("cachewarden_keyspace_sample_keys", &[])
            .unwrap_or(0.0);
        let _ = write!(
            html,
            "<p class=dim>In Redis: estimated each minute from {drawn:.0} keys drawn at random (every key of a node \
             holding fewer); a job with fewer than about one in a thousand of the keys may show none.</p>"
        );
    }
}

/// A job's keys and memory in Redis, from the keyspace sample: `~1,200 keys, 96.0 KiB`; "–" before the first
/// sample.
fn footprint(readings: &Readings, job: &str, sampled: bool) -> String {
    let labels = [("warm_job", job)];
    match (
        sampled,
        readings.get("cachewarden_warm_job_keys", &labels),
        readings.get("cachewarden_warm_job_memory_bytes", &labels),
    ) {
        (true, Some(keys), Some(bytes)) => format!(
            "~{}, {}",
            crate::pure::words::count(keys as usize, "key"),
            crate::pure::words::bytes(bytes as u64)
        ),
        _ => "–".into(),
    }
}

/// What feeds the cache besides the schedule: the binlog, the channel and Redis's misses, each when this instance follows it.
fn feeds(page: &Page<'_>, html: &mut String) {
    let metric = |name: &str| page.readings.get(name, &[]);
    let show = |value: Option<f64>| value.map_or("–".to_string(), |v| format!("{v}"));
    for source in page.binlogs {
        let labels = [("source", &**source)];
        let metric = |name: &str| page.readings.get(name, &labels);
        if metric("cachewarden_binlog_connected").is_none() {
            continue;
        }
        let heard = metric("cachewarden_binlog_last_heard_timestamp_seconds")
            .filter(|at| *at > 0.0)
            .map_or("–".into(), |at| {
                format!("{:.0} s ago", epoch_seconds(SystemTime::now()) - at)
            });
        let title = match page.binlogs.len() {
            1 => "Binlog".to_string(),
            _ => format!("Binlog “{}”", escape(source)),
        };
        // Under [ha] another instance may follow it (the leader, or under work sharing the source's holder).
        let here = match metric("cachewarden_binlog_following") {
            Some(1.0) => "yes",
            Some(_) => "no: another instance follows it (or none does)",
            None => "–",
        };
        let _ = write!(
            html,
            "<h2>{title}</h2><table><tr><td>followed by this instance</td><td>{here}</td></tr>\
             <tr><td>connected</td><td>{}</td></tr><tr><td>lag</td><td>{} s</td></tr>\
             <tr><td>last heard from the server</td><td>{heard}</td></tr><tr><td>checkpoint saved</td><td>{}</td></tr>\
             <tr><td>row events applied</td><td>{}</td></tr><tr><td>apply failing</td><td>{}</td></tr>\
             <tr><td>can be down for</td><td>{}</td></tr></table>",
            show(metric("cachewarden_binlog_connected")),
            show(metric("cachewarden_binlog_lag_seconds")),
            page.binlog_checkpoints
                .get(&**source)
                .map_or("none yet".into(), |saved| escape(saved)),
            show(metric("cachewarden_binlog_rows_total")),
            show(metric("cachewarden_binlog_apply_failing")),
            escape(&down_for_words(can_be_down_for(page.readings, source))),
        );
    }
    let channel_messages = |outcome: &str| {
        page.readings
            .get("cachewarden_channel_messages_total", &[("outcome", outcome)])
    };
    if metric("cachewarden_channel_gaps_total").is_some() {
        let _ = write!(
            html,
            "<h2>Channel</h2><table><tr><td>messages applied</td><td>{}</td></tr><tr><td>refused</td><td>{}</td></tr>\
             <tr><td>gaps</td><td>{}</td></tr></table>",
            show(channel_messages("applied")),
            show(channel_messages("refused")),
            show(metric("cachewarden_channel_gaps_total")),
        );
    }
    if metric("cachewarden_cache_misses_ignored_total").is_some() {
        html.push_str(&misses(page));
    }
}

/// The servers this instance talks to, and Redis's own figures: server-wide (every client's reads count), since
/// Redis started.
fn servers(page: &Page<'_>, html: &mut String) {
    html.push_str("<h2>Servers</h2><table>");
    for (what, address) in page.servers {
        let _ = write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(what), escape(address));
    }
    let redis = |name: &str| page.readings.get(name, &[]);
    let hits = match (
        redis("cachewarden_redis_keyspace_hits_total"),
        redis("cachewarden_redis_keyspace_misses_total"),
    ) {
        (Some(hits), Some(misses)) if hits + misses > 0.0 => {
            format!("{:.1}% of {:.0} reads", hits / (hits + misses) * 100.0, hits + misses)
        }
        _ => "not known yet".into(),
    };
    let evicted = redis("cachewarden_redis_evicted_keys_total").map_or("not known yet".into(), |n| format!("{n:.0}"));
    let _ = write!(
        html,
        "<tr><td>Redis hit ratio <span class=dim>(server-wide, since Redis started)</span></td><td>{hits}</td></tr>\
         <tr><td>Redis evictions <span class=dim>(server-wide, since Redis started)</span></td><td>{evicted}</td></tr>\
         </table>"
    );
}

/// Consistency: each job's last sweep (every key checked), or that it has not been audited yet.
fn consistency(page: &Page<'_>, html: &mut String) {
    if let Some(jobs) = page.jobs.as_array().filter(|jobs| !jobs.is_empty()) {
        html.push_str(
            "<h2>Consistency (every key, once per audit period)</h2><table><tr><th>job</th><th>checked</th>\
             <th>wrong</th><th>orphaned</th><th>missing</th><th>stale rate</th><th>last audit</th></tr>",
        );
        for job in jobs {
            let name = job["name"].as_str().unwrap_or_default();
            let of = |metric_name: &str| page.readings.get(metric_name, &[("warm_job", name)]);
            let checked = match of("cachewarden_audit_keys_checked") {
                // A job that has not succeeded has written no key to check: no ratio to speak of until it has.
                checked if job["last_success_at"].is_null() && checked.is_none_or(|checked| checked < 1.0) => {
                    Err("not audited: the job has not succeeded since the start")
                }
                None => Err("not audited yet"),
                Some(checked) => Ok(checked),
            };
            let checked = match checked {
                Ok(checked) => checked,
                Err(why) => {
                    let _ = write!(html, "<tr><td>{}</td><td colspan=6>{why}</td></tr>", escape(name));
                    continue;
                }
            };
            let (wrong, orphaned) = (
                of("cachewarden_audit_wrong_keys").unwrap_or(0.0),
                of("cachewarden_audit_orphaned_keys").unwrap_or(0.0),
            );
            let held = checked + orphaned;
            let rate = if held > 0.0 { (wrong + orphaned) / held } else { 0.0 };
            let class = if wrong + orphaned > 0.0 { "bad" } else { "ok" };
            let ago = of("cachewarden_audit_last_sweep_timestamp_seconds").map_or("–".into(), |at| {
                format!("{:.0} s ago", epoch_seconds(SystemTime::now()) - at)
            });
            // What the sweep could not cover is said where its result is shown.
            let orphans = match of("cachewarden_audit_orphans_checked") {
                Some(checked) if checked < 1.0 => " (not all looked for)",
                _ => "",
            };
            let failed = match of("cachewarden_audit_failures_total") {
                Some(failures) if failures > 0.0 => format!(", {failures:.0} failed"),
                _ => String::new(),
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{checked:.0}</td><td class={class}>{wrong:.0}</td>\
                 <td class={class}>{orphaned:.0}{orphans}</td><td>{:.0}</td><td class={class}>{:.4}%</td>\
                 <td>{ago}{failed}</td></tr>",
                escape(name),
                of("cachewarden_audit_missing_keys").unwrap_or(0.0),
                rate * 100.0
            );
        }
        html.push_str("</table>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_it_shows() {
        let jobs = serde_json::json!([{"name": "<script>", "schedule": "every 1h", "last_run": null,
                                       "next_run": null, "running": false}]);
        let health = HealthState {
            redis: None,
            mysql: Some("down & out".into()),
            stalled: vec![],
        };
        let history = History::default();
        let html = render(&Page {
            health: &health,
            jobs: &jobs,
            readings: &Readings::default(),
            history: &history,
            ha: None,
            servers: &[],
            binlogs: &[],
            binlog_checkpoints: &BTreeMap::new(),
            run_now: true,
        });
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("not ready: mysql: down &amp; out"));
        assert!(html.contains("never run"));
        assert!(html.contains("the only instance (no <code>[ha]</code>)"), "{html}");
        assert!(
            html.contains("action=\"/jobs/&lt;script&gt;/run\"><button>run now</button>"),
            "{html}"
        );
    }

    fn page_of(jobs: &serde_json::Value, ha: Option<crate::ops::ha::Status>, run_now: bool) -> String {
        let health = HealthState {
            redis: None,
            mysql: None,
            stalled: vec![],
        };
        render(&Page {
            health: &health,
            jobs,
            readings: &Readings::default(),
            history: &History::default(),
            ha,
            servers: &[("MySQL".to_string(), "mysql://app:***@db:3306/shop".to_string())],
            binlogs: &["main".into()],
            binlog_checkpoints: &BTreeMap::from([("main".into(), "mysql-bin.000003:4567 gtid=0-1-99".into())]),
            run_now,
        })
    }

    #[test]
    fn a_failing_job_shows_its_error_streak_last_success_and_next_try_and_is_not_audited_until_it_succeeds() {
        let failing = |last_success: Option<&str>| {
            serde_json::json!([{"name": "top", "schedule": "every 5m", "running": false,
                "next_run": "2026-12-06T10:05:00Z", "failure_streak": 3, "last_success_at": last_success,
                "last_run": {"outcome": "failure", "finished_at": "2026-12-06T10:00:00Z",
                             "error": "query failed: Table 'shop.prods' doesn't exist"}}])
        };
        let html = page_of(&failing(Some("2026-12-06T09:00:00Z")), None, true);
        assert!(
            html.contains(
                "<tr class=error><td colspan=9>top: query failed: Table &#39;shop.prods&#39; doesn&#39;t exist; \
                 failed 3 times in a row; last success 2026-12-06T09:00:00Z; next try at 2026-12-06T10:05:00Z</td></tr>"
            ),
            "{html}"
        );
        // Succeeded before, never audited: said so; never succeeded: not audited either, and why.
        assert!(
            html.contains("<td>top</td><td colspan=6>not audited yet</td>"),
            "{html}"
        );
        let html = page_of(&failing(None), None, true);
        assert!(html.contains("no success since the start"), "{html}");
        assert!(
            html.contains("<td>top</td><td colspan=6>not audited: the job has not succeeded since the start</td>"),
            "{html}"
        );
        assert!(!html.contains("0.0000%"), "{html}");
    }

    #[test]
    fn a_standby_says_so_and_without_the_form_the_page_names_the_command() {
        let jobs = serde_json::json!([{"name": "top", "schedule": "every 5m", "running": false,
                                       "next_run": null, "last_run": null, "failure_streak": 0}]);
        let standby = crate::ops::ha::Status {
            role: crate::ops::ha::Role::Standby,
            instance: "web-2".into(),
            leader: Some("web-1".into()),
            leader_since: Some(SystemTime::now()),
            took_over: false,
        };
        let html = page_of(&jobs, Some(standby), false);
        assert!(
            html.contains("role: <b>standby (leader: web-1, for ")
                && html.contains("</b>, instance web-2; runs no job"),
            "{html}"
        );
        assert!(
            html.contains("cachewarden trigger top") && !html.contains("<form"),
            "{html}"
        );
    }
}
