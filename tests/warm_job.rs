//! Warm jobs against real MariaDB and Redis: keys, values, TTLs, shapes, the type mapping, skips and failures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachewarden::cli::commands::{self, OnceOutcome};
use cachewarden::exec::warm::{Mode, Progress, RunSummary, WarmRunner, Warmer};
use common::{TestEnv, Warm};
use serde_json::json;

const PRODUCTS: &str = "
CREATE TABLE products (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2), sales INT);
INSERT INTO products VALUES (1, 'Kettle', 19.90, 500), (2, 'Lamp', 5.00, 70), (3, 'Chair', 120.00, 10)
";

async fn run_all(env: &TestEnv, body: &str) -> Vec<OnceOutcome> {
    let config = env.config(body);
    commands::run_once(&config, &[], Mode::Write)
        .await
        .expect("services reachable")
}

fn summary<'a>(outcomes: &'a [OnceOutcome], job: &str) -> &'a RunSummary {
    let outcome = outcomes.iter().find(|o| &*o.job == job).expect("job ran");
    outcome.result.as_ref().unwrap_or_else(|e| panic!("{job} failed: {e}"))
}

fn failure<'a>(outcomes: &'a [OnceOutcome], job: &str) -> &'a str {
    let outcome = outcomes.iter().find(|o| &*o.job == job).expect("job ran");
    outcome
        .result
        .as_ref()
        .err()
        .unwrap_or_else(|| panic!("{job} should have failed"))
}

#[tokio::test]
async fn job_writes_exactly_the_expected_keys_values_and_ttls() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &format!(
            r#"
[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT id, name, price FROM products WHERE sales > 50 ORDER BY id"
key = "{p}product:{{id}}"
ttl = "1h"
jitter = "10%"
"#
        ),
    )
    .await;

    let s = summary(&outcomes, "products");
    assert_eq!((s.rows, s.keys_written, s.skipped()), (2, 2, 0));
    assert_eq!(env.keys().await, [format!("{p}product:1"), format!("{p}product:2")]);
    assert_eq!(
        env.get(&format!("{p}product:1")).await.unwrap(),
        r#"{"id":1,"name":"Kettle","price":"19.90"}"#
    );
    assert_eq!(
        env.get_json(&format!("{p}product:2")).await.unwrap(),
        json!({"id": 2, "name": "Lamp", "price": "5.00"})
    );
    for id in [1, 2] {
        let ttl = env.pttl(&format!("{p}product:{id}")).await;
        // 10% jitter only shortens: between 54 and 60 minutes (less the moments since the write).
        assert!((3_230_000..=3_600_000).contains(&ttl), "product:{id} has PTTL {ttl}");
    }
    assert_eq!(s.bytes_written as usize, 40 + 37);
}

#[tokio::test]
async fn ttl_none_writes_keys_without_expiry() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    run_all(
        &env,
        &Warm::new(&env, "forever")
            .query("SELECT id FROM products")
            .key(&format!("{p}p:{{id}}"))
            .field("ttl", "none")
            .to_string(),
    )
    .await;
    assert_eq!(env.pttl(&format!("{p}p:1")).await, -1);
}

#[tokio::test]
async fn single_key_templates_store_the_whole_result() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let job = |name: &str, query: &str, shape: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"every 1m\"\nquery = \"{query}\"\nkey = \"{p}{name}\"\n\
             ttl = \"5m\"\n{shape}\n"
        )
    };
    let body = [
        job("one_row", "SELECT COUNT(*) AS n, SUM(sales) AS sales FROM products", ""),
        job("many_rows", "SELECT id FROM products ORDER BY id", ""),
        job("no_rows", "SELECT id FROM products WHERE id > 100", ""),
        job(
            "forced_array",
            "SELECT id FROM products WHERE id = 1",
            "shape = \"array\"",
        ),
        job("strict_object", "SELECT id FROM products", "shape = \"object\""),
    ]
    .concat();
    let outcomes = run_all(&env, &body).await;

    assert_eq!(
        env.get_json(&format!("{p}one_row")).await.unwrap(),
        json!({"n": 3, "sales": "580"})
    );
    assert_eq!(
        env.get_json(&format!("{p}many_rows")).await.unwrap(),
        json!([{"id": 1}, {"id": 2}, {"id": 3}])
    );
    assert_eq!(env.get_json(&format!("{p}no_rows")).await.unwrap(), json!([]));
    assert_eq!(
        env.get_json(&format!("{p}forced_array")).await.unwrap(),
        json!([{"id": 1}])
    );
    assert!(failure(&outcomes, "strict_object").contains("exactly one row"));
    assert_eq!(env.get(&format!("{p}strict_object")).await, None);
    assert_eq!(summary(&outcomes, "many_rows").keys_written, 1);
    let ttl = env.pttl(&format!("{p}one_row")).await;
    assert!((270_000..=300_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn every_mysql_type_maps_as_documented() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE t (
            id INT PRIMARY KEY, ti TINYINT, si SMALLINT, mi MEDIUMINT, bi BIGINT, bu BIGINT UNSIGNED,
            flag BOOLEAN, f FLOAT, d DOUBLE, dec_col DECIMAL(30,10), dt DATE, dtm DATETIME(6), ts TIMESTAMP NULL,
            tm TIME, yr YEAR, ch CHAR(3), vc VARCHAR(20), tx TEXT, en ENUM('small','large'), st SET('a','b','c'),
            doc JSON, bin VARBINARY(8), bl BLOB, bits BIT(12), nothing VARCHAR(5)
        );
        SET time_zone = '+02:00';
        INSERT INTO t VALUES (
            1, -128, -32768, -8388608, -9223372036854775808, 18446744073709551615,
            1, 0.1, 2.5, 12345678901234567890.0123456789, '2026-11-26', '2026-11-26 08:30:05.250000',
            '2026-11-26 10:00:00', '-838:59:59', 2026, 'abc', 'héllo \"q\"', 'line1\nline2', 'large', 'a,c',
            '{\"k\": [1, 2]}', X'00FF10', X'DEADBEEF', b'101010101010', NULL
        )",
    )
    .await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &Warm::new(&env, "types")
            .query("SELECT * FROM t")
            .key(&format!("{p}t:{{id}}"))
            .raw(r#"json_columns = ["doc"]"#)
            .to_string(),
    )
    .await;
    summary(&outcomes, "types");
    let value = env.get_json(&format!("{p}t:1")).await.unwrap();
    assert_eq!(
        value,
        json!({
            "id": 1, "ti": -128, "si": -32768, "mi": -8388608, "bi": i64::MIN, "bu": u64::MAX,
            "flag": 1, "f": 0.1, "d": 2.5, "dec_col": "12345678901234567890.0123456789",
            "dt": "2026-11-26", "dtm": "2026-11-26T08:30:05.25",
            // Written at +02:00, read back in UTC.
            "ts": "2026-11-26T08:00:00Z",
            "tm": "-838:59:59", "yr": 2026, "ch": "abc", "vc": "héllo \"q\"", "tx": "line1\nline2",
            "en": "large", "st": "a,c", "doc": {"k": [1, 2]}, "bin": "AP8Q", "bl": "3q2+7w==",
            "bits": 2730, "nothing": null
        })
    );
    // Column order is the query's, not alphabetical.
    let raw = env.get(&format!("{p}t:1")).await.unwrap();
    assert!(raw.starts_with(r#"{"id":1,"ti":-128,"si""#), "{raw}");
}

#[tokio::test]
async fn an_unmappable_column_fails_the_job_naming_the_column() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE places (id INT PRIMARY KEY, location POINT);\nINSERT INTO places VALUES (1, POINT(1, 2))")
        .await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &Warm::new(&env, "places")
            .query("SELECT id, location FROM places")
            .key(&format!("{p}place:{{id}}"))
            .to_string(),
    )
    .await;
    let error = failure(&outcomes, "places");
    assert!(error.contains("column `location` has type GEOMETRY"), "{error}");
    assert!(env.keys().await.is_empty());
}

#[tokio::test]
async fn oversize_values_and_null_keys_are_skipped_and_counted() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE notes (id INT, body TEXT);
        INSERT INTO notes VALUES (1, 'short'), (2, REPEAT('x', 500)), (NULL, 'orphan'), (4, 'also short')",
    )
    .await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &Warm::new(&env, "notes")
            .query("SELECT id, body FROM notes")
            .key(&format!("{p}note:{{id}}"))
            .raw("max_value_bytes = 200")
            .to_string(),
    )
    .await;
    let s = summary(&outcomes, "notes");
    assert_eq!(
        (s.rows, s.keys_written, s.skipped_oversize, s.skipped_null_key),
        (4, 2, 1, 1)
    );
    assert_eq!(env.keys().await, [format!("{p}note:1"), format!("{p}note:4")]);
}

#[tokio::test]
async fn sensitive_columns_fail_the_job_unless_allowed() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(50), password_hash CHAR(8));
        INSERT INTO users VALUES (1, 'a@example.com', 'abcdefgh')",
    )
    .await;
    let p = &env.prefix;
    let job = |name: &str, allow: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT * FROM users\"\n\
             key = \"{p}{name}:{{id}}\"\nttl = \"1h\"\n{allow}\n"
        )
    };
    let outcomes = run_all(
        &env,
        &[
            job("refused", ""),
            job("allowed", "allow_sensitive = [\"password_hash\"]"),
        ]
        .concat(),
    )
    .await;
    let error = failure(&outcomes, "refused");
    assert!(
        error.contains("password_hash") && error.contains("allow_sensitive"),
        "{error}"
    );
    assert_eq!(env.get(&format!("{p}refused:1")).await, None);
    assert_eq!(summary(&outcomes, "allowed").keys_written, 1);
}

#[tokio::test]
async fn a_failing_job_does_not_stop_the_others() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &format!(
            r#"
[[warm]]
name = "broken"
schedule = "every 1h"
query = "SELECT id FROM no_such_table"
key = "{p}broken:{{id}}"
ttl = "1h"

[[warm]]
name = "missing_column"
schedule = "every 1h"
query = "SELECT id FROM products"
key = "{p}x:{{sku}}"
ttl = "1h"

[[warm]]
name = "good"
schedule = "every 1h"
query = "SELECT id FROM products"
key = "{p}good:{{id}}"
ttl = "1h"
"#
        ),
    )
    .await;
    assert!(failure(&outcomes, "broken").contains("no_such_table"));
    assert!(failure(&outcomes, "missing_column").contains("{sku}"));
    assert_eq!(summary(&outcomes, "good").keys_written, 3);
    assert_eq!(env.keys().await.len(), 3);
}

#[tokio::test]
async fn a_run_that_exceeds_its_timeout_fails() {
    let env = TestEnv::new().await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &Warm::new(&env, "slow")
            .query("SELECT 1 AS id, SLEEP(5) AS s")
            .field("timeout", "1s")
            .to_string(),
    )
    .await;
    let error = failure(&outcomes, "slow");
    assert!(
        error.contains("timeout") || error.contains("max_statement_time"),
        "{error}"
    );
    assert_eq!(env.get(&format!("{p}slow:1")).await, None);
}

#[tokio::test]
async fn warm_queries_cannot_write() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &Warm::new(&env, "sneaky")
            .query("DELETE FROM products")
            .key(&format!("{p}s:{{id}}"))
            .to_string(),
    )
    .await;
    let error = failure(&outcomes, "sneaky");
    assert!(error.contains("READ ONLY"), "{error}");
    assert_eq!(sqlx_count(&env, "SELECT COUNT(*) FROM products").await, 3);
}

async fn sqlx_count(env: &TestEnv, query: &'static str) -> i64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    sqlx::query_scalar(query).fetch_one(&mut conn).await.unwrap()
}

#[tokio::test]
async fn large_results_stream_in_batches() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE seq (id INT PRIMARY KEY);
        INSERT INTO seq SELECT seq FROM seq_1_to_25000",
    )
    .await;
    let p = &env.prefix;
    let outcomes = run_all(
        &env,
        &Warm::new(&env, "many")
            .query("SELECT id FROM seq")
            .key(&format!("{p}n:{{id}}"))
            .to_string(),
    )
    .await;
    assert_eq!(summary(&outcomes, "many").keys_written, 25_000);
    assert_eq!(env.keys().await.len(), 25_000);
    assert_eq!(env.get(&format!("{p}n:24999")).await.unwrap(), r#"{"id":24999}"#);
}

#[tokio::test]
async fn a_job_never_overlaps_itself() {
    let env = TestEnv::new().await;
    let p = &env.prefix;
    let config = env.config(
        &Warm::new(&env, "slow")
            .query("SELECT 1 AS id, SLEEP(1) AS s")
            .to_string(),
    );
    let db = cachewarden::exec::database::Database::new(&config.mysql).unwrap();
    let cache = cachewarden::exec::cache::Cache::connect(&config.redis).await.unwrap();
    let warmer = Arc::new(Warmer::new(db, cache, 4));
    let name: Arc<str> = "slow".into();

    // Directly: a second claim while the first is held is refused.
    let guard = warmer.claim(&name).expect("first claim");
    assert!(warmer.claim(&name).is_none());
    drop(guard);
    assert!(warmer.claim(&name).is_some());

    // Through the daemon's executor: two fires in quick succession make one run and one skip.
    let (triggers, rx) = tokio::sync::mpsc::channel(8);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_jobs_tx, jobs_rx) =
        tokio::sync::watch::channel::<Arc<[cachewarden::pure::model::WarmJob]>>(config.jobs.clone().into());
    let runner = WarmRunner::new(warmer.clone(), jobs_rx, rx, Duration::from_secs(5), Default::default());
    let runner = tokio::spawn(runner.run(shutdown.clone()));
    for _ in 0..2 {
        let trigger = cachewarden::pure::model::Trigger::Warm {
            job: name.clone(),
            reason: cachewarden::pure::model::TriggerReason::Manual,
        };
        triggers.send(trigger).await.unwrap();
    }
    let stats = common::eventually(Duration::from_secs(10), || {
        let stats = warmer.stats("slow");
        async move { (stats.succeeded == 1).then_some(stats) }
    })
    .await
    .expect("the first run finishes");
    assert_eq!(
        stats.skipped_overlap, 2,
        "one skip from the direct claim, one from the second fire"
    );
    assert_eq!(
        env.get_json(&format!("{p}slow:1")).await.unwrap(),
        json!({"id": 1, "s": 0})
    );
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test]
async fn at_most_max_concurrent_jobs_query_at_once() {
    let env = TestEnv::new().await;
    let p = &env.prefix;
    // Each query counts the warm queries running at its own start (itself included), then sleeps.
    let jobs: String = (0..4)
        .map(|i| {
            format!(
                "[[warm]]\nname = \"j{i}\"\nschedule = \"every 1h\"\nkey = \"{p}j{i}\"\nttl = \"1h\"\nquery = \"\"\"\n\
                 SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE '%concurrency_probe%' AND DB = DATABASE()) AS running, SLEEP(0.4) AS concurrency_probe\n\"\"\"\n"
            )
        })
        .collect();
    let limited = format!("[daemon]\nmax_concurrent_jobs = 2\n\n{jobs}");
    let outcomes = run_all(&env, &limited).await;
    let mut most = 0;
    for i in 0..4 {
        summary(&outcomes, &format!("j{i}"));
        let value = env.get_json(&format!("{p}j{i}")).await.unwrap();
        most = most.max(value["running"].as_i64().unwrap());
    }
    assert!(
        (1..=2).contains(&most),
        "saw {most} warm queries at once with a limit of 2"
    );

    // Without the limit the same jobs do overlap, so the probe can see overlap when it happens.
    let unlimited = format!("[daemon]\nmax_concurrent_jobs = 4\n\n{jobs}");
    let outcomes = run_all(&env, &unlimited).await;
    let mut most = 0;
    for i in 0..4 {
        summary(&outcomes, &format!("j{i}"));
        let value = env.get_json(&format!("{p}j{i}")).await.unwrap();
        most = most.max(value["running"].as_i64().unwrap());
    }
    assert!(most >= 3, "saw only {most} warm queries at once without a limit");
}

#[tokio::test]
async fn dry_run_progress_counters_match_the_summary() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let config = env.config(
        &Warm::new(&env, "products")
            .query("SELECT id FROM products")
            .key(&format!("{p}product:{{id}}"))
            .to_string(),
    );
    let db = cachewarden::exec::database::Database::new(&config.mysql).unwrap();
    let cache = cachewarden::exec::cache::Cache::connect(&config.redis).await.unwrap();
    let warmer = Warmer::new(db, cache, 1);
    let progress = Progress::default();
    let guard = warmer.claim(&config.jobs[0].name).unwrap();
    let summary = warmer
        .run(&guard, &config.jobs[0], Mode::DryRun, &progress)
        .await
        .unwrap();
    assert_eq!(summary.keys_written, 3);
    assert_eq!(progress.rows.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(progress.keys.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert!(env.keys().await.is_empty(), "a dry run writes nothing");
}

#[tokio::test]
async fn a_warm_run_says_when_redis_evicted_keys_while_it_wrote() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, body VARCHAR(500));
         INSERT INTO big SELECT seq, REPEAT('x', 400) FROM seq_1_to_20000",
    )
    .await;
    // About 9 MB of values (each with a TTL) into a Redis allowed 5 MB under ElastiCache's default policy: it evicts
    // the run's keys while the run writes. (With less, the pipelines queued on a loaded machine can fill the limit by
    // themselves once the keys are gone, and Redis answers OOM: nothing is left to evict.) (Under allkeys-* it may evict the protection's own keys too; the run's
    // batches are then refused rather than risk a stale write: `protection.rs` covers that.)
    let mut own = common::OwnRedis::start().await;
    for (name, value) in [("maxmemory", "5mb"), ("maxmemory-policy", "volatile-lru")] {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", name, value])
            .query_async(&mut own.conn)
            .await
            .unwrap();
    }
    let path = env.config_file_with_redis(
        &format!("redis://127.0.0.1:{}/0", own.port),
        &Warm::new(&env, "big").query("SELECT id, body FROM big").to_string(),
    );
    let (code, stdout, stderr) = common::cli_output(&["run", "--once"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("big: Redis evicted") && stdout.contains("during the run (maxmemory)"),
        "{stdout}"
    );
    assert!(stderr.contains("Redis evicted keys while this run wrote"), "{stderr}");
}

/// `run --once` runs a partitioned job piece by piece (an unsigned key column: the range reads as integers), every
/// key written once; a column that is not an integer fails the run naming it.
#[tokio::test]
async fn a_partitioned_job_runs_in_pieces_and_refuses_a_column_that_is_not_an_integer() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let (good, bad) = (
        format!("part{}", fastrand::u32(..)),
        format!("part{}", fastrand::u32(..)),
    );
    let outcomes = run_all(
        &env,
        &format!(
            r#"
[[warm]]
name = "{good}"
schedule = "every 1h"
query = "SELECT id, name FROM products"
key = "{p}product:{{id}}"
ttl = "1h"
partitions = 2

[[warm]]
name = "{bad}"
schedule = "every 1h"
query = "SELECT id, name FROM products"
key = "{p}named:{{id}}"
ttl = "1h"
partitions = 2
partition_by = "name"
"#
        ),
    )
    .await;
    let s = summary(&outcomes, &good);
    assert_eq!((s.rows, s.keys_written), (3, 3));
    let mut keys = env.keys().await;
    keys.sort();
    assert_eq!(keys, [1, 2, 3].map(|id| format!("{p}product:{id}")));
    // The board: two pieces (ids 1–2 and 3), each done once.
    let board_key = format!("cachewarden:pieces:{{{good}}}");
    let mut redis = env.redis().await;
    let board: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&board_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(board.get("state").map(String::as_str), Some("done"), "{board:?}");
    assert_eq!(board.get("range:0").map(String::as_str), Some("1:2"), "{board:?}");
    assert_eq!(board.get("range:1").map(String::as_str), Some("3:3"), "{board:?}");
    for piece in 0..2 {
        assert_eq!(
            board.get(&format!("completions:{piece}")).map(String::as_str),
            Some("1"),
            "{board:?}"
        );
    }
    let message = failure(&outcomes, &bad);
    assert!(
        message.contains("partition_by column \"name\" is not an integer"),
        "{message}"
    );
    for key in [board_key, format!("cachewarden:pieces:{{{bad}}}")] {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut redis).await.unwrap();
    }
}
