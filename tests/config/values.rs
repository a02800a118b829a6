//! Values: in bounds accepted, any number that would crash at run time refused naming the field, lists past their
//! limits refused up front.

use super::*;

/// A valid config with `section` given the extra `line`.
fn with_setting(section: &str, line: &str) -> String {
    let job = "[[warm]]\nname = \"j\"\nschedule = \"every 5m\"\nquery = \"SELECT 1 AS id\"\nkey = \"a:{id}\"\n\
               ttl = \"1h\"\n";
    let binlog = "[binlog]\nserver_id = 7\n";
    match section {
        "warm" if line.starts_with("ttl") => format!("{CONNECTIONS}\n{}", job.replace("ttl = \"1h\"", line)),
        "warm" => format!("{CONNECTIONS}\n{job}{line}\n"),
        "binlog" => format!("{CONNECTIONS}\n{binlog}{line}\n\n{job}"),
        "mysql" => format!(
            "{}\n{job}",
            CONNECTIONS.replace("\n\n[redis]", &format!("\n{line}\n\n[redis]"))
        ),
        section => format!("{CONNECTIONS}\n[{section}]\n{line}\n\n{job}"),
    }
}

#[test]
fn values_that_would_crash_at_run_time_are_refused_naming_the_field() {
    let cases = [
        ("mysql", "pool_size = 4294967296", "mysql.pool_size"),
        (
            "daemon",
            "max_concurrent_jobs = 9223372036854775807",
            "daemon.max_concurrent_jobs",
        ),
        ("daemon", "audit_sample = 9223372036854775807", "daemon.audit_sample"),
        ("binlog", "heartbeat = \"18446744073709551615s\"", "binlog.heartbeat"),
        ("binlog", "heartbeat = \"2h\"", "binlog.heartbeat"),
        ("warm", "timeout = \"18446744073709551615s\"", "warm[0] \"j\".timeout"),
        ("warm", "ttl = \"18446744073709551615s\"", "warm[0] \"j\".ttl"),
        ("daemon", "log_level = \"inf\"", "daemon.log_level"),
        ("daemon", "log_level = \"warning\"", "daemon.log_level"),
    ];
    for (section, line, location) in cases {
        let source = with_setting(section, line);
        let problems = match config::load_str(Path::new("jobs.toml"), &source, HashMap::new()) {
            Ok(_) => panic!("{line} was accepted:\n{source}"),
            Err(error) => error.problems().to_vec(),
        };
        find(&problems, location);
    }
    for good in [
        "log_level = \"warn\"",
        "log_level = \"info,cachewarden=debug\"",
        "audit_sample = 200000",
    ] {
        let source = with_setting("daemon", good);
        assert!(
            config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).is_ok(),
            "{good} was refused"
        );
    }
}

#[test]
fn any_number_in_a_numeric_or_duration_field_is_accepted_in_bounds_or_refused_never_a_panic() {
    let fields = [
        ("mysql", "pool_size"),
        ("daemon", "max_concurrent_jobs"),
        ("daemon", "audit_sample"),
        ("channel", "max_keys_per_message"),
        ("channel", "max_keys_per_pattern"),
        ("binlog", "server_id"),
    ];
    let durations = [
        ("binlog", "heartbeat"),
        ("warm", "timeout"),
        ("warm", "ttl"),
        ("daemon", "shutdown_grace"),
    ];
    let mut rng = fastrand::Rng::with_seed(17);
    for _ in 0..400 {
        let n: i64 = match rng.u8(..4) {
            0 => rng.i64(..),
            1 => rng.i64(-10..10),
            2 => 1 << rng.u32(0..63),
            _ => rng.i64(0..100_000),
        };
        let (section, field) = fields[rng.usize(..fields.len())];
        let source = with_setting(section, &format!("{field} = {n}"));
        let _ = config::load_str(Path::new("jobs.toml"), &source, HashMap::new());
        let (section, field) = durations[rng.usize(..durations.len())];
        let unit = ["ms", "s", "m", "h", "d"][rng.usize(..5)];
        let source = with_setting(section, &format!("{field} = \"{}{unit}\"", n.unsigned_abs()));
        if let Ok(config) = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()) {
            let job = &config.jobs[0];
            assert!(job.timeout <= std::time::Duration::from_secs(10 * 365 * 24 * 3600));
            if let Some(binlog) = config.binlogs.first() {
                assert!(binlog.heartbeat <= std::time::Duration::from_secs(3600));
            }
        }
    }
}

#[test]
fn ssl_mode_in_any_case_and_cron_nicknames_are_accepted() {
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let source = format!(
        "[mysql]\nurl = \"mysql://app:s3cret@db:3306/shop\"\nssl_mode = \"VERIFY_IDENTITY\"\nssl_ca = \"{ca}\"\n\n\
         [redis]\nurl = \"redis://cache:6379/0\"\n\n[[warm]]\nname = \"a\"\nschedule = \"@midnight\"\n\
         query = \"SELECT 1 AS id\"\nkey = \"a:{{id}}\"\nttl = \"1h\"\n\n[[warm]]\nname = \"b\"\nschedule = \"@hourly\"\n\
         query = \"SELECT 1 AS id\"\nkey = \"b:{{id}}\"\nttl = \"1h\"\n"
    );
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.jobs[0].schedule.cron, "0 0 0 * * *");
    assert_eq!(config.jobs[1].schedule.cron, "0 0 * * * *");
    let source = source.replace("@hourly", "@sometimes");
    let problems = problems(&source);
    assert!(
        find(&problems, "warm[1] \"b\".schedule")
            .message
            .contains("is not a cron nickname")
    );
}

#[test]
fn lists_past_their_limits_are_refused_up_front_naming_the_limit() {
    let jobs = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "[[warm]]\nname = \"j{i}\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM t\"\n\
                     key = \"k{i}:{{id}}\"\nttl = \"1h\"\n"
                )
            })
            .collect()
    };
    let at_limit = format!("{CONNECTIONS}\n{}", jobs(2_000));
    assert_eq!(
        config::load_str(Path::new("jobs.toml"), &at_limit, HashMap::new())
            .unwrap()
            .jobs
            .len(),
        2_000
    );
    let over = format!("{CONNECTIONS}\n{}", jobs(2_001));
    let refused = problems(&over);
    assert_eq!(refused.len(), 1, "only the limit is reported: {refused:?}");
    assert!(
        find(&refused, "warm")
            .message
            .contains("2001 [[warm]] jobs: at most 2000 are accepted")
    );
    let patterns: Vec<String> = (0..1_001).map(|i| format!("\"a{i}:*\"")).collect();
    let allow = format!(
        "{CONNECTIONS}\n[channel]\nallow = [{}]\n\n{}",
        patterns.join(", "),
        jobs(1)
    );
    assert!(
        find(&problems(&allow), "channel.allow")
            .message
            .contains("1001 [channel] allow patterns: at most 1000 are accepted; use wider patterns")
    );
}
