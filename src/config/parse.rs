//! The value syntaxes of `jobs.toml`: durations, TTLs, jitter, sizes, counts, log levels and schedules (6-field
//! cron, crontab lines, `every 5m`, `@daily`). Pure functions; `validate` names the field when one fails.

use std::time::Duration;

use super::raw::IntOrString;
use crate::pure::model::{Jitter, Schedule, Ttl};

/// The longest duration any field accepts: longer than any sensible TTL or timeout, and far from the overflow of
/// clock arithmetic and of Redis' expiry times.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `"24h"`, `"90s"`, `"1h 30m"` (humantime syntax).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|error| format!("\"{text}\" is not a duration ({error}); write e.g. \"30s\", \"5m\", \"24h\""))?;
    if duration.is_zero() {
        return Err(format!("\"{text}\" is zero; a duration must be positive"));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "\"{text}\" is longer than 10 years, the longest duration accepted"
        ));
    }
    Ok(duration)
}

/// A log filter: levels (`trace`, `debug`, `info`, `warn`, `error`, `off`) and `target=level` directives. A bare word
/// that is not a level (`inf`, `warning`) would silently filter everything out, so it is refused.
pub(super) fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if let Err(error) = level.parse::<tracing_subscriber::EnvFilter>() {
        return Err(format!("\"{level}\" is not a log filter: {error}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "\"{directive}\" is not a level: use trace, debug, info, warn, error or off (or target=level)"
            ));
        }
    }
    Ok(())
}

/// A duration, or `"none"` for keys that never expire.
pub(crate) fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Ttl::Never);
    }
    parse_duration(text).map(Ttl::Expires)
}

/// `"10%"` of the TTL, or a duration shorter than the TTL.
pub(crate) fn parse_jitter(text: &str, ttl: Ttl) -> Result<Jitter, String> {
    let text = text.trim();
    if matches!(text, "0" | "0%" | "none") {
        return Ok(Jitter::None);
    }
    let Ttl::Expires(ttl) = ttl else {
        return Err("has no effect with ttl = \"none\"; remove it".into());
    };
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\" is not a percentage such as \"10%\""))?;
        if !(0.0..100.0).contains(&percent) {
            return Err(format!("\"{text}\" must be at least 0% and less than 100%"));
        }
        return Ok(Jitter::Fraction(percent / 100.0));
    }
    let jitter = parse_duration(text)?;
    if jitter >= ttl {
        return Err(format!(
            "\"{text}\" must be shorter than the TTL ({})",
            crate::pure::words::duration(ttl)
        ));
    }
    Ok(Jitter::Fixed(jitter))
}

/// Bytes: an integer, or a string such as `"100KiB"`, `"1MiB"`, `"64kB"`.
pub(crate) fn parse_size(raw: &IntOrString) -> Result<usize, String> {
    let text = match raw {
        IntOrString::Int(n) if *n > 0 => return Ok(*n as usize),
        IntOrString::Int(n) => return Err(format!("{n} must be a positive number of bytes")),
        IntOrString::String(text) => text.trim(),
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        _ => {
            return Err(format!(
                "\"{text}\" is not a size; write e.g. 102400, \"100KiB\" or \"1MiB\""
            ));
        }
    };
    match digits.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * multiplier),
        _ => Err(format!(
            "\"{text}\" is not a size; write e.g. 102400, \"100KiB\" or \"1MiB\""
        )),
    }
}

pub(super) fn parse_count(raw: &IntOrString) -> Result<usize, String> {
    let n = match raw {
        IntOrString::Int(n) => *n,
        IntOrString::String(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\" is not a whole number"))?,
    };
    if n < 1 {
        return Err(format!("{n} must be at least 1"));
    }
    Ok(n as usize)
}

/// A 6-field cron (`sec min hour day-of-month month day-of-week`, UTC), a 5-field crontab line (seconds = 0), a
/// croner nickname (`@hourly`), or `every <duration>` where the duration divides a minute, an hour or a day evenly.
///
/// Parsed exactly as tokio-cron-scheduler parses it (seconds required, day-of-month AND day-of-week), so the fire
/// times `cachewarden jobs` prints are the ones the daemon uses.
pub(crate) fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let trimmed = text.trim();
    let cron = if let Some(every) = trimmed.strip_prefix("every ") {
        every_to_cron(every.trim())?
    } else if let Some(alias) = trimmed.strip_prefix('@') {
        // crontab's nicknames, with the seconds field our schedules carry.
        match alias.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 0 1 1 *".to_string(),
            "monthly" => "0 0 0 1 * *".to_string(),
            "weekly" => "0 0 0 * * 0".to_string(),
            "daily" | "midnight" => "0 0 0 * * *".to_string(),
            "hourly" => "0 0 * * * *".to_string(),
            _ => {
                return Err(format!(
                    "\"{text}\" is not a cron nickname: use @yearly, @annually, @monthly, @weekly, @daily, @midnight \
                     or @hourly"
                ));
            }
        }
    } else {
        match trimmed.split_whitespace().count() {
            5 => format!("0 {trimmed}"),
            6 => trimmed.to_string(),
            n => {
                return Err(format!(
                    "\"{text}\" has {n} fields; a cron schedule has 6 (sec min hour day month weekday) or 5 (crontab)"
                ));
            }
        }
    };
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&cron)
        .map_err(|error| match out_of_range(&cron) {
            Some(field) => format!("\"{text}\" is not a valid cron schedule: {field}"),
            None => format!("\"{text}\" is not a valid cron schedule: {error}"),
        })?;
    if let Err(error) = parsed.find_next_occurrence(&chrono::Utc::now(), false) {
        return Err(format!("\"{text}\" never fires: {error}"));
    }
    Ok(Schedule {
        written: text.to_string(),
        cron,
        parsed,
    })
}

pub(super) fn every_to_cron(every: &str) -> Result<String, String> {
    let period = parse_duration(every)?;
    let secs = period.as_secs();
    let uneven = || {
        format!(
            "\"every {every}\" cannot fire at even wall-clock times: use a period that divides a minute, an hour or a \
             day (30s, 5m, 2h, 1d), or a cron expression"
        )
    };
    if period.subsec_nanos() != 0 {
        return Err(uneven());
    }
    Ok(match secs {
        1 => "* * * * * *".into(),
        s if s < 60 && 60 % s == 0 => format!("*/{s} * * * * *"),
        60 => "0 * * * * *".into(),
        s if s % 60 == 0 && s < 3600 && 3600 % s == 0 => format!("0 */{} * * * *", s / 60),
        3600 => "0 0 * * * *".into(),
        s if s % 3600 == 0 && s < 86_400 && 86_400 % s == 0 => format!("0 0 */{} * * *", s / 3600),
        86_400 => "0 0 0 * * *".into(),
        _ => return Err(uneven()),
    })
}

/// The six fields of a cron schedule (seconds first), with the numbers each accepts.
const CRON_FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of the month", 1, 31),
    ("month", 1, 12),
    ("day of the week", 0, 7),
];

/// The first number of a six-field `cron` outside its field's range, in words: which field, what it holds, what it
/// accepts. (Step sizes after `/` are not positions and are not checked; names such as `MON` are left to croner.)
fn out_of_range(cron: &str) -> Option<String> {
    for (text, (name, low, high)) in cron.split_whitespace().zip(CRON_FIELDS) {
        for item in text.split(',') {
            let range = item.split('/').next().unwrap_or_default();
            for number in range.split('-') {
                if let Ok(value) = number.parse::<u32>()
                    && !(low..=high).contains(&value)
                {
                    return Some(format!(
                        "the {name} field is \"{text}\", and {value} is out of range: it takes {low}-{high}"
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forms_become_even_cron() {
        assert_eq!(every_to_cron("30s").unwrap(), "*/30 * * * * *");
        assert_eq!(every_to_cron("5m").unwrap(), "0 */5 * * * *");
        assert_eq!(every_to_cron("1m").unwrap(), "0 * * * * *");
        assert_eq!(every_to_cron("1h").unwrap(), "0 0 * * * *");
        assert_eq!(every_to_cron("6h").unwrap(), "0 0 */6 * * *");
        assert_eq!(every_to_cron("1d").unwrap(), "0 0 0 * * *");
        for uneven in ["7m", "45s", "5h", "2d", "1500ms"] {
            assert!(every_to_cron(uneven).is_err(), "{uneven} should be refused");
        }
    }

    #[test]
    fn crontab_lines_gain_a_seconds_field() {
        let schedule = parse_schedule("*/15 * * * *").unwrap();
        assert_eq!(schedule.cron, "0 */15 * * * *");
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:07:00Z")
            .unwrap()
            .to_utc();
        let next: Vec<String> = schedule.upcoming(start, 3).iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            next,
            [
                "2026-01-01T00:15:00+00:00",
                "2026-01-01T00:30:00+00:00",
                "2026-01-01T00:45:00+00:00"
            ]
        );
    }

    #[test]
    fn bad_cron_names_the_field_and_its_range() {
        let error = parse_schedule("0 61 * * * *").unwrap_err();
        assert!(error.contains("is not a valid cron schedule: "), "{error}");
        // A number out of its field's range names the field and the range.
        assert!(
            error.contains("the minute field is \"61\", and 61 is out of range: it takes 0-59"),
            "{error}"
        );
        let error = parse_schedule("0 9 * * 1-8").unwrap_err();
        assert!(error.contains("the day of the week field is \"1-8\""), "{error}");
        let error = parse_schedule("0 0 32 * *").unwrap_err();
        assert!(
            error.contains("the day of the month field is \"32\", and 32 is out of range: it takes 1-31"),
            "{error}"
        );
        assert!(parse_schedule("1 2 3").unwrap_err().contains("has 3 fields"));
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(parse_size(&IntOrString::Int(512)).unwrap(), 512);
        assert_eq!(parse_size(&IntOrString::String("100KiB".into())).unwrap(), 102_400);
        assert_eq!(parse_size(&IntOrString::String("2MB".into())).unwrap(), 2_000_000);
        assert!(parse_size(&IntOrString::String("lots".into())).is_err());
        assert!(parse_size(&IntOrString::Int(0)).is_err());
    }

    #[test]
    fn jitter_is_a_percentage_or_a_shorter_duration() {
        let ttl = Ttl::Expires(Duration::from_secs(3600));
        assert_eq!(parse_jitter("10%", ttl).unwrap(), Jitter::Fraction(0.1));
        assert_eq!(
            parse_jitter("5m", ttl).unwrap(),
            Jitter::Fixed(Duration::from_secs(300))
        );
        assert!(parse_jitter("2h", ttl).is_err());
        assert!(parse_jitter("150%", ttl).is_err());
        assert!(parse_jitter("10%", Ttl::Never).is_err());
    }
}
