//! How problems are reported: all at once, with file, line, job and field, secrets hidden, environment overrides named.

use super::*;

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
