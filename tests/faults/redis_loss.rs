//! Redis losing writes: a restart without persistence, failovers to a replica that was behind (binlog and stream), and
//! a full Redis.

use super::*;

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
    let checkpoint = || common::get_on(redis.conn.clone(), format!("{p}checkpoint"));
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
        metric(&env, "cachewarden_binlog_checkpoint_rewinds_total{source=\"main\"}").await >= 1.0,
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
        metric(&env, "cachewarden_binlog_checkpoint_rewinds_total{source=\"main\"}").await >= 1.0,
        "{}",
        daemon.log()
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
    let get = |conn: &redis::aio::MultiplexedConnection| common::get_on(conn.clone(), key.clone());
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
