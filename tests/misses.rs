//! `[misses]` on real Redis (a server and a cluster of the test's own: keyspace notifications are server-wide) and
//! MariaDB: misses counted per job, `fill_on_miss` loading missed keys, the negative cache, the rate limit and the
//! bounded queue under a flood.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, OwnRedis, TestEnv, eventually, metric, wait_for_admin};

const SCHEMA: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50));
INSERT INTO products SELECT seq, CONCAT('p', seq) FROM seq_1_to_60;
CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(50));
INSERT INTO users VALUES (1, 'ann')
";

/// Jobs that never run by schedule: `products` fills on a miss, `users` is only counted.
fn jobs(env: &TestEnv, misses: &str) -> String {
    let p = &env.prefix;
    format!(
        r#"[misses]
enabled = true
{misses}

[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name FROM products"
refresh_query = "SELECT id, name FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"
fill_on_miss = true

[[warm]]
name = "users"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name FROM users"
refresh_query = "SELECT id, name FROM users WHERE id = :id"
key = "{p}user:{{id}}"
ttl = "1h"
"#
    )
}

/// A daemon on `body` against Redis at `redis_url`, once it follows key misses.
async fn start(env: &TestEnv, redis_url: &str, body: &str) -> Daemon {
    let path = env.config_file_with_redis(redis_url, body);
    let mut daemon = Daemon::start(env, &path, &[], &[]);
    wait_for_admin(env).await;
    let following = eventually(Duration::from_secs(10), || async {
        (metric(env, "cachewarden_cache_misses_reported").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "misses are not followed:\n{}", daemon.log());
    assert!(daemon.is_running());
    daemon
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn misses_are_counted_per_job_and_filled_once_and_absent_rows_are_not_read_again() {
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let mut redis = OwnRedis::start().await;
    let url = format!("redis://127.0.0.1:{}/3", redis.port);
    let body = jobs(&env, "negative_ttl = \"1h\"");
    // Before the first start, check --connect says what the daemon will turn on.
    let (code, out) = env.run_cli(&["check", "--connect"], &env.config_file_with_redis(&url, &body));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("does not report key misses yet") && out.contains("\"Em\""),
        "{out}"
    );
    let mut daemon = start(&env, &url, &body).await;
    let conn = &mut redis.conn;
    redis::cmd("SELECT").arg(3).query_async::<()>(conn).await.unwrap();
    // The daemon turned the notifications on (the server started with none).
    let (_, flags): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await
        .unwrap();
    assert!(flags.contains('E') && flags.contains('m'), "{flags:?}");

    let p = env.prefix.clone();
    for id in 1..=5 {
        assert_eq!(get(conn, &format!("{p}product:{id}")).await, None);
    }
    for _ in 0..3 {
        assert_eq!(get(conn, &format!("{p}user:1")).await, None);
    }
    get(conn, "someone-elses:key").await;
    let filled = eventually(Duration::from_secs(10), || async {
        let mut conn = redis.conn.clone();
        let mut values = Vec::new();
        for id in 1..=5 {
            values.push(get(&mut conn, &format!("{p}product:{id}")).await?);
        }
        Some(values)
    })
    .await;
    assert_eq!(
        filled,
        Some((1..=5).map(|id| format!(r#"{{"id":{id},"name":"p{id}"}}"#)).collect()),
        "{}",
        daemon.log()
    );
    let conn = &mut redis.conn;
    // Counted per job; `users` does not fill; a key of no job is ignored.
    assert!(metric(&env, r#"cachewarden_cache_misses_total{warm_job="products"}"#).await >= 5.0);
    assert_eq!(
        metric(&env, r#"cachewarden_cache_misses_total{warm_job="users"}"#).await,
        3.0
    );
    assert!(metric(&env, "cachewarden_cache_misses_ignored_total").await >= 1.0);
    assert_eq!(get(conn, &format!("{p}user:1")).await, None);
    assert_eq!(
        metric(&env, r#"cachewarden_cache_fills_total{outcome="written"}"#).await,
        5.0
    );
    // Filled with the job's TTL.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}product:1"))
        .query_async(conn)
        .await
        .unwrap();
    assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{ttl}");

    // A key whose row does not exist is read once, then not again within negative_ttl.
    let absent = format!("{p}product:999");
    get(conn, &absent).await;
    let read = eventually(Duration::from_secs(10), || async {
        (metric(&env, r#"cachewarden_cache_fills_total{outcome="absent"}"#).await == 1.0).then_some(())
    })
    .await;
    assert!(read.is_some(), "{}", daemon.log());
    for _ in 0..3 {
        get(conn, &absent).await;
    }
    let skipped = eventually(Duration::from_secs(10), || async {
        (metric(&env, r#"cachewarden_cache_fills_skipped_total{reason="absent"}"#).await == 3.0).then_some(())
    })
    .await;
    assert!(skipped.is_some(), "{}", daemon.log());
    assert_eq!(
        metric(&env, r#"cachewarden_cache_fills_total{outcome="absent"}"#).await,
        1.0
    );
    // The row appears: not read until the window passes (the negative cache is what bounds a scan of absent ids).
    env.sql("INSERT INTO products VALUES (999, 'late')").await;
    get(conn, &absent).await;
    let skipped = eventually(Duration::from_secs(10), || async {
        (metric(&env, r#"cachewarden_cache_fills_skipped_total{reason="absent"}"#).await == 4.0).then_some(())
    })
    .await;
    assert!(skipped.is_some(), "{}", daemon.log());
    assert_eq!(get(conn, &absent).await, None);
    assert_eq!(
        metric(&env, r#"cachewarden_cache_fills_total{outcome="written"}"#).await,
        5.0
    );
    // The status page lists the most missed templates first.
    let page = common::get(&env, "/").await.expect("the status page").body;
    let (products, users) = (
        page.find(&format!("{p}product:{{id}}")),
        page.find(&format!("{p}user:{{id}}")),
    );
    assert!(page.contains("<h2>Misses</h2>"), "{page}");
    assert!(products.is_some() && products < users, "{page}");
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn where_redis_refuses_config_the_log_says_what_to_set_in_the_parameter_group() {
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    // As on ElastiCache: CONFIG is not available, and notifications are off.
    let redis = OwnRedis::start_with(&["--rename-command", "CONFIG", ""]).await;
    let path = env.config_file_with_redis(&format!("redis://127.0.0.1:{}/0", redis.port), &jobs(&env, ""));
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("cannot read notify-keyspace-events") && out.contains("parameter group"),
        "{out}"
    );
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let said = eventually(Duration::from_secs(10), || async {
        let log = daemon.log();
        (log.contains("notify-keyspace-events") && log.contains("parameter group")).then_some(())
    })
    .await;
    assert!(said.is_some(), "{}", daemon.log());
    assert_eq!(metric(&env, "cachewarden_cache_misses_reported").await, 0.0);
    let page = common::get(&env, "/").await.expect("the status page").body;
    assert!(page.contains("notify-keyspace-events lacks E and m"), "{page}");
    // Still ready: misses are an extra, and the rest of the daemon works.
    assert_eq!(common::get(&env, "/readyz").await.map(|r| r.status), Some(200));
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_flood_of_misses_is_rate_limited_and_bounded_and_the_channel_keeps_applying() {
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let redis = OwnRedis::start().await;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let body = format!(
        "[channel]\nname = \"{p}inval\"\n\n{}",
        jobs(&env, "max_fills_per_second = 100"),
        p = env.prefix
    );
    let mut daemon = start(&env, &url, &body).await;
    let p = env.prefix.clone();

    // More distinct missed keys than the queue holds, in one pipeline.
    let started = Instant::now();
    let mut flood = redis::pipe();
    for id in 1..=101_000 {
        flood.cmd("GET").arg(format!("{p}product:{id}"));
    }
    let mut conn = redis.conn.clone();
    let _: Vec<Option<String>> = flood.query_async(&mut conn).await.unwrap();

    // Meanwhile the channel applies at once.
    let kept = format!("{p}product:kept");
    redis::cmd("SET")
        .arg(&kept)
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let message = format!(r#"{{"delete": ["{kept}"]}}"#);
    redis::cmd("PUBLISH")
        .arg(format!("{p}inval"))
        .arg(&message)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    let deleted = eventually(Duration::from_secs(5), || async {
        let mut conn = redis.conn.clone();
        get(&mut conn, &kept).await.is_none().then_some(())
    })
    .await;
    assert!(deleted.is_some(), "the channel waited for the fills:\n{}", daemon.log());

    // The rate holds: at most the bucket (a tenth of a second's worth) plus 100 a second since the flood began.
    for _ in 0..10 {
        let fills = metric(&env, r#"cachewarden_cache_fills_total{outcome="written"}"#).await
            + metric(&env, r#"cachewarden_cache_fills_total{outcome="absent"}"#).await;
        let allowed = 10.0 + 100.0 * started.elapsed().as_secs_f64();
        assert!(fills <= allowed, "{fills} fills after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metric(&env, r#"cachewarden_cache_fills_total{outcome="written"}"#).await > 0.0);
    // The queue is bounded: what did not fit was dropped and counted.
    let dropped = metric(&env, r#"cachewarden_cache_fills_skipped_total{reason="queue_full"}"#).await;
    assert!(dropped >= 1.0, "{dropped}");
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn on_a_cluster_misses_on_every_master_are_counted_and_filled() {
    let cluster = common::OwnCluster::start(3, 0);
    let env = TestEnv::new().await.on_cluster();
    env.sql(SCHEMA).await;
    let mut daemon = start(&env, &cluster.url(), &jobs(&env, "")).await;
    let p = env.prefix.clone();
    let client = redis::cluster::ClusterClient::new(vec![cluster.url()]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    // Thirty keys spread over the three masters' slots.
    for id in 1..=30 {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{p}product:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, None);
    }
    let filled = eventually(Duration::from_secs(10), || async {
        let mut conn = client.get_async_connection().await.ok()?;
        for id in 1..=30 {
            let value: Option<String> = redis::cmd("GET")
                .arg(format!("{p}product:{id}"))
                .query_async(&mut conn)
                .await
                .ok()?;
            (value? == format!(r#"{{"id":{id},"name":"p{id}"}}"#)).then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(filled.is_some(), "{}", daemon.log());
    assert!(metric(&env, r#"cachewarden_cache_misses_total{warm_job="products"}"#).await >= 30.0);
    assert_eq!(
        metric(&env, r#"cachewarden_cache_fills_total{outcome="written"}"#).await,
        30.0
    );
    assert_eq!(daemon.stop().await, Some(0));
}
