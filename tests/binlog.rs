//! Binlog CDC against the binlog-enabled MariaDB and real Redis: row changes refresh and delete the right keys,
//! restarts resume from the checkpoint, kill -9 and Redis outages lose nothing, purged logs are recovered from, and
//! DDL mid-stream is followed.
//!
//! The binlog is server-wide: tests that purge it hold `common::binlog_exclusive`, the others `binlog_shared`.

mod common;

use std::time::Duration;

use common::{Daemon, TestEnv, cachewarden, eventually, following_path as start, free_port, get, metric};
use sqlx::Connection as _;

const SCHEMA: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2), category_id INT, stock INT);
INSERT INTO products VALUES (1, 'Kettle', 19.90, 1, 5), (2, 'Lamp', 5.00, 1, 7), (3, 'Chair', 120.00, 2, 9)
";

/// `[binlog]`, a products job with a refresh query, and `rules`.
fn config(env: &TestEnv, binlog_extra: &str, rules: &str) -> String {
    let p = &env.prefix;
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    format!(
        r#"[channel]
enabled = false

[binlog]
server_id = {server_id}
checkpoint_key = "{p}checkpoint"
heartbeat = "1s"
{binlog_extra}

[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name, price FROM products"
refresh_query = "SELECT id, name, price FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"

[[warm]]
name = "stats"
schedule = "0 0 0 1 1 *"
query = "SELECT COUNT(*) AS n, SUM(stock) AS stock FROM products"
key = "{p}stats"
shape = "object"
ttl = "1h"

{rules}
"#
    )
}

fn products_rule(env: &TestEnv, extra: &str) -> String {
    let p = &env.prefix;
    format!(
        "[[on_change]]\ntable = \"{}.products\"\nrefresh = [\"{p}product:{{id}}\"]\n\
         delete = [\"{p}category:{{category_id}}:*\"]\n{extra}\n",
        env.database
    )
}

/// A counters job with a refresh query, and the rule that refreshes it.
fn counters_rules(env: &TestEnv) -> String {
    let p = &env.prefix;
    format!(
        "[[warm]]\nname = \"counters\"\nschedule = \"0 0 0 1 1 *\"\nquery = \"SELECT id, n FROM counters\"\n\
         refresh_query = \"SELECT id, n FROM counters WHERE id = :id\"\nkey = \"{p}counter:{{id}}\"\nttl = \"1h\"\n\n\
         [[on_change]]\ntable = \"{}.counters\"\nrefresh = [\"{p}counter:{{id}}\"]\n",
        env.database
    )
}

async fn value(env: &TestEnv, key: &str) -> Option<String> {
    env.get(&format!("{}{key}", env.prefix)).await
}

/// [`common::becomes`] for `key` under the test's prefix.
async fn becomes(env: &TestEnv, key: &str, expected: Option<&str>) -> bool {
    common::becomes(env, &format!("{}{key}", env.prefix), expected).await
}

async fn set(env: &TestEnv, key: &str) {
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}{key}", env.prefix))
        .arg("stale")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn inserts_updates_and_deletes_refresh_and_delete_the_mapped_keys() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let path = env.config_file(&config(&env, "", &products_rule(&env, "")));
    let mut daemon = start(&env, &path).await;

    env.sql("INSERT INTO products VALUES (4, 'Desk', 80.00, 3, 1)").await;
    assert!(becomes(&env, "product:4", Some(r#"{"id":4,"name":"Desk","price":"80.00"}"#)).await);

    set(&env, "category:1:page:1").await;
    env.sql("UPDATE products SET price = 17.50 WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"17.50"}"#)).await);
    assert!(
        becomes(&env, "category:1:page:1", None).await,
        "the category pattern was not deleted"
    );

    // A changed key column: the old key goes, the new one is written.
    env.sql("UPDATE products SET id = 20 WHERE id = 2").await;
    assert!(becomes(&env, "product:20", Some(r#"{"id":20,"name":"Lamp","price":"5.00"}"#)).await);
    env.sql("UPDATE products SET id = 21 WHERE id = 20").await;
    assert!(becomes(&env, "product:20", None).await);
    assert!(becomes(&env, "product:21", Some(r#"{"id":21,"name":"Lamp","price":"5.00"}"#)).await);

    env.sql("DELETE FROM products WHERE id = 1").await;
    assert!(becomes(&env, "product:1", None).await);

    // A multi-row transaction is applied whole.
    env.sql("BEGIN;\nINSERT INTO products VALUES (5, 'Rug', 40.00, 4, 1), (6, 'Vase', 12.00, 4, 1);\nCOMMIT")
        .await;
    assert!(becomes(&env, "product:5", Some(r#"{"id":5,"name":"Rug","price":"40.00"}"#)).await);
    assert!(becomes(&env, "product:6", Some(r#"{"id":6,"name":"Vase","price":"12.00"}"#)).await);
    assert!(metric(&env, "cachewarden_binlog_transactions_total").await >= 6.0);
    // Idle now: the server's heartbeats (every 1 s here) keep "last heard" fresh and say nothing is pending.
    let now = cachewarden::telemetry::metrics::unix_now().as_secs_f64();
    let fresh = eventually(Duration::from_secs(10), || async {
        let heard = metric(&env, "cachewarden_binlog_last_heard_timestamp_seconds").await;
        (heard > now && metric(&env, "cachewarden_binlog_lag_seconds").await == 0.0).then_some(())
    })
    .await;
    assert!(
        fresh.is_some(),
        "heartbeats are not heard while idle:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn projections_are_written_from_the_row_image() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql("ALTER TABLE products ADD COLUMN seen TIMESTAMP NULL, ADD COLUMN tags JSON")
        .await;
    let p = &env.prefix;
    let rules = format!(
        "[[on_change]]\ntable = \"{}.products\"\n\
         project = {{ key = \"{p}card:{{id}}\", columns = [\"id\", \"name\", \"price\", \"seen\", \"tags\"], ttl = \"10m\" }}\n",
        env.database
    );
    let path = env.config_file(&config(&env, "", &rules));
    let mut daemon = start(&env, &path).await;
    env.sql("SET time_zone = '+02:00';\nUPDATE products SET price = 8.25, seen = '2026-11-26 10:00:00', tags = '[\"a\"]' WHERE id = 1")
        .await;
    assert!(
        becomes(
            &env,
            "card:1",
            Some(r#"{"id":1,"name":"Kettle","price":"8.25","seen":"2026-11-26T08:00:00Z","tags":"[\"a\"]"}"#)
        )
        .await,
        "got {:?}",
        value(&env, "card:1").await
    );
    let ttl = env.pttl(&format!("{p}card:1")).await;
    assert!((590_000..=600_000).contains(&ttl), "PTTL {ttl}");
    env.sql("UPDATE products SET id = 10 WHERE id = 1").await;
    assert!(becomes(&env, "card:1", None).await);
    // The old key's delete and the new key's write are two Redis calls: wait for the second too.
    assert!(
        becomes(
            &env,
            "card:10",
            Some(r#"{"id":10,"name":"Kettle","price":"8.25","seen":"2026-11-26T08:00:00Z","tags":"[\"a\"]"}"#)
        )
        .await,
        "got {:?}",
        value(&env, "card:10").await
    );
    env.sql("DELETE FROM products WHERE id = 10").await;
    assert!(becomes(&env, "card:10", None).await);
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn when_changed_ignores_other_columns_and_warm_is_debounced() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let rules = format!(
        "{}[[on_change]]\ntable = \"{}.products\"\nwarm = [\"stats\"]\ndebounce = \"5s\"\n",
        products_rule(&env, "when_changed = [\"price\", \"name\"]"),
        env.database
    );
    let path = env.config_file(&config(&env, "", &rules));
    let mut daemon = start(&env, &path).await;
    // The first start (no checkpoint) re-warms what the rules cover; let that finish first.
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)).await);
    assert!(becomes(&env, "stats", Some(r#"{"n":3,"stock":"21"}"#)).await);

    set(&env, "product:1").await;
    env.sql("UPDATE products SET stock = 99 WHERE id = 1").await;
    // The stats rule fires on any change (no when_changed): it proves the update was read.
    assert!(becomes(&env, "stats", Some(r#"{"n":3,"stock":"115"}"#)).await);
    assert_eq!(
        value(&env, "product:1").await.as_deref(),
        Some("stale"),
        "a stock-only update refreshed the product"
    );

    // Three changes inside the debounce window: one run at once, one at the window's end with the final state.
    for stock in [1, 2, 3] {
        env.sql(&format!("UPDATE products SET stock = {stock} WHERE id = 2"))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs_before = metric(
        &env,
        r#"cachewarden_warm_runs_total{warm_job="stats",outcome="success"}"#,
    )
    .await;
    assert!(
        becomes(&env, "stats", Some(r#"{"n":3,"stock":"111"}"#)).await,
        "the trailing run never came"
    );
    let runs_after = metric(
        &env,
        r#"cachewarden_warm_runs_total{warm_job="stats",outcome="success"}"#,
    )
    .await;
    assert_eq!(
        runs_after - runs_before,
        1.0,
        "debounce let more than one trailing run through"
    );
    assert!(
        runs_after <= 3.0,
        "{runs_after} stats runs for 4 changes in two windows"
    );

    env.sql("UPDATE products SET name = 'Kettle 2' WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle 2","price":"19.90"}"#)).await);
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint_and_kill_9_loses_nothing() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql("CREATE TABLE counters (id INT PRIMARY KEY, n INT);\nINSERT INTO counters SELECT seq, 0 FROM seq_1_to_50")
        .await;
    let rules = format!("{}{}", products_rule(&env, ""), counters_rules(&env));
    let path = env.config_file(&config(&env, "", &rules));
    let mut daemon = start(&env, &path).await;
    assert_eq!(daemon.stop().await, Some(0));

    // Changes while stopped are applied after the restart.
    env.sql("UPDATE products SET price = 1.00 WHERE id = 3").await;
    let mut daemon = start(&env, &path).await;
    assert!(becomes(&env, "product:3", Some(r#"{"id":3,"name":"Chair","price":"1.00"}"#)).await);

    // kill -9 in the middle of a burst of committed transactions, then restart: every counter ends right.
    let url = env.mysql_url.clone();
    let burst = tokio::spawn(async move {
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        for round in 1..=20 {
            for id in 1..=50 {
                sqlx::query("UPDATE counters SET n = ? WHERE id = ?")
                    .bind(round)
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.signal("KILL");
    let _ = daemon.child.wait();
    burst.await.unwrap();
    let mut daemon = start(&env, &path).await;
    for id in 1..=50 {
        assert!(
            becomes(
                &env,
                &format!("counter:{id}"),
                Some(&format!(r#"{{"id":{id},"n":20}}"#))
            )
            .await,
            "counter {id}"
        );
    }
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn redis_down_during_a_burst_then_back_applies_everything() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let port = free_port();
    let start_redis = || common::spawn_redis(port);
    let mut redis = start_redis();
    let checkpoint = env.dir.path().join("checkpoint");
    let body = config(
        &env,
        &format!("checkpoint = \"file\"\ncheckpoint_file = \"{}\"", checkpoint.display()),
        &products_rule(&env, ""),
    )
    .replace(&format!("checkpoint_key = \"{}checkpoint\"\n", env.prefix), "");
    let path = env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nconnect_timeout = \"1s\"\n\
             [admin]\nlisten = \"{}\"\n\n{body}",
            env.mysql_url,
            env.admin_addr()
        ),
    );
    let mut daemon = start(&env, &path).await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    for price in 1..=30 {
        env.sql(&format!("UPDATE products SET price = {price} WHERE id = 2"))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(daemon.is_running());
    let mut redis = start_redis();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let key = format!("{}product:2", env.prefix);
    let applied = eventually(Duration::from_secs(30), || {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.ok()?;
            (value.as_deref() == Some(r#"{"id":2,"name":"Lamp","price":"30.00"}"#)).then_some(())
        }
    })
    .await;
    let code = daemon.stop().await;
    let _ = redis.kill();
    let _ = redis.wait();
    assert!(
        applied.is_some(),
        "the changes made while Redis was down were not applied:\n{}",
        daemon.log()
    );
    assert_eq!(code, Some(0));
    assert!(std::fs::read_to_string(&checkpoint).unwrap().contains(':'));
}

#[tokio::test]
async fn a_purged_binlog_runs_the_recovery_and_goes_on() {
    let _exclusive = common::binlog_exclusive();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql("CREATE TABLE counters (id INT PRIMARY KEY, n INT);\nINSERT INTO counters SELECT seq, 0 FROM seq_1_to_100")
        .await;
    let rules = format!("{}{}", products_rule(&env, ""), counters_rules(&env));
    let path = env.config_file(&config(&env, "on_gap = \"warm\"", &rules));
    let mut daemon = start(&env, &path).await;
    assert_eq!(
        metric(&env, "cachewarden_binlog_gaps_total").await,
        1.0,
        "a first start without checkpoint is a gap"
    );
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)).await);
    assert_eq!(daemon.stop().await, Some(0));

    // While stopped: a change, then the log holding it (and the checkpoint) is purged.
    env.sql("UPDATE products SET price = 2.00 WHERE id = 1").await;
    common::purge_binary_logs(&env.mysql_url).await;

    // A writer keeps committing while the daemon starts and recovers: what it commits during the recovery must not
    // be lost between the recovery's read and the position the stream resumes from.
    let url = env.mysql_url.clone();
    let writer = tokio::spawn(async move {
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        for n in 1..=1500u32 {
            sqlx::query("UPDATE counters SET n = ? WHERE id = ?")
                .bind(n)
                .bind(1 + n % 100)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    });
    let mut daemon = start(&env, &path).await;
    assert!(
        becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"2.00"}"#)).await,
        "not recovered"
    );
    assert!(daemon.log().contains("Binlog position was purged"), "{}", daemon.log());
    writer.await.unwrap();
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let rows: Vec<(i32, i32)> = sqlx::query_as("SELECT id, n FROM counters")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for (id, n) in rows {
        assert!(
            becomes(
                &env,
                &format!("counter:{id}"),
                Some(&format!(r#"{{"id":{id},"n":{n}}}"#))
            )
            .await,
            "counter {id} lost a change committed during the recovery: {:?}",
            value(&env, &format!("counter:{id}")).await
        );
    }
    assert_eq!(metric(&env, "cachewarden_binlog_gaps_total").await, 1.0);
    // And it goes on following.
    env.sql("UPDATE products SET price = 3.00 WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"3.00"}"#)).await);
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn alter_table_mid_stream_is_followed_and_a_vanished_column_is_reported() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let p = &env.prefix;
    let rules = format!(
        "{}[[on_change]]\ntable = \"{}.products\"\ndelete = [\"{p}sku:{{sku}}\"]\n",
        products_rule(&env, ""),
        env.database
    );
    let body = format!("[daemon]\ndead_letter = \"{p}dead\"\n\n{}", config(&env, "", &rules));
    let path = env.config_file(&body);
    let mut daemon = start(&env, &path).await;

    env.sql("UPDATE products SET price = 4.00 WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"4.00"}"#)).await);
    assert!(
        daemon.log().contains("names a column the table does not have"),
        "sku is not a column yet"
    );
    // Kept as a dead letter too, for the operator who looks after the log has rolled.
    let (code, listed) = env.run_cli(&["dead-letters"], &path);
    assert_eq!(code, Some(0), "{listed}");
    assert!(
        listed.contains("binlog missing_column") && listed.contains("the row has no column sku"),
        "{listed}"
    );

    env.sql("ALTER TABLE products ADD COLUMN sku VARCHAR(20) AFTER id")
        .await;
    env.sql("UPDATE products SET sku = 'K-1', price = 5.00 WHERE id = 1")
        .await;
    set(&env, "sku:K-1").await;
    env.sql("UPDATE products SET price = 6.00 WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"6.00"}"#)).await);
    assert!(
        becomes(&env, "sku:K-1", None).await,
        "the new column was not seen after ALTER TABLE"
    );
    assert!(daemon.is_running());
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_100k_row_transaction_is_applied_in_bounded_memory() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE big (id INT PRIMARY KEY, v INT);\nINSERT INTO big SELECT seq, 0 FROM seq_1_to_100000")
        .await;
    env.sql(SCHEMA).await;
    let p = env.prefix.clone();
    let rules = format!(
        "[[on_change]]\ntable = \"{}.big\"\ndelete = [\"{p}big:{{id}}\"]\n",
        env.database
    );
    let path = env.config_file(&config(&env, "", &rules));
    let mut daemon = start(&env, &path).await;
    let mut conn = env.redis().await;
    for chunk in (1..=100_000).collect::<Vec<u32>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("SET").arg(format!("{p}big:{id}")).arg(1).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss(daemon.child.id());
    env.sql("UPDATE big SET v = v + 1").await;
    let deleted = eventually(Duration::from_secs(60), || async {
        (metric(&env, "cachewarden_binlog_rows_total").await >= 100_000.0).then_some(())
    })
    .await;
    assert!(deleted.is_some(), "the big transaction was not applied");
    assert!(env.keys().await.iter().all(|k| !k.contains(":big:")), "keys survived");
    let grown_kb = rss(daemon.child.id()).saturating_sub(before);
    println!("peak RSS grew by {grown_kb} kB over a 100k-row transaction");
    assert!(grown_kb < 64 * 1024, "peak RSS grew by {grown_kb} kB");
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_server_without_row_binlog_stops_the_daemon_at_start_with_78() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    // The machine's own MariaDB on 3306 has binary logging off.
    let body = config(
        &env,
        "url = \"mysql://root@127.0.0.1:3306/mysql\"",
        &products_rule(&env, ""),
    );
    let path = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    let code = daemon.exit_code(Duration::from_secs(30)).await;
    let log = daemon.log();
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("[binlog]: cannot follow the binlog"), "{log}");
    assert!(
        log.contains("binary logging is off") || log.contains("must be"),
        "{log}"
    );
}

#[tokio::test]
async fn missing_redis_and_replication_grants_are_named_by_check_and_stop_the_daemon_with_78() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let own = common::OwnRedis::start().await;
    let (port, mut conn) = (own.port, own.conn.clone());
    let p = env.prefix.clone();
    // The daemon's user may touch its own keys but not the products'.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "cw",
            "on",
            ">cw-secret",
            "~cachewarden:*",
            &format!("~{p}checkpoint"),
            "+@all",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let rules = format!(
        "[[on_change]]\ntable = \"{}.products\"\ndelete = [\"{p}product:{{id}}\"]\n",
        env.database
    );
    let redis_url = format!("redis://cw:cw-secret@127.0.0.1:{port}/0");
    let write = |binlog_url: &str| env.config_file_with_redis(&redis_url, &config(&env, binlog_url, &rules));
    let path = write("");
    let output = cachewarden()
        .args(["check", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "[[on_change]] {}.products (keys {p}product:{{id}})",
            env.database
        )) && stderr.contains(&format!("no permissions to access the '{p}product:1' key")),
        "the refused key and the rule that needs it are named:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("warm job \"products\" (keys {p}product:{{id}})")),
        "{stderr}"
    );

    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    let code = daemon.exit_code(Duration::from_secs(30)).await;
    let log = daemon.log();
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains("the Redis ACL refuses") && log.contains(&format!("'{p}product:1'")),
        "{log}"
    );

    // With the keys granted, the Redis side passes; a binlog user without REPLICATION SLAVE is named instead.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "cw", "allkeys"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let user = format!("{p}norepl").replace(':', "_");
    env.sql(&format!(
        "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; \
         GRANT REPLICATION CLIENT ON *.* TO '{user}'@'%'; GRANT SELECT ON *.* TO '{user}'@'%'"
    ))
    .await;
    let server = env.mysql_url.rsplit_once('@').unwrap().1.split('/').next().unwrap();
    let path = write(&format!("url = \"mysql://{user}:pw@{server}/mysql\""));
    let output = cachewarden()
        .args(["check", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("lacks REPLICATION SLAVE"), "{stderr}");
    assert!(
        !stderr.contains("Redis ACL"),
        "the Redis grants are complete now:\n{stderr}"
    );
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    let code = daemon.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, Some(78), "{}", daemon.log());
    assert!(daemon.log().contains("lacks REPLICATION SLAVE"), "{}", daemon.log());

    // Granted, everything checks out.
    env.sql(&format!("GRANT REPLICATION SLAVE ON *.* TO '{user}'@'%'"))
        .await;
    let output = cachewarden()
        .args(["check", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    env.sql(&format!("DROP USER '{user}'@'%'")).await;
}

#[tokio::test]
async fn after_a_server_restart_the_checkpoint_follows_the_new_binlog_file() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    let mut server = common::OwnMariaDb::start();
    let base_url = server.url();
    let url = format!("{base_url}/shop");
    let run = |sql: String| {
        let base = base_url.clone();
        async move {
            let mut conn = sqlx::MySqlConnection::connect(&format!("{base}/mysql")).await.unwrap();
            for statement in sql.split(";\n").filter(|s| !s.trim().is_empty()) {
                sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
        }
    };
    run(format!("CREATE DATABASE shop;\nUSE shop;\n{SCHEMA}")).await;
    let rules = format!(
        "[[on_change]]\ntable = \"shop.products\"\nrefresh = [\"{}product:{{id}}\"]\n",
        env.prefix
    );
    let body = config(&env, "", &rules);
    let path = env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\nurl = \"{url}\"\n[redis]\nurl = \"{}\"\n[admin]\nlisten = \"{}\"\n\n{body}",
            env.redis_url,
            env.admin_addr()
        ),
    );
    let mut daemon = start(&env, &path).await;
    let master_file = || {
        let base = base_url.clone();
        async move {
            let mut conn = sqlx::MySqlConnection::connect(&format!("{base}/mysql")).await.unwrap();
            let status = sqlx::query("SHOW MASTER STATUS").fetch_one(&mut conn).await.unwrap();
            sqlx::Row::get::<String, _>(&status, 0)
        }
    };
    for round in 1..=3 {
        server.restart();
        run(format!("UPDATE shop.products SET price = {round}.25 WHERE id = 1")).await;
        let expected = format!(r#"{{"id":1,"name":"Kettle","price":"{round}.25"}}"#);
        assert!(
            becomes(&env, "product:1", Some(&expected)).await,
            "round {round}: the change after the restart was not applied:\n{}",
            daemon.log()
        );
        let file = master_file().await;
        let saved = eventually(Duration::from_secs(10), || async {
            let checkpoint = value(&env, "checkpoint").await?;
            checkpoint.starts_with(&format!("{file}:")).then_some(checkpoint)
        })
        .await;
        assert!(
            saved.is_some(),
            "round {round}: the checkpoint {:?} does not name the server's file {file}:\n{}",
            value(&env, "checkpoint").await,
            daemon.log()
        );
    }
    assert!(!daemon.log().contains("purged"), "{}", daemon.log());
    assert_eq!(
        metric(&env, "cachewarden_binlog_gaps_total").await,
        1.0,
        "only the first start is a gap"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_redis_acl_refusal_stops_the_stream_visibly_and_it_resumes_once_fixed() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let own = common::OwnRedis::start().await;
    let (port, mut conn) = (own.port, own.conn.clone());
    let p = env.prefix.clone();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "cw", "on", ">cw-secret", "allkeys", "+@all"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{p}product:1"))
        .arg("cached")
        .query_async(&mut conn)
        .await
        .unwrap();
    let rules = format!(
        "[[on_change]]\ntable = \"{}.products\"\ndelete = [\"{p}product:{{id}}\"]\n",
        env.database
    );
    let path = env.config_file_with_redis(
        &format!("redis://cw:cw-secret@127.0.0.1:{port}/0"),
        &config(&env, "", &rules),
    );
    let mut daemon = start(&env, &path).await;
    // Once it runs, the ACL is narrowed: the daemon's user may touch its own keys but not the products'.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "cw",
            "resetkeys",
            "~cachewarden:*",
            &format!("~{p}checkpoint"),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    env.sql("UPDATE products SET price = 7.00 WHERE id = 1").await;
    let stuck = eventually(Duration::from_secs(15), || async {
        let ready = get(&env, "/readyz").await?;
        (ready.status == 503 && ready.body.contains("binlog")).then_some(ready.body)
    })
    .await;
    assert!(
        stuck.is_some(),
        "readiness never showed the stuck binlog:\n{}",
        daemon.log()
    );
    assert_eq!(metric(&env, "cachewarden_binlog_apply_failing").await, 1.0);
    assert!(daemon.log().contains("ERROR"), "{}", daemon.log());

    // The operator fixes the ACL: the stream resumes where it stopped, and readiness comes back.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "cw", "allkeys"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let deleted = eventually(Duration::from_secs(20), || {
        let mut conn = conn.clone();
        let key = format!("{p}product:1");
        async move {
            let exists: u64 = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.ok()?;
            (exists == 0).then_some(())
        }
    })
    .await;
    assert!(
        deleted.is_some(),
        "the change was lost or never applied:\n{}",
        daemon.log()
    );
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "readiness did not come back:\n{}", daemon.log());
    assert_eq!(metric(&env, "cachewarden_binlog_apply_failing").await, 0.0);
    assert_eq!(daemon.stop().await, Some(0));
}

/// `binlog status`, `set` and `reset`: the checkpoint shown against the server, moved back to replay a past change
/// (after a bad deploy put a stale value back), and removed; moving it is refused while the daemon runs.
#[tokio::test]
async fn binlog_status_set_and_reset_show_and_move_the_checkpoint_and_are_refused_while_the_daemon_runs() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let path = env.config_file(&config(&env, "on_gap = \"none\"", &products_rule(&env, "")));
    let binlog = |args: &[&str]| env.run_cli(&[&["binlog"], args].concat(), &path);
    let (code, out) = binlog(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("checkpoint: none") && out.contains("server:     binlog."),
        "{out}"
    );

    // Where the server is before the change: the position to go back to.
    let (file, pos, gtid) = {
        let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
        let row = sqlx::query("SHOW MASTER STATUS").fetch_one(&mut conn).await.unwrap();
        let gtid: String = sqlx::query_scalar("SELECT @@GLOBAL.gtid_binlog_pos")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (
            sqlx::Row::get::<String, _>(&row, 0),
            sqlx::Row::get::<u64, _>(&row, 1),
            gtid,
        )
    };
    let mut daemon = start(&env, &path).await;
    let (code, out) = binlog(&["set", "--file", &file, "--pos", &pos.to_string()]);
    assert_eq!(code, Some(75), "refused while running: {out}");
    assert!(out.contains("a daemon is running"), "{out}");
    set(&env, "category:1:page:1").await;
    env.sql("UPDATE products SET price = 17.50 WHERE id = 1").await;
    assert!(becomes(&env, "category:1:page:1", None).await, "{}", daemon.log());
    // While it runs, status shows its lag and when it last saved the checkpoint (the change's batch saved it).
    let saved = eventually(Duration::from_secs(10), || async {
        let (code, out) = binlog(&["status"]);
        (code == Some(0) && out.contains("ago (the running daemon's last save)")).then_some(out)
    })
    .await;
    let saved = saved.unwrap_or_else(|| binlog(&["status"]).1);
    assert!(
        saved.contains("behind the server's clock (the running daemon's)") && saved.contains("saved:      "),
        "{saved}"
    );
    assert_eq!(daemon.stop().await, Some(0));

    // A stale value comes back; the checkpoint is past the change that deleted it.
    set(&env, "category:1:page:1").await;
    let (code, out) = binlog(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("bytes of binlog") && !out.contains("checkpoint: none"),
        "{out}"
    );
    // Stopped: no lag to read, and a Redis checkpoint keeps no time.
    assert!(
        out.contains("lag:        not measured: no daemon answers at") && out.contains("saved:      not known"),
        "{out}"
    );
    let (code, out) = binlog(&["set", "--file", &file, "--pos", &(pos + 1).to_string()]);
    assert_eq!(code, Some(1), "not where an event starts: {out}");
    assert!(out.contains("no event starts at"), "{out}");
    let (code, out) = binlog(&["set", "--file", "binlog.999999", "--pos", "4"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the server has no binlog file"), "{out}");
    let (code, out) = binlog(&["set", "--file", &file, "--pos", &pos.to_string()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("→ {file}:{pos}")), "{out}");
    // The next start replays the change: the stale value goes again.
    let mut daemon = start(&env, &path).await;
    assert!(
        becomes(&env, "category:1:page:1", None).await,
        "the change after the position set was not replayed:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));

    // The same by GTID position: the next start connects by GTID and reads the transactions after it.
    set(&env, "category:1:page:1").await;
    let (code, out) = binlog(&["set", "--gtid", "nonsense"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not a GTID position"), "{out}");
    let (code, out) = binlog(&["set", "--gtid", "0-1-999999999"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the server has not executed all of 0-1-999999999"),
        "{out}"
    );
    let (code, out) = binlog(&["set", "--gtid", &gtid]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("→ gtid={gtid}")) && out.contains("after the transactions of"),
        "{out}"
    );
    let mut daemon = start(&env, &path).await;
    assert!(
        becomes(&env, "category:1:page:1", None).await,
        "the change after the GTID position was not replayed:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("by_gtid=true"), "{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));

    // Reset: no checkpoint, and the next start begins at the server's position.
    let (code, out) = binlog(&["reset"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("→ none") && out.contains("on_gap"), "{out}");
    assert_eq!(value(&env, "checkpoint").await, None);
    let mut daemon = start(&env, &path).await;
    assert!(daemon.log().contains("No binlog checkpoint"), "{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn row_values_with_glob_characters_never_widen_a_pattern_delete() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql(
        "INSERT INTO products VALUES (7, '*', 1.00, 9, 1), (8, 'ga[mx]ma', 1.00, 9, 1), (9, 'a?b\\\\', 1.00, 9, 1)",
    )
    .await;
    let p = &env.prefix;
    let rule = format!(
        "[[on_change]]\ntable = \"{}.products\"\ndelete = [\"{p}named:{{name}}:*\"]\n",
        env.database
    );
    let path = env.config_file(&config(&env, "", &rule));
    let mut daemon = start(&env, &path).await;
    let others = ["named:alpha:1", "named:gamma:1", "named:gaxma:1", "named:axb:1"];
    for key in others.iter().chain(&["named:*:1", "named:ga[mx]ma:1", "named:a?b\\:1"]) {
        set(&env, key).await;
    }
    // Each hostile name deletes only its own keys: '*' is no wildcard, '[mx]' no class, '?' no single character.
    env.sql("UPDATE products SET price = 2.00 WHERE id IN (7, 8, 9)").await;
    for own in ["named:*:1", "named:ga[mx]ma:1", "named:a?b\\:1"] {
        assert!(
            becomes(&env, own, None).await,
            "{own} was not deleted:\n{}",
            daemon.log()
        );
    }
    // The deletes are done (the last one seen); a widened pattern would have taken the others with them.
    for key in others {
        assert_eq!(
            value(&env, key).await.as_deref(),
            Some("stale"),
            "{key} was deleted by another row's pattern"
        );
    }
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_table_pattern_follows_every_shard_it_matches_even_one_created_later() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql(
        "CREATE TABLE orders_eu (id INT PRIMARY KEY, total INT);
         CREATE TABLE orders_us (id INT PRIMARY KEY, total INT);
         CREATE TABLE invoices (id INT PRIMARY KEY, total INT);
         INSERT INTO orders_eu VALUES (1, 10);
         INSERT INTO orders_us VALUES (1, 20)",
    )
    .await;
    let p = &env.prefix;
    let rule = format!(
        "[[on_change]]\ntable = \"{db}.orders_*\"\ndelete = [\"{p}order:{{_table}}:{{id}}\"]\n\
         project = {{ key = \"{p}card:{{_database}}:{{_table}}:{{id}}\", columns = [\"id\", \"total\"], ttl = \"1h\" }}\n",
        db = env.database
    );
    let path = env.config_file(&config(&env, "", &rule));
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "the pattern matches 2 tables: {db}.orders_eu, {db}.orders_us",
            db = env.database
        )),
        "{out}"
    );
    let mut daemon = start(&env, &path).await;
    for key in ["order:orders_eu:1", "order:orders_us:1", "order:invoices:1"] {
        set(&env, key).await;
    }
    env.sql("UPDATE orders_eu SET total = 11 WHERE id = 1; UPDATE orders_us SET total = 21 WHERE id = 1")
        .await;
    let card = |total: u32| format!(r#"{{"id":1,"total":{total}}}"#);
    for (table, total) in [("orders_eu", 11), ("orders_us", 21)] {
        assert!(
            becomes(&env, &format!("order:{table}:1"), None).await,
            "{}",
            daemon.log()
        );
        let key = format!("card:{}:{table}:1", env.database);
        assert!(
            becomes(&env, &key, Some(&card(total))).await,
            "{key}:\n{}",
            daemon.log()
        );
    }
    // A shard created while the daemon runs is followed; a table outside the pattern is not.
    env.sql("CREATE TABLE orders_asia (id INT PRIMARY KEY, total INT); INSERT INTO orders_asia VALUES (1, 30)")
        .await;
    let key = format!("card:{}:orders_asia:1", env.database);
    assert!(becomes(&env, &key, Some(&card(30))).await, "{}", daemon.log());
    env.sql("UPDATE invoices SET total = 1 WHERE id = 1; INSERT INTO invoices VALUES (2, 2)")
        .await;
    // The invoice change was read after the shard's (same stream): had the pattern matched it, it would be gone.
    env.sql("DELETE FROM orders_asia WHERE id = 1").await;
    assert!(becomes(&env, &key, None).await, "{}", daemon.log());
    assert_eq!(value(&env, "order:invoices:1").await.as_deref(), Some("stale"));
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn binlog_replay_applies_a_past_range_again_without_touching_the_checkpoint() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let path = env.config_file(&config(&env, "", &products_rule(&env, "warm = [\"stats\"]")));
    let binlog = |args: &[&str]| env.run_cli(&[&["binlog"], args].concat(), &path);
    let (file, pos) = {
        let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
        let row = sqlx::query("SHOW MASTER STATUS").fetch_one(&mut conn).await.unwrap();
        (sqlx::Row::get::<String, _>(&row, 0), sqlx::Row::get::<u64, _>(&row, 1))
    };
    // A change nobody applied, and a key it should have deleted.
    env.sql("UPDATE products SET price = 17.50 WHERE id = 1").await;
    set(&env, "category:1:page:1").await;
    let (code, out) = binlog(&["replay", "--from", "binlog.000001"]);
    assert_eq!(code, Some(64), "{out}");
    let (code, out) = binlog(&[
        "replay",
        "--from",
        &format!("{file}:{pos}"),
        "--to",
        &format!("{file}:4"),
    ]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("is not before"), "{out}");
    let (code, out) = binlog(&["replay", "--from", &format!("{file}:{pos}")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("replayed {file}:{pos}")), "{out}");
    // The range's deletes applied, its warm run done before the replay ended; the daemon's checkpoint untouched.
    assert_eq!(value(&env, "category:1:page:1").await, None, "{out}");
    assert!(
        value(&env, "stats").await.is_some(),
        "the replay's warm run did not run:\n{out}"
    );
    assert_eq!(value(&env, "checkpoint").await, None);
}
