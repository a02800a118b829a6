//! Changes that must reach the cache through faults that lose Redis's writes: a Redis restarted without persistence
//! (the checkpoint gone) and a failover to a replica that was behind (the checkpoint and the invalidations before it
//! rolled back). The binlog resumes from the earlier of Redis's checkpoint and the position it saved last.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{
    Daemon, OwnRedis, TestEnv, cachewarden, eventually, following as start, get, metric, text, wait_for_admin,
};
use sqlx::Connection as _;

const SCHEMA: &str = "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)";

/// A daemon following `env`'s database with a delete rule on products, its Redis at `redis_url`.
fn config(env: &TestEnv, redis_url: &str, on_gap: &str) -> String {
    let p = &env.prefix;
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    format!(
        r#"[mysql]
url = "{mysql}"

[redis]
url = "{redis_url}"

[admin]
listen = "{admin}"

[channel]
enabled = false

[binlog]
server_id = {server_id}
checkpoint_key = "{p}checkpoint"
heartbeat = "1s"
on_gap = "{on_gap}"

[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name FROM products"
key = "{p}p:{{id}}"
ttl = "1h"

[[on_change]]
table = "products"
delete = ["{p}p:{{id}}"]
"#,
        mysql = env.mysql_url,
        admin = env.admin_addr(),
    )
}

async fn seed(env: &TestEnv, rows: u32) {
    env.sql(SCHEMA).await;
    let values: Vec<String> = (1..=rows).map(|id| format!("({id}, 'p{id}')")).collect();
    env.sql(&format!("INSERT INTO products VALUES {}", values.join(", ")))
        .await;
}

async fn exists(conn: &redis::aio::MultiplexedConnection, keys: &[String]) -> usize {
    redis::cmd("EXISTS")
        .arg(keys)
        .query_async(&mut conn.clone())
        .await
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_lost_with_a_redis_restart_resumes_from_memory_and_a_delete_in_between_is_applied() {
    // A MariaDB of the test's own: every Binlog Dump thread on it is the daemon's.
    let server = common::OwnMariaDb::start();
    let env = TestEnv::new().await.on_mariadb(&server).await;
    seed(&env, 50).await;
    let mut redis = OwnRedis::start().await;
    let redis_url = format!("redis://127.0.0.1:{}/0", redis.port);
    let daemon = start(&env, &config(&env, &redis_url, "warm")).await;
    let p = env.prefix.clone();
    let checkpoint = || async {
        redis::cmd("GET")
            .arg(format!("{p}checkpoint"))
            .query_async::<Option<String>>(&mut redis.conn.clone())
            .await
            .ok()
            .flatten()
    };
    let first = eventually(Duration::from_secs(10), checkpoint).await;
    env.sql("UPDATE products SET name = 'first' WHERE id = 1").await;
    // The change applied and its checkpoint saved: the position the listener holds in memory.
    let saved = eventually(Duration::from_secs(10), || async {
        checkpoint().await.filter(|saved| Some(saved) != first.as_ref())
    })
    .await;
    assert!(saved.is_some(), "{}", daemon.log());

    // Redis restarts empty; the application caches a row again; the replication connection drops; the row is
    // deleted while the daemon reconnects.
    redis.kill();
    redis.restart();
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let conn = eventually(Duration::from_secs(10), || async {
        client.get_multiplexed_async_connection().await.ok()
    })
    .await
    .expect("Redis is back");
    let key = format!("{p}p:30");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("cached")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let mut root = sqlx::MySqlConnection::connect(&format!("{}/mysql", server.url()))
        .await
        .unwrap();
    let dumps: Vec<i64> =
        sqlx::query_scalar("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .fetch_all(&mut root)
            .await
            .unwrap();
    for id in dumps {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .execute(&mut root)
            .await;
    }
    env.sql("DELETE FROM products WHERE id = 30").await;

    let deleted = eventually(Duration::from_secs(15), || async {
        (exists(&conn, std::slice::from_ref(&key)).await == 0).then_some(())
    })
    .await;
    assert!(
        deleted.is_some(),
        "the delete committed while Redis had lost the checkpoint never reached the cache:\n{}",
        daemon.log()
    );
    assert!(
        metric(&env, "cachewarden_binlog_checkpoint_rewinds_total").await >= 1.0,
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_redis_replica_that_was_behind_brings_no_deleted_key_back() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    seed(&env, 1000).await;
    let primary = OwnRedis::start().await;
    let replica = OwnRedis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await;
    // The endpoint the daemon knows: a proxy, as ElastiCache's primary endpoint is a DNS name that moves.
    let endpoint = Proxy::start(primary.port);
    let daemon = start(&env, &config(&env, &endpoint.redis_url(), "none")).await;
    let p = env.prefix.clone();
    let keys: Vec<String> = (1..=1000).map(|id| format!("{p}p:{id}")).collect();
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("SET").arg(key).arg("cached").ignore();
    }
    let _: () = pipe.query_async(&mut primary.conn.clone()).await.unwrap();
    // The replica has the keys and the daemon's checkpoint; then it falls behind (its replication stops).
    let synced = eventually(Duration::from_secs(10), || async {
        let acked: u64 = redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query_async(&mut primary.conn.clone())
            .await
            .ok()?;
        (acked == 1 && exists(&replica.conn, &keys).await == 1000).then_some(())
    })
    .await;
    assert!(synced.is_some(), "the replica did not sync");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut replica.conn.clone())
        .await
        .unwrap();

    env.sql("UPDATE products SET name = 'changed' WHERE id <= 500").await;
    let applied = eventually(Duration::from_secs(15), || async {
        (exists(&primary.conn, &keys[..500]).await == 0).then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "the daemon did not delete the keys:\n{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Failover: the endpoint now reaches the replica, which never saw those deletes; the old primary is gone.
    endpoint.switch(replica.port);
    drop(primary);
    let repaired = eventually(Duration::from_secs(20), || async {
        (exists(&replica.conn, &keys[..500]).await == 0).then_some(())
    })
    .await;
    assert!(
        repaired.is_some(),
        "{} of 500 deleted keys came back with the failover:\n{}",
        exists(&replica.conn, &keys[..500]).await,
        daemon.log()
    );
    assert_eq!(
        exists(&replica.conn, &keys[500..]).await,
        500,
        "unchanged rows keep their keys"
    );
    assert!(
        metric(&env, "cachewarden_binlog_checkpoint_rewinds_total").await >= 1.0,
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn a_recovery_after_a_purged_binlog_leaves_no_key_of_a_row_deleted_meanwhile() {
    // A MariaDB of the test's own, whose binary logs the test may purge.
    let server = common::OwnMariaDb::start();
    let env = TestEnv::new().await.on_mariadb(&server).await;
    seed(&env, 50).await;
    let body = config(&env, &env.redis_url, "warm");
    let mut daemon = start(&env, &body).await;
    let p = env.prefix.clone();
    let warmed = eventually(Duration::from_secs(10), || async { env.get(&format!("{p}p:50")).await }).await;
    assert!(
        warmed.is_some(),
        "the first start's recovery warms the job:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));

    // While stopped: a row is deleted (its key stays cached) and the binary log holding that is purged.
    env.sql("DELETE FROM products WHERE id = 20").await;
    common::purge_binary_logs(&env.mysql_url).await;
    assert!(env.get(&format!("{p}p:20")).await.is_some());

    let daemon = start(&env, &body).await;
    let recovered = eventually(Duration::from_secs(15), || async {
        let gone = env.get(&format!("{p}p:20")).await.is_none();
        let rewarmed = env.get(&format!("{p}p:21")).await.is_some();
        (gone && rewarmed).then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "p:20 {:?}, p:21 {:?}:\n{}",
        env.get(&format!("{p}p:20")).await,
        env.get(&format!("{p}p:21")).await,
        daemon.log()
    );
    assert!(daemon.log().contains("purged"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_gap_resync_leaves_no_key_of_a_row_deleted_meanwhile() {
    let env = TestEnv::new().await;
    seed(&env, 50).await;
    let own = OwnRedis::start().await;
    let p = env.prefix.clone();
    let body = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\n[admin]\nlisten = \"{}\"\n\
         [channel]\nname = \"{p}invalidations\"\non_gap = \"warm\"\n\n[[warm]]\nname = \"products\"\n\
         schedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"SELECT id, name FROM products\"\n\
         key = \"{p}p:{{id}}\"\nttl = \"1h\"\n",
        env.mysql_url,
        own.port,
        env.admin_addr()
    );
    let path = env.write_file("jobs.toml", &body);
    let daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let get = |key: String| {
        let mut conn = own.conn.clone();
        async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || get(format!("{p}p:20")))
            .await
            .is_some(),
        "warmed at start:\n{}",
        daemon.log()
    );
    // The row is deleted and its invalidation lost (the subscription is down when it is published).
    env.sql("DELETE FROM products WHERE id = 20").await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut own.conn.clone())
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let recovered = eventually(Duration::from_secs(15), || async {
        let gone = get(format!("{p}p:20")).await.is_none();
        let rewarmed = get(format!("{p}p:21")).await.is_some();
        (gone && rewarmed && metric(&env, "cachewarden_channel_gaps_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "{}", daemon.log());
}

#[tokio::test]
async fn a_debounced_warm_pending_at_a_stop_or_a_crash_runs_after_the_restart() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO t VALUES (1, 100)")
        .await;
    let p = env.prefix.clone();
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    let total = || async { env.get_json(&format!("{p}total")).await.map(|v| v["total"].to_string()) };
    for (round, stop) in [(1, "TERM"), (2, "KILL")] {
        // A checkpoint per round: the last daemon of a round is dropped (killed) before its checkpoint passes the
        // change it ran for, and replaying that change would open a debounce window before this round's first one.
        let body = format!(
            "{}[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\n\
             checkpoint_key = \"{p}checkpoint{round}\"\nheartbeat = \"1s\"\non_gap = \"none\"\n\n[[warm]]\n\
             name = \"total\"\nschedule = \"0 0 0 1 1 *\"\nquery = \"SELECT SUM(v) AS total FROM t\"\n\
             key = \"{p}total\"\nttl = \"1h\"\n\n[[on_change]]\ntable = \"t\"\nwarm = [\"total\"]\n\
             debounce = \"15s\"\n",
            env.connection_toml()
        );
        let mut daemon = start(&env, &body).await;
        // The first change of a window runs the job at once; a second one inside the window waits for its end.
        env.sql("UPDATE t SET v = v + 1").await;
        let first = eventually(Duration::from_secs(10), || async {
            total()
                .await
                .filter(|total| *total == format!("\"{}\"", 100 + 2 * round - 1))
        })
        .await;
        assert!(first.is_some(), "round {round}: {:?}\n{}", total().await, daemon.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.sql("UPDATE t SET v = v + 1").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        daemon.signal(stop);
        daemon.exit_code(Duration::from_secs(20)).await;

        let daemon = start(&env, &body).await;
        let want = format!("\"{}\"", 100 + 2 * round);
        let warmed = eventually(Duration::from_secs(10), || async {
            total().await.filter(|total| *total == want)
        })
        .await;
        assert!(
            warmed.is_some(),
            "round {round} (SIG{stop}): the run the second change asked for was lost: {:?}\n{}",
            total().await,
            daemon.log()
        );
        drop(daemon);
    }
}

#[tokio::test]
async fn truncate_and_statement_logged_changes_reach_the_cache() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    seed(&env, 200).await;
    let p = env.prefix.clone();
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    let body = format!(
        "{}[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"warm\"\n\n[[warm]]\nname = \"products\"\nschedule = \"0 0 0 1 1 *\"\n\
         run_on_start = true\nquery = \"SELECT id, name FROM products\"\n\
         refresh_query = \"SELECT id, name FROM products WHERE id = :id\"\nkey = \"{p}p:{{id}}\"\nttl = \"1h\"\n\n\
         [[on_change]]\ntable = \"products\"\nrefresh = [\"{p}p:{{id}}\"]\n\
         delete = [\"{p}d:{{id}}\", \"{p}page:{{name}}:*\"]\n",
        env.connection_toml()
    );
    let daemon = start(&env, &body).await;
    let count = |prefix: String| {
        let env = &env;
        async move { env.keys().await.iter().filter(|key| key.starts_with(&prefix)).count() }
    };
    let warmed = eventually(Duration::from_secs(10), || async {
        (count(format!("{p}p:")).await == 200).then_some(())
    })
    .await;
    assert!(warmed.is_some(), "{}", daemon.log());
    let mut conn = env.redis().await;
    for id in 1..=50 {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}d:{id}"))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // A statement-logged UPDATE (no row images): a gap for products, recovered by re-warming.
    env.sql("SET SESSION binlog_format = 'STATEMENT';\nUPDATE products SET name = 'renamed' WHERE id <= 10")
        .await;
    let recovered = eventually(Duration::from_secs(15), || async {
        let value = env.get_json(&format!("{p}p:3")).await?;
        (value["name"] == "renamed").then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "{:?}\n{}",
        env.get(&format!("{p}p:3")).await,
        daemon.log()
    );
    assert_eq!(
        metric(&env, "cachewarden_binlog_statements_total{kind=\"statement_dml\"}").await,
        1.0,
        "{}",
        daemon.log()
    );

    // TRUNCATE logs no rows: every key of the table's templates goes, those of a pattern template too (its own
    // `*` a wildcard, not the text `*`).
    for page in ["renamed:1", "product 7:2"] {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}page:{page}"))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    env.sql("TRUNCATE TABLE products").await;
    let emptied = eventually(Duration::from_secs(15), || async {
        let left = count(format!("{p}p:")).await + count(format!("{p}d:")).await + count(format!("{p}page:")).await;
        (left == 0).then_some(())
    })
    .await;
    assert!(
        emptied.is_some(),
        "{} product and {} page keys left after TRUNCATE:\n{}",
        count(format!("{p}p:")).await,
        count(format!("{p}page:")).await,
        daemon.log()
    );
    assert_eq!(
        metric(&env, "cachewarden_binlog_statements_total{kind=\"truncate\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_redis_invalidations_still_delete() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    seed(&env, 200).await;
    let redis = OwnRedis::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).await;
    let p = env.prefix.clone();
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    let body = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\n[admin]\nlisten = \"{}\"\n\
         [channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\n\n[[warm]]\nname = \"products\"\nschedule = \"0 0 0 1 1 *\"\n\
         run_on_start = true\nquery = \"SELECT id, name FROM products\"\n\
         refresh_query = \"SELECT id, name FROM products WHERE id = :id\"\nkey = \"{p}p:{{id}}\"\nttl = \"1h\"\n\n\
         [[on_change]]\ntable = \"products\"\nrefresh = [\"{p}p:{{id}}\"]\ndelete = [\"{p}d:{{id}}\"]\n",
        env.mysql_url,
        redis.port,
        env.admin_addr()
    );
    let daemon = start(&env, &body).await;
    let keys: Vec<String> = (1..=50).map(|id| format!("{p}p:{id}")).collect();
    let deletes: Vec<String> = (1..=50).map(|id| format!("{p}d:{id}")).collect();
    let warmed = eventually(Duration::from_secs(10), || async {
        (exists(&redis.conn, &keys).await == 50).then_some(())
    })
    .await;
    assert!(warmed.is_some(), "{}", daemon.log());
    let mut conn = redis.conn.clone();
    for key in &deletes {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // The application fills Redis to maxmemory with keys of its own.
    let filler = "x".repeat(16 * 1024);
    let mut filled = false;
    for i in 0..10_000 {
        let reply: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{p}app:{i}"))
            .arg(&filler)
            .query_async(&mut conn)
            .await;
        if let Err(error) = reply {
            assert_eq!(error.code(), Some("OOM"), "{error}");
            filled = true;
            break;
        }
    }
    assert!(filled, "Redis never filled up");

    env.sql("UPDATE products SET name = 'changed' WHERE id <= 50").await;
    let invalidated = eventually(Duration::from_secs(15), || async {
        (exists(&redis.conn, &keys).await == 0 && exists(&redis.conn, &deletes).await == 0).then_some(())
    })
    .await;
    assert!(
        invalidated.is_some(),
        "{} refresh and {} delete keys still cached on a full Redis:\n{}",
        exists(&redis.conn, &keys).await,
        exists(&redis.conn, &deletes).await,
        daemon.log()
    );
    assert!(
        metric(&env, "cachewarden_protection_degraded_total{reason=\"out_of_memory\"}").await > 0.0,
        "{}",
        daemon.log()
    );
}

/// The ACL line docs/operations.md documents, with the test's key prefix and channel in place of the examples'.
fn documented_acl(user: &str, prefix: &str, channel: &str) -> Vec<String> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let start = docs.find("ACL SETUSER cachewarden").expect("the documented ACL line");
    let block = &docs[start..start + docs[start..].find("```").unwrap()];
    let line = block.replace("\\\n", " ");
    let mut words: Vec<String> = Vec::new();
    for word in line.split_whitespace().skip(2) {
        match word {
            "cachewarden" if words.is_empty() => words.push(user.to_string()),
            ">PASSWORD" => words.push(">documented-secret".into()),
            "~product:*" => words.push(format!("~{prefix}*")),
            "~catalog:*" | "~dashboard:*" | "~session:*" => {}
            "&cache_invalidation" => words.push(format!("&{channel}")),
            word => words.push(word.to_string()),
        }
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_least_privilege_acl_runs_warm_binlog_and_channel() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    seed(&env, 20).await;
    let redis = OwnRedis::start().await;
    let p = env.prefix.clone();
    let channel = format!("{p}invalidations");
    let words = documented_acl("cw_documented", &p, &channel);
    assert!(words.contains(&"+hexists".to_string()), "{words:?}");
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER");
    for word in &words {
        setuser.arg(word);
    }
    let _: () = setuser.query_async(&mut redis.conn.clone()).await.unwrap();
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    let body = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://cw_documented:documented-secret@127.0.0.1:{}/0\"\n\
         [admin]\nlisten = \"{}\"\n[channel]\nname = \"{channel}\"\n\n[binlog]\nserver_id = {server_id}\n\
         checkpoint_key = \"{p}checkpoint\"\nheartbeat = \"1s\"\non_gap = \"none\"\n\n[[warm]]\nname = \"products\"\n\
         schedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"SELECT id, name FROM products\"\n\
         refresh_query = \"SELECT id, name FROM products WHERE id = :id\"\nkey = \"{p}p:{{id}}\"\nttl = \"1h\"\n\n\
         [[on_change]]\ntable = \"products\"\nrefresh = [\"{p}p:{{id}}\"]\ndelete = [\"{p}d:{{id}}\"]\n",
        env.mysql_url,
        redis.port,
        env.admin_addr()
    );
    let daemon = start(&env, &body).await;
    let get = |key: String| {
        let mut conn = redis.conn.clone();
        async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    };
    // Warm: the job's keys.
    let warmed = eventually(Duration::from_secs(10), || get(format!("{p}p:20"))).await;
    assert!(warmed.is_some(), "{}", daemon.log());
    // Binlog: a refresh and a delete.
    let _: () = redis::cmd("SET")
        .arg(format!("{p}d:3"))
        .arg("x")
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    env.sql("UPDATE products SET name = 'through the acl' WHERE id = 3")
        .await;
    let refreshed = eventually(Duration::from_secs(10), || async {
        let value = get(format!("{p}p:3")).await?;
        (value.contains("through the acl") && get(format!("{p}d:3")).await.is_none()).then_some(())
    })
    .await;
    assert!(
        refreshed.is_some(),
        "{:?}\n{}",
        get(format!("{p}p:3")).await,
        daemon.log()
    );
    // Channel: a message deletes a key.
    let deleted =
        common::published_until_deleted(&redis.conn, &channel, &format!("{p}p:5"), Duration::from_secs(10)).await;
    assert!(deleted, "{}", daemon.log());
    let ready = get_ready(&env).await;
    assert_eq!(ready, Some(200), "{}", daemon.log());
    assert!(!daemon.log().contains("NoPerm"), "{}", daemon.log());
    // The start-up check asked the ACL about the same calls and found them all allowed.
    assert!(
        daemon
            .log()
            .contains("The Redis ACL allows every command and key this configuration needs."),
        "{}",
        daemon.log()
    );
}

async fn get_ready(env: &TestEnv) -> Option<u16> {
    get(env, "/readyz").await.map(|response| response.status)
}

#[tokio::test]
async fn short_database_outages_one_after_another_do_not_push_the_binlog_retry_delay_up() {
    let mut server = common::OwnMariaDb::start();
    let env = TestEnv::new().await.on_mariadb(&server).await;
    seed(&env, 20).await;
    let body = config(&env, &env.redis_url, "none");
    let daemon = start(&env, &body).await;
    let p = env.prefix.clone();
    let mut conn = env.redis().await;
    for round in 1..=6 {
        // Down for 2 s: several reconnects fail each time.
        server.restart_after(Duration::from_secs(2));
        let key = format!("{p}p:{round}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("cached")
            .query_async(&mut conn)
            .await
            .unwrap();
        env.sql(&format!(
            "UPDATE products SET name = 'round {round}' WHERE id = {round}"
        ))
        .await;
        let started = std::time::Instant::now();
        let applied = eventually(Duration::from_secs(30), || async {
            env.get(&key).await.is_none().then_some(())
        })
        .await;
        // Each restart is a short outage on its own: resumed within a few of the shortest delays (0.5 s doubling), not
        // a delay grown over the earlier outages' failed attempts (up to 30 s).
        assert!(
            applied.is_some() && started.elapsed() < Duration::from_secs(6),
            "round {round}: applied after {:?}\n{}",
            started.elapsed(),
            daemon.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_a_stream_channel_is_a_gap_and_resynced() {
    let env = TestEnv::new().await;
    seed(&env, 20).await;
    let primary = OwnRedis::start().await;
    let replica = OwnRedis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await;
    let endpoint = Proxy::start(primary.port);
    let p = env.prefix.clone();
    let stream = format!("{p}stream");
    let body = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"{}\"\n[admin]\nlisten = \"{}\"\n[channel]\nstream = \"{stream}\"\n\
         on_gap = \"warm\"\n\n[[warm]]\nname = \"products\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
         query = \"SELECT id, name FROM products\"\nkey = \"{p}p:{{id}}\"\nttl = \"1h\"\n",
        env.mysql_url,
        endpoint.redis_url(),
        env.admin_addr()
    );
    let path = env.write_file("jobs.toml", &body);
    let daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let key = format!("{p}p:5");
    let get = |conn: &redis::aio::MultiplexedConnection| {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    };
    // Warmed, and the replica has it; then the replica falls behind.
    let synced = eventually(Duration::from_secs(15), || async {
        get(&replica.conn).await.map(|_| ())
    })
    .await;
    assert!(synced.is_some(), "{}", daemon.log());
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut replica.conn.clone())
        .await
        .unwrap();
    // The row changes and the application publishes its invalidation on the stream: applied on the primary only.
    env.sql("UPDATE products SET name = 'changed' WHERE id = 5").await;
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("message")
        .arg(&key)
        .query_async(&mut primary.conn.clone())
        .await
        .unwrap();
    let applied = eventually(Duration::from_secs(10), || async {
        get(&primary.conn).await.is_none().then_some(())
    })
    .await;
    assert!(applied.is_some(), "{}", daemon.log());

    // Failover: the replica never saw the entry, and still holds the old value.
    endpoint.switch(replica.port);
    drop(primary);
    let resynced = eventually(Duration::from_secs(20), || async {
        get(&replica.conn).await.filter(|value| value.contains("changed"))
    })
    .await;
    assert!(
        resynced.is_some(),
        "the key the lost entry invalidated is {:?}:\n{}",
        get(&replica.conn).await,
        daemon.log()
    );
    assert!(metric(&env, "cachewarden_channel_gaps_total").await >= 1.0);
}

#[tokio::test]
async fn a_warm_run_a_change_asked_for_is_not_lost_to_a_kill_while_it_runs() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO t VALUES (1, 100)")
        .await;
    let p = env.prefix.clone();
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    // A run takes two seconds: long enough to kill the daemon while it runs.
    let body = format!(
        "{}[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\n\n[[warm]]\nname = \"total\"\nschedule = \"0 0 0 1 1 *\"\n\
         query = \"SELECT SUM(v) AS total FROM t WHERE SLEEP(2) = 0\"\nkey = \"{p}total\"\nttl = \"1h\"\n\n\
         [[on_change]]\ntable = \"t\"\nwarm = [\"total\"]\n",
        env.connection_toml()
    );
    let path = env.write_file("jobs.toml", &body);
    let once = cachewarden()
        .args(["run", "--once", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(once.status.success(), "{:?}", text(&once));
    let total = || async { env.get_json(&format!("{p}total")).await.map(|v| v["total"].to_string()) };
    assert_eq!(total().await.as_deref(), Some("\"100\""));

    let mut daemon = start(&env, &body).await;
    env.sql("UPDATE t SET v = v + 1").await;
    // The change's run is asked for at once and takes two seconds: kill the daemon in the middle of it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    daemon.signal("KILL");
    daemon.exit_code(Duration::from_secs(10)).await;
    assert_eq!(
        total().await.as_deref(),
        Some("\"100\""),
        "the run was killed before it wrote"
    );

    let daemon = start(&env, &body).await;
    let warmed = eventually(Duration::from_secs(15), || async {
        total().await.filter(|total| total == "\"101\"")
    })
    .await;
    assert!(
        warmed.is_some(),
        "the run the change asked for was lost with the kill: {:?}\n{}",
        total().await,
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_checkpoint_disk_holds_the_checkpoint_while_changes_still_apply_and_readiness_says_why() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    seed(&env, 20).await;
    let p = env.prefix.clone();
    let file = env.dir.path().join("checkpoint");
    let body = config(&env, &env.redis_url, "none").replace(
        &format!("checkpoint_key = \"{p}checkpoint\""),
        &format!("checkpoint_file = \"{}\"", file.display()),
    );
    let daemon = start(&env, &body).await;
    let conn = env.redis().await;
    let applied = |round: u32| {
        let (env, key) = (&env, format!("{p}p:{round}"));
        let mut conn = conn.clone();
        async move {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg("cached")
                .query_async(&mut conn)
                .await
                .unwrap();
            env.sql(&format!(
                "UPDATE products SET name = 'round {round}' WHERE id = {round}"
            ))
            .await;
            eventually(Duration::from_secs(10), || async {
                env.get(&key).await.is_none().then_some(())
            })
            .await
            .is_some()
        }
    };
    assert!(applied(1).await, "{}", daemon.log());
    let saved = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&file).ok()
    })
    .await;
    assert!(saved.is_some(), "no checkpoint file:\n{}", daemon.log());

    // The disk fills: the checkpoint is written through `checkpoint.tmp`, now the kernel's /dev/full, where every
    // write fails with ENOSPC exactly as on a full filesystem.
    std::os::unix::fs::symlink("/dev/full", file.with_extension("tmp")).unwrap();
    let held = std::fs::read_to_string(&file).unwrap();
    for round in 2..=4 {
        assert!(
            applied(round).await,
            "round {round} not applied on a full disk:\n{}",
            daemon.log()
        );
    }
    let reported = eventually(Duration::from_secs(10), || async {
        let ready = get(&env, "/readyz").await?;
        let failing = metric(&env, "cachewarden_binlog_checkpoint_failing").await;
        (ready.status == 503 && ready.body.contains("checkpoint_file") && failing == 1.0).then_some(ready.body)
    })
    .await;
    assert!(reported.is_some(), "{:?}\n{}", get(&env, "/readyz").await, daemon.log());
    assert!(reported.unwrap().contains("No space left on device"));
    assert!(
        metric(&env, "cachewarden_binlog_connected").await == 1.0,
        "the stream goes on"
    );
    assert!(metric(&env, "cachewarden_binlog_lag_seconds").await < 5.0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), held, "nothing was saved");

    // Space returns while the database is quiet: the checkpoint is saved at a heartbeat (the next change may be
    // far off), and readiness and the gauge clear.
    std::fs::remove_file(file.with_extension("tmp")).unwrap();
    let recovered = eventually(Duration::from_secs(10), || async {
        let ready = get(&env, "/readyz").await?.status == 200;
        let failing = metric(&env, "cachewarden_binlog_checkpoint_failing").await;
        let moved = std::fs::read_to_string(&file).ok()? != held;
        (ready && failing == 0.0 && moved).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "{}", daemon.log());
    assert!(applied(5).await, "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(log.matches("Cannot save the binlog checkpoint").count(), 1, "{log}");
}
