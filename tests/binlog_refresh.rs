//! Refresh-on-change under the conditions that used to break it: a reader that lags the binlog (the event arrives
//! before the row is visible), a write storm on a few hot rows with a cold row changing meanwhile, and a refresh
//! query that fails for good.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, eventually, following as start, metric};
use sqlx::Connection as _;

const SCHEMA: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO products SELECT seq, CONCAT('p', seq), 1.00 FROM seq_1_to_60;
CREATE TABLE tags (id INT PRIMARY KEY, label VARCHAR(20));
INSERT INTO tags VALUES (1, 'a')
";

/// `[binlog]` (reading `binlog_url`'s binlog), a products job whose refresh reads `[mysql]`, and the rules.
fn config(env: &TestEnv, mysql_url: &str, binlog_url: &str, refresh_query: &str) -> String {
    let p = &env.prefix;
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    format!(
        r#"[mysql]
url = "{mysql_url}"

[redis]
url = "{redis}"

[admin]
listen = "{admin}"

[channel]
enabled = false

[binlog]
url = "{binlog_url}"
server_id = {server_id}
checkpoint_key = "{p}checkpoint"
heartbeat = "1s"
on_gap = "none"

[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name, price FROM products"
refresh_query = "{refresh_query}"
key = "{p}product:{{id}}"
ttl = "1h"

[[on_change]]
table = "{db}.products"
refresh = ["{p}product:{{id}}"]

[[on_change]]
table = "{db}.tags"
delete = ["{p}tag:{{id}}"]
"#,
        redis = env.redis_url,
        admin = env.admin_addr(),
        db = env.database,
    )
}

/// The GTID domain the test replica fetches (see `common::replica`).
const REPLICATED_DOMAIN: u32 = 7;

/// Read for many keys at once as `WHERE id IN (…)`.
const REFRESH: &str = "SELECT id, name, price FROM products WHERE id = :id";
/// Read for many keys at once as a `UNION ALL` of single-key reads (a `LIMIT` rules out the `IN` list).
const REFRESH_UNION: &str = "SELECT id, name, price FROM products WHERE id = :id LIMIT 1";

fn product(id: u32, name: &str, price: &str) -> String {
    format!(r#"{{"id":{id},"name":"{name}","price":"{price}"}}"#)
}

/// The row as the cache should hold it, read from the primary.
async fn row(env: &TestEnv, id: u32) -> String {
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let (name, price): (String, String) = sqlx::query_as("SELECT name, CAST(price AS CHAR) FROM products WHERE id = ?")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    product(id, &name, &price)
}

/// GET on a shared connection; a reply slower than the client's timeout (a busy machine) reads as "not yet".
async fn cached(redis: &redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis.clone())
        .await
        .ok()
        .flatten()
}

/// Whether the schema (its one `tags` row) has reached the replica at `replica_url`, within 30 s.
async fn schema_replicated(replica_url: &str) -> Option<()> {
    eventually(Duration::from_secs(30), || async {
        let mut conn = sqlx::MySqlConnection::connect(replica_url).await.ok()?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tags")
            .fetch_one(&mut conn)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await
}

/// A test database on the primary and on the shared replica 1 to 2 s behind (the schema replicated): the env,
/// the database's URL on the replica, and a root connection to the replica.
async fn on_the_lagging_replica() -> (TestEnv, String, sqlx::MySqlConnection) {
    let env = TestEnv::with_database_prefix("cw_replica").await;
    // The replica follows only GTID domain 7: the database is made on it directly, the rest arrives by replication.
    let replica_url = format!("{}/{}", common::replica(), env.database);
    let mut replica = sqlx::MySqlConnection::connect(&format!("{}/mysql", common::replica()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{}`", env.database)))
        .execute(&mut replica)
        .await
        .unwrap();
    env.sql(&format!("SET SESSION gtid_domain_id = {REPLICATED_DOMAIN};\n{SCHEMA}"))
        .await;
    let replicated = schema_replicated(&replica_url).await;
    assert!(replicated.is_some(), "the replica never got the schema");
    (env, replica_url, replica)
}

/// With refreshes read from a replica 1 to 2 s behind, single-row changes across every row: waiting for the replica
/// (`refresh_wait`) or reading the writer past the default wait (`refresh_fallback`), every changed key ends right —
/// none left missing for good, none stale.
#[tokio::test]
async fn with_a_lagging_reader_every_changed_key_ends_right_by_waiting_or_from_the_writer() {
    let _binlog = common::binlog_shared();
    let (env, replica_url, mut replica) = on_the_lagging_replica().await;
    let session = format!("SET SESSION gtid_domain_id = {REPLICATED_DOMAIN}");
    every_changed_key_ends_right(&env, &replica_url, &session).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{}`", env.database)))
        .execute(&mut replica)
        .await;
}

/// The same on Oracle MySQL: a GTID replica set 1 to 2 s behind (`SOURCE_DELAY = 2`: whole seconds from the event's
/// timestamp, so 1 could be almost nothing and the fallback never needed).
#[tokio::test]
async fn on_mysql_with_a_lagging_reader_every_changed_key_ends_right_by_waiting_or_from_the_writer() {
    let primary = common::OwnMySql::start(71);
    let replica = common::OwnMySql::replica_of(&primary, 72);
    let mut conn = sqlx::MySqlConnection::connect(&replica.url()).await.unwrap();
    for statement in [
        "STOP REPLICA",
        "CHANGE REPLICATION SOURCE TO SOURCE_DELAY = 2",
        "START REPLICA",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let env = TestEnv::new().await.on_mysql(&primary).await;
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO products WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 60)
  SELECT n, CONCAT('p', n), 1.00 FROM s;
CREATE TABLE tags (id INT PRIMARY KEY, label VARCHAR(20));
INSERT INTO tags VALUES (1, 'a')",
    )
    .await;
    let replica_url = format!("{}/{}", replica.url(), env.database);
    let replicated = schema_replicated(&replica_url).await;
    assert!(replicated.is_some(), "the MySQL replica never got the schema");
    every_changed_key_ends_right(&env, &replica_url, "SET @lagging = 1").await;
}

/// With refreshes read from `replica_url` (1 to 2 s behind) and the binlog followed on the primary, 120 single-row
/// changes across the 60 products (each script opened by `session`): waiting for the replica (`refresh_wait`) or
/// reading the writer past the default wait (`refresh_fallback`), every changed key ends right — none left missing for
/// good, none stale.
async fn every_changed_key_ends_right(env: &TestEnv, replica_url: &str, session: &str) {
    let p = &env.prefix;
    let base = config(env, replica_url, &env.mysql_url, REFRESH);
    for (round, (setting, fallback)) in [
        ("refresh_wait = \"5s\"", false),
        ("refresh_fallback = \"binlog\"", true),
    ]
    .into_iter()
    .enumerate()
    {
        let body = base.replace("on_gap = \"none\"", &format!("on_gap = \"none\"\n{setting}"));
        let mut daemon = start(env, &body).await;
        // About a second in all.
        let mut sql = session.to_string();
        for n in 0..120u32 {
            let id = n % 60 + 1;
            sql.push_str(&format!(";\nUPDATE products SET name = 'r{round}n{n}' WHERE id = {id}"));
        }
        env.sql(&sql).await;
        // Every key equals its row once the replica has caught up (or at once, from the writer).
        let wrong_keys = || async {
            let mut wrong = Vec::new();
            for id in 1..=60 {
                let cached = env.get(&format!("{p}product:{id}")).await;
                if cached.as_deref() != Some(row(env, id).await.as_str()) {
                    wrong.push((id, cached));
                }
            }
            wrong
        };
        let right = eventually(Duration::from_secs(20), || async {
            wrong_keys().await.is_empty().then_some(())
        })
        .await;
        assert!(
            right.is_some(),
            "{setting}: wrong or missing {:?}:\n{}",
            wrong_keys().await,
            daemon.log()
        );
        let from_writer = metric(env, "cachewarden_refresh_fallback_keys_total").await;
        assert_eq!(
            from_writer > 0.0,
            fallback,
            "{setting}: {from_writer} keys read from the writer"
        );
        assert_eq!(daemon.stop().await, Some(0));
    }
}

#[tokio::test]
async fn a_refresh_never_caches_a_read_older_than_its_event() {
    let _binlog = common::binlog_shared();
    // The daemon follows the primary's binlog but reads refreshes from a replica 1 to 2 s behind: every read right
    // after an event returns the row as it was before.
    let (env, replica_url, mut replica) = on_the_lagging_replica().await;
    let mut daemon = start(&env, &config(&env, &replica_url, &env.mysql_url, REFRESH_UNION)).await;
    let p = &env.prefix;

    for round in 1..=3 {
        env.sql(&format!(
            "SET SESSION gtid_domain_id = {REPLICATED_DOMAIN};\nUPDATE products SET name = 'v{round}' WHERE id IN (1, 2, 3)"
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Once the replica has caught up (and a little after), no key may hold an older row than the table's.
    let caught_up = eventually(Duration::from_secs(10), || async {
        let mut conn = sqlx::MySqlConnection::connect(&replica_url).await.ok()?;
        let name: String = sqlx::query_scalar("SELECT name FROM products WHERE id = 3")
            .fetch_one(&mut conn)
            .await
            .ok()?;
        (name == "v3").then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the replica did not catch up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in 1..=3 {
        let cached = env.get(&format!("{p}product:{id}")).await;
        assert!(
            cached.is_none() || cached.as_deref() == Some(row(&env, id).await.as_str()),
            "product:{id} holds {cached:?}, an older row than the table's:\n{}",
            daemon.log()
        );
    }
    let caught = metric(&env, r#"cachewarden_refresh_given_up_total{reason="unverified"}"#).await
        + metric(&env, r#"cachewarden_refresh_given_up_total{reason="outdated"}"#).await;
    assert!(
        caught >= 1.0,
        "no read was caught showing an older row (was the replica lagging?)"
    );
    // A read that does show the change is cached as usual.
    let mut daemon_direct = {
        assert_eq!(daemon.stop().await, Some(0));
        start(&env, &config(&env, &env.mysql_url, &env.mysql_url, REFRESH)).await
    };
    env.sql("UPDATE products SET name = 'v4' WHERE id = 1").await;
    let cached = eventually(Duration::from_secs(15), || async {
        (env.get(&format!("{p}product:1")).await == Some(product(1, "v4", "1.00"))).then_some(())
    })
    .await;
    assert!(cached.is_some(), "{}", daemon_direct.log());
    assert_eq!(daemon_direct.stop().await, Some(0));
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{}`", env.database)))
        .execute(&mut replica)
        .await;
}

#[tokio::test]
async fn a_hot_row_storm_converges_and_cold_rows_stay_fresh_meanwhile() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let mut daemon = start(&env, &config(&env, &env.mysql_url, &env.mysql_url, REFRESH)).await;
    let p = env.prefix.clone();
    let redis = env.redis().await;

    // Three writers hammer rows 1..=50 with single-row transactions (paced a little: the suite shares two cores with
    // other tests; full speed is the benchmark's business).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..3u32 {
        let (url, stop) = (env.mysql_url.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                sqlx::query("UPDATE products SET name = ? WHERE id = ?")
                    .bind(format!("w{writer}-{n}"))
                    .bind(1 + (n * 7 + writer) % 50)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                if n.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            n
        }));
    }
    // Meanwhile a cold row changes every 250 ms; each change must reach the cache while the storm goes on.
    let mut cold_seen = 0;
    for round in 1..=8 {
        env.sql(&format!("UPDATE products SET price = {round}.50 WHERE id = 60"))
            .await;
        let expected = product(60, "p60", &format!("{round}.50"));
        let started = Instant::now();
        let fresh = eventually(Duration::from_secs(10), || async {
            (cached(&redis, &format!("{p}product:60")).await.as_deref() == Some(expected.as_str())).then_some(())
        })
        .await;
        if fresh.is_none() {
            let log = daemon.log();
            panic!(
                "the cold row's change {round} never reached the cache during the storm ({} row events applied, lag \
                 {}s):\n{}",
                metric(&env, "cachewarden_binlog_rows_total{source=\"main\"}").await,
                metric(&env, "cachewarden_binlog_lag_seconds{source=\"main\"}").await,
                &log[log.len().saturating_sub(3000)..]
            );
        }
        cold_seen += 1;
        println!("cold change {round} cached after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        writes += writer.await.unwrap();
    }
    assert_eq!(cold_seen, 8);
    // Once the writers stop, every hot key converges to its row.
    for id in 1..=50 {
        let expected = row(&env, id).await;
        let converged = eventually(Duration::from_secs(15), || async {
            let cached = cached(&redis, &format!("{p}product:{id}")).await;
            (cached.as_deref() == Some(expected.as_str())).then_some(())
        })
        .await;
        assert!(
            converged.is_some(),
            "product:{id} is {:?}, the row is {expected}",
            env.get(&format!("{p}product:{id}")).await
        );
    }
    let rows = metric(&env, "cachewarden_binlog_rows_total{source=\"main\"}").await;
    let keys = metric(&env, "cachewarden_binlog_batch_keys_total{source=\"main\"}").await;
    println!("{writes} writes; {rows} row events applied as {keys} key actions");
    assert!(rows >= f64::from(writes), "{rows} row events for {writes} writes");
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_refresh_query_that_fails_for_good_deletes_its_key_and_the_stream_goes_on() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let broken = "SELECT id, name, price FROM products WHERE id = :id AND no_such_column = 1";
    let mut daemon = start(&env, &config(&env, &env.mysql_url, &env.mysql_url, broken)).await;
    let p = &env.prefix;
    let mut redis = env.redis().await;
    for key in ["product:1", "tag:1"] {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}{key}"))
            .arg("stale")
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    env.sql("UPDATE products SET name = 'x' WHERE id = 1").await;
    env.sql("UPDATE tags SET label = 'b' WHERE id = 1").await;
    for key in ["product:1", "tag:1"] {
        let gone = eventually(Duration::from_secs(15), || async {
            env.get(&format!("{p}{key}")).await.is_none().then_some(())
        })
        .await;
        assert!(gone.is_some(), "{key} was not deleted:\n{}", daemon.log());
    }
    assert!(metric(&env, r#"cachewarden_refresh_given_up_total{reason="query_refused"}"#).await >= 1.0);
    assert!(
        daemon.log().contains("refresh_query cannot render these keys"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        metric(&env, "cachewarden_binlog_apply_failing{source=\"main\"}").await,
        0.0
    );
    assert_eq!(daemon.stop().await, Some(0));
}
