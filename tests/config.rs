//! Configuration: the shipped jobs.toml, every problem reported at once with file, line, job and field, and
//! environment overrides.

use std::collections::HashMap;
use std::path::Path;

use cachewarden::config::{self, ConfigError, Problem};
use cachewarden::pure::model::{Jitter, Ttl};

const CONNECTIONS: &str =
    "[mysql]\nurl = \"mysql://app:s3cret@db:3306/shop\"\n\n[redis]\nurl = \"redis://cache:6379/0\"\n";

fn problems(source: &str) -> Vec<Problem> {
    problems_with_env(source, HashMap::new())
}

fn problems_with_env(source: &str, env: HashMap<String, String>) -> Vec<Problem> {
    match config::load_str(Path::new("jobs.toml"), source, env) {
        Ok(_) => panic!("config should be invalid:\n{source}"),
        Err(error) => error.problems().to_vec(),
    }
}

fn find<'a>(problems: &'a [Problem], location: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.location == location)
        .unwrap_or_else(|| panic!("no problem at {location}; got {problems:#?}"))
}

#[test]
fn the_shipped_jobs_toml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs.toml");
    let config = config::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.jobs.iter().map(|j| &*j.name).collect();
    assert_eq!(names, ["top_products", "catalog", "dashboard_stats", "active_sessions"]);
    let top = config.job("top_products").unwrap();
    assert_eq!(top.ttl, Ttl::Expires(std::time::Duration::from_secs(86_400)));
    assert_eq!(top.jitter, Jitter::Fraction(0.1));
    assert_eq!(top.max_value_bytes, 100 * 1024);
    assert_eq!(config.daemon.max_concurrent_jobs, 2);
}

#[test]
fn every_problem_is_reported_at_once_with_job_field_and_line() {
    let source = format!(
        r#"{CONNECTIONS}
[[warm]]
name = "bad_cron"
schedule = "0 61 * * * *"
query = "SELECT 1 AS id"
key = "a:{{id}}"
ttl = "1h"

[[warm]]
name = "no_ttl"
schedule = "every 5m"
query = "SELECT 1 AS id"
key = "b:{{id}}"

[[warm]]
name = "typos"
shedule = "every 5m"
query = "SELECT 1 AS id"
key = "c:{{id"
ttl = "forever"
jitter = "150%"

[[warm]]
name = "bad_cron"
schedule = "every 7m"
query = ""
key = "d"
ttl = "1h"
shape = "list"
enabled = "yes"
"#
    );
    let problems = problems(&source);
    // In file order.
    let lines: Vec<Option<usize>> = problems.iter().map(|problem| problem.line).collect();
    assert!(lines.is_sorted(), "{lines:?}");

    let cron = find(&problems, "warm[0] \"bad_cron\".schedule");
    assert_eq!(cron.line, Some(9));
    assert!(
        cron.message.contains("is not a valid cron schedule: "),
        "{}",
        cron.message
    );

    let ttl = find(&problems, "warm[1] \"no_ttl\"");
    assert!(ttl.message.contains("`ttl` is required"), "{}", ttl.message);
    assert!(ttl.message.contains("ttl = \"none\""), "{}", ttl.message);
    assert_eq!(ttl.line, Some(14));

    let unknown = find(&problems, "warm[2] \"typos\".shedule");
    assert!(
        unknown
            .message
            .contains("unknown field `shedule` (did you mean `schedule`?)"),
        "{}",
        unknown.message
    );
    assert_eq!(unknown.line, Some(22));
    assert!(
        find(&problems, "warm[2] \"typos\"")
            .message
            .contains("`schedule` is required")
    );
    assert!(
        find(&problems, "warm[2] \"typos\".key")
            .message
            .contains("never closed")
    );
    assert!(
        find(&problems, "warm[2] \"typos\".ttl")
            .message
            .contains("\"forever\" is not a duration")
    );

    // A type error stops that one job's deserialization, and is still reported with its field.
    let enabled = find(&problems, "warm[3] \"bad_cron\".enabled");
    assert!(enabled.message.contains("invalid type"), "{}", enabled.message);
    assert_eq!(enabled.line, Some(35));
}

#[test]
fn semantic_problems_in_one_job_are_all_listed() {
    let source = format!(
        r#"{CONNECTIONS}
[[warm]]
name = "uneven"
schedule = "every 7m"
query = "  "
key = "per:{{id}}"
ttl = "1h"
jitter = "2h"
shape = "object"
"#
    );
    let problems = problems(&source);
    assert!(
        find(&problems, "warm[0] \"uneven\".schedule")
            .message
            .contains("cannot fire at even wall-clock times")
    );
    assert!(find(&problems, "warm[0] \"uneven\".query").message.contains("is empty"));
    assert!(
        find(&problems, "warm[0] \"uneven\".jitter")
            .message
            .contains("shorter than the TTL")
    );
    assert!(
        find(&problems, "warm[0] \"uneven\".shape")
            .message
            .contains("only applies to a key without placeholders")
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn duplicate_job_names_and_unknown_sections_are_refused() {
    let job = "schedule = \"every 1m\"\nquery = \"SELECT 1 AS id\"\nkey = \"k:{id}\"\nttl = \"1m\"\n";
    let source =
        format!("{CONNECTIONS}\n[redsi]\nurl = \"x\"\n\n[[warm]]\nname = \"a\"\n{job}\n[[warm]]\nname = \"a\"\n{job}");
    let problems = problems(&source);
    assert!(find(&problems, "redsi").message.contains("unknown section"));
    let duplicate = find(&problems, "warm[1] \"a\".name");
    assert!(duplicate.message.contains("already named \"a\""));
    assert_eq!(duplicate.line, Some(18));
}

#[test]
fn missing_connections_name_the_environment_variable() {
    let problems = problems("");
    assert!(find(&problems, "mysql.url").message.contains("CACHEWARDEN_MYSQL__URL"));
    assert!(find(&problems, "redis.url").message.contains("CACHEWARDEN_REDIS__URL"));
}

#[test]
fn bad_urls_are_reported_without_echoing_secrets() {
    let source = "[mysql]\nurl = \"postgres://app:hunter2@db/shop\"\n[redis]\nurl = \"http://:hunter2@cache\"\n";
    let error = config::load_str(Path::new("jobs.toml"), source, HashMap::new()).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("jobs.toml:2: mysql.url: is not a valid MySQL URL"),
        "{text}"
    );
    assert!(
        text.contains("jobs.toml:4: redis.url: is not a valid Redis URL"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn environment_overrides_win_over_the_file() {
    let env = HashMap::from([
        (
            "CACHEWARDEN_MYSQL__URL".to_string(),
            "mysql://ro:pw@replica:3306/shop".to_string(),
        ),
        ("CACHEWARDEN_MYSQL__POOL_SIZE".to_string(), "9".to_string()),
        ("CACHEWARDEN_DAEMON__MAX_CONCURRENT_JOBS".to_string(), "3".to_string()),
        ("CACHEWARDEN_CONFIG".to_string(), "/elsewhere.toml".to_string()),
    ]);
    let config = config::load_str(Path::new("jobs.toml"), CONNECTIONS, env).unwrap();
    assert_eq!(config.mysql.url.expose(), "mysql://ro:pw@replica:3306/shop");
    assert_eq!(config.mysql.url.to_string(), "mysql://ro:***@replica:3306/shop");
    assert_eq!(config.mysql.pool_size, 9);
    assert_eq!(config.daemon.max_concurrent_jobs, 3);
    assert_eq!(config.redis.url.expose(), "redis://cache:6379/0");
}

#[test]
fn bad_environment_overrides_name_the_variable() {
    let env = HashMap::from([
        ("CACHEWARDEN_MYSQL__POOL_SIZE".to_string(), "many".to_string()),
        ("CACHEWARDEN_MYSQL__URLL".to_string(), "x".to_string()),
        ("CACHEWARDEN_WARM__NAME".to_string(), "x".to_string()),
    ]);
    let problems = problems_with_env(CONNECTIONS, env);
    let pool = find(
        &problems,
        "mysql.pool_size (from environment variable CACHEWARDEN_MYSQL__POOL_SIZE)",
    );
    assert!(pool.message.contains("\"many\" is not a whole number"));
    assert!(
        find(
            &problems,
            "mysql.urll (from environment variable CACHEWARDEN_MYSQL__URLL)"
        )
        .message
        .contains("unknown field")
    );
    assert!(
        find(&problems, "environment variable CACHEWARDEN_WARM__NAME")
            .message
            .contains("only fields of")
    );
}

#[test]
fn invalid_toml_points_at_the_line() {
    let error = config::load_str(Path::new("jobs.toml"), "[mysql]\nurl = \n", HashMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(problems[0].line, Some(2));
    assert!(problems[0].message.starts_with("not valid TOML"));
}

#[test]
fn channel_and_refresh_settings_are_checked() {
    let source = format!(
        r#"{CONNECTIONS}
[channel]
allow = ["product:?", "user:*"]
on_gap = "panic"
group = "g"

[[warm]]
name = "p"
schedule = "every 1h"
query = "SELECT id FROM products"
refresh_query = "SELECT id FROM products WHERE id = :id AND sku = :sku"
key = "product:{{id}}"
ttl = "1h"

[[warm]]
name = "stats"
schedule = "every 1m"
query = "SELECT COUNT(*) AS n FROM orders"
refresh_query = "SELECT COUNT(*) AS n FROM orders WHERE id = :id"
key = "stats"
ttl = "1m"
"#
    );
    let problems = problems(&source);
    assert!(
        find(&problems, "channel.allow")
            .message
            .contains("\"product:?\" is not an allow pattern")
    );
    assert!(
        find(&problems, "channel.on_gap")
            .message
            .contains("\"panic\" is not an on_gap action")
    );
    assert!(
        find(&problems, "channel.group")
            .message
            .contains("only apply with `stream`")
    );
    let refresh = find(&problems, "warm[0] \"p\".refresh_query");
    assert!(
        refresh.message.contains(":sku is not a placeholder"),
        "{}",
        refresh.message
    );
    assert_eq!(refresh.line, Some(16));
    assert!(
        find(&problems, "warm[1] \"stats\".refresh_query")
            .message
            .contains("has no placeholders")
    );
}

#[test]
fn the_channel_allow_list_defaults_to_the_job_templates() {
    let source = format!(
        "{CONNECTIONS}\n[[warm]]\nname = \"p\"\nschedule = \"every 1h\"\nquery = \"SELECT 1 AS id\"\n\
         key = \"product:{{id}}:{{lang}}\"\nttl = \"1h\"\nrefresh_query = \"SELECT 1 AS id WHERE :lang = :id\"\n"
    );
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap();
    assert_eq!(config.channel.allow, ["product:*:*"]);
    assert_eq!(config.channel.name, "cache_invalidation");
    assert!(config.channel.enabled && config.channel.stream.is_none());
    let job = config.job("p").unwrap();
    assert_eq!(job.refresh_query.as_deref(), Some("SELECT 1 AS id WHERE ? = ?"));
    assert_eq!(job.refresh_params, ["lang", "id"]);
}

#[test]
fn binlog_and_on_change_rules_are_checked() {
    let source = format!(
        r#"{CONNECTIONS}
[binlog]
start = "somewhere"
checkpoint = "etcd"

[[warm]]
name = "p"
schedule = "every 1h"
query = "SELECT id FROM products"
key = "product:{{id}}"
ttl = "1h"

[[on_change]]
table = "shop.products"
refresh = ["product:{{id}}"]
warm = ["nope"]
debounce = "soon"
events = ["delete", "upsert"]

[[on_change]]
table = "orders"

[[on_change]]
table = "shop_*.products"
refresh = ["product:{{id}}"]
"#
    );
    let problems = problems(&source);
    assert!(find(&problems, "binlog.server_id").message.contains("is required"));
    assert!(
        find(&problems, "binlog.start")
            .message
            .contains("\"somewhere\" is not a start position")
    );
    assert!(
        find(&problems, "binlog.checkpoint")
            .message
            .contains("\"etcd\" is not a checkpoint store")
    );
    let refresh = find(&problems, "on_change[0] \"shop.products\".refresh");
    assert!(
        refresh
            .message
            .contains("needs a [[warm]] job with that key template and a refresh_query")
    );
    assert_eq!(refresh.line, Some(20));
    assert!(
        find(&problems, "on_change[0] \"shop.products\".warm")
            .message
            .contains("no [[warm]] job named \"nope\"")
    );
    assert!(
        find(&problems, "on_change[0] \"shop.products\".debounce")
            .message
            .contains("not a duration")
    );
    assert!(
        find(&problems, "on_change[0] \"shop.products\".events")
            .message
            .contains("\"upsert\" is no row event")
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.location == "on_change[2] \"shop_*.products\".refresh"
                && problem
                    .message
                    .contains("is a table pattern: its rows come from several tables")),
        "{problems:?}"
    );
    assert!(
        find(&problems, "on_change[1] \"orders\"")
            .message
            .contains("does nothing")
    );
}

#[test]
fn on_change_tables_default_to_the_mysql_database() {
    let source = format!(
        "{CONNECTIONS}\n[binlog]\nserver_id = 42\n\n[[on_change]]\ntable = \"sessions\"\ndelete = [\"session:{{token}}\"]\n"
    );
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap();
    let binlog = config.binlog.as_ref().unwrap();
    assert_eq!(binlog.server_id, 42);
    assert_eq!(
        binlog.url, config.mysql.url,
        "replication uses [mysql] url unless told otherwise"
    );
    assert_eq!(
        (config.rules[0].database.as_str(), config.rules[0].table.as_str()),
        ("shop", "sessions")
    );
}

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
            if let Some(binlog) = &config.binlog {
                assert!(binlog.heartbeat <= std::time::Duration::from_secs(3600));
            }
        }
    }
}

#[test]
fn a_rule_naming_an_invalid_job_points_at_that_job_not_at_a_missing_one() {
    let source = format!(
        r#"{CONNECTIONS}
[binlog]
server_id = 7

[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT id FROM products"
refresh_query = "SELECT id FROM products WHERE id = :id"
key = "product:{{id}}"
shape = "list"
ttl = "1h"

[[on_change]]
table = "shop.products"
refresh = ["product:{{id}}"]
"#
    );
    let problems = problems(&source);
    assert!(
        find(&problems, "warm[0] \"products\".shape")
            .message
            .contains("is not a shape")
    );
    let refresh = find(&problems, "on_change[0] \"shop.products\".refresh");
    assert!(
        refresh
            .message
            .contains("is the key of [[warm]] job \"products\", which is invalid"),
        "{}",
        refresh.message
    );
}

#[test]
fn two_thousand_bad_jobs_are_each_reported_with_their_line() {
    // As many jobs as a configuration may have, each with its own problem.
    let mut source = String::from(CONNECTIONS);
    for i in 0..2_000 {
        source.push_str(&format!(
            "\n[[warm]]\nname = \"job{i}\"\nschedule = \"every 1h\"\nquery = \"SELECT 1 AS id\"\nkey = \"k{i}:{{id}}\"\n\
             ttl = \"1h\"\ncolour = 1\n"
        ));
    }
    let header = CONNECTIONS.lines().count();
    let problems = problems(&source);
    assert_eq!(problems.len(), 2_000);
    let last = find(&problems, "warm[1999] \"job1999\".colour");
    assert_eq!(last.line, Some(header + 1_999 * 8 + 8));
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
fn one_allow_pattern_may_be_written_alone() {
    for (written, expected) in [
        ("\"*\"", vec!["*"]),
        ("[\"user:*\", \"product:*\"]", vec!["user:*", "product:*"]),
    ] {
        let source = format!("{CONNECTIONS}\n[channel]\nallow = {written}\n");
        let config =
            config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.channel.allow, expected, "{written}");
    }
    let problems = problems(&format!("{CONNECTIONS}\n[channel]\nallow = 5\n"));
    assert!(
        find(&problems, "channel.allow").message.contains("allow"),
        "{problems:?}"
    );
}

#[test]
fn a_checkpoint_file_alone_means_the_file_store_and_beside_redis_is_refused() {
    let job = "[[warm]]\nname = \"p\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM t\"\nkey = \"p:{id}\"\nttl = \"1h\"\n";
    let alone = format!("{CONNECTIONS}\n[binlog]\nserver_id = 7\ncheckpoint_file = \"/tmp/cw.ckpt\"\n\n{job}");
    let config = config::load_str(Path::new("jobs.toml"), &alone, HashMap::new()).unwrap();
    assert_eq!(
        config.binlog.unwrap().checkpoint,
        config::CheckpointStore::File("/tmp/cw.ckpt".into())
    );
    let both = format!(
        "{CONNECTIONS}\n[binlog]\nserver_id = 7\ncheckpoint = \"redis\"\ncheckpoint_file = \"/tmp/cw.ckpt\"\n\n{job}"
    );
    assert!(
        find(&problems(&both), "binlog.checkpoint_file")
            .message
            .contains("remove one of the two")
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

#[test]
fn misses_settings_and_fill_on_miss_are_checked() {
    let job = |name: &str, refresh: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM products\"\n{refresh}\
             key = \"{name}:{{id}}\"\nttl = \"1h\"\nfill_on_miss = true\n\n"
        )
    };
    let refresh = "refresh_query = \"SELECT id FROM products WHERE id = :id\"\n";
    // fill_on_miss without [misses], and without a refresh_query.
    let source = format!("{CONNECTIONS}\n{}{}", job("a", refresh), job("b", ""));
    let found = problems(&source);
    assert!(
        find(&found, "warm[0] \"a\".fill_on_miss")
            .message
            .contains("needs [misses] enabled = true")
    );
    assert!(
        find(&found, "warm[1] \"b\".fill_on_miss")
            .message
            .contains("needs a refresh_query")
    );
    let source = format!(
        "{CONNECTIONS}\n[misses]\nenabled = true\nmax_fills_per_second = 0\nnegative_ttl = \"soon\"\n\n{}",
        job("a", refresh)
    );
    let found = problems(&source);
    assert!(
        find(&found, "misses.max_fills_per_second")
            .message
            .contains("must be at least 1")
    );
    find(&found, "misses.negative_ttl");
    assert_eq!(found.len(), 2, "{found:?}");
    // Valid: the defaults.
    let source = format!("{CONNECTIONS}\n[misses]\nenabled = true\n\n{}", job("a", refresh));
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).expect("valid");
    let misses = config.misses.expect("[misses] enabled");
    assert_eq!(misses.max_fills_per_second, 1000);
    assert_eq!(misses.negative_ttl, std::time::Duration::from_secs(10));
    assert!(config.jobs[0].fill_on_miss);
}
