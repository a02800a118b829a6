//! Subscriptions and streams that break or restart: resubscribe and resync, pending entries reclaimed, a lost stream
//! read again.

use super::*;

#[tokio::test]
async fn a_killed_subscription_is_resubscribed_and_resynced() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let own = common::OwnRedis::start().await;
    let (port, conn) = (own.port, own.conn.clone());
    let body = config(&env, "on_gap = \"warm\"");
    let path = env.config_file_with_redis(&format!("redis://127.0.0.1:{port}/0"), &body);
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let key = format!("{p}product:2");
    let get = |conn: &redis::aio::MultiplexedConnection| common::get_on(conn.clone(), key.clone());
    assert!(
        eventually(Duration::from_secs(10), || get(&conn)).await.is_some(),
        "warmed at start"
    );

    // While nobody listens, the key is dropped, as if an invalidation had been missed; then the subscription dies.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let value = eventually(Duration::from_secs(15), || get(&conn)).await;
    assert_eq!(
        value.as_deref(),
        Some(r#"{"id":2,"name":"Lamp","price":"5.00"}"#),
        "on_gap = warm re-warmed the job"
    );
    assert_eq!(metric(&env, "cachewarden_channel_gaps_total").await, 1.0);
    assert!(
        daemon
            .log()
            .contains("Resubscribed: messages published while disconnected were lost")
    );
    let code = daemon.stop().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn streams_apply_what_was_added_while_stopped_and_reclaim_pending_entries() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let stream = format!("{p}stream");
    let settings = format!("stream = \"{stream}\"\ngroup = \"cw\"\nconsumer = \"me\"\nclaim_idle = \"1s\"");
    // No warm run at start: it would race with the deletes this test is about.
    let body = config(&env, &settings).replace("run_on_start = true\n", "");
    let path = env.config_file(&body);
    let mut conn = env.redis().await;

    // First start creates the group; then the daemon is stopped.
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let created = eventually(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move {
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async::<redis::Value>(&mut conn)
                .await
                .ok()
        }
    })
    .await;
    assert!(created.is_some());
    assert_eq!(daemon.stop().await, Some(0));

    // While stopped: one entry arrives normally, one is read (not acked) by "me" as if it crashed mid-way, one is
    // read by a consumer that then died.
    let add = |message: String| {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let _: String = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("message")
                .arg(message)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    let read_as = |consumer: &'static str| {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg(&["GROUP", "cw", consumer, "COUNT", "1", "STREAMS"])
                .arg(&stream)
                .arg(">")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    for id in 1..=3 {
        set(&env, &format!("{p}product:{id}"), "cached").await;
    }
    add(format!("{p}product:1")).await;
    read_as("me").await;
    add(format!("{p}product:2")).await;
    read_as("dead").await;
    add(format!(r#"{{"delete": ["{p}product:3"]}}"#)).await;

    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    for id in 1..=3 {
        assert!(
            becomes(&env, &format!("{p}product:{id}"), None).await,
            "product:{id} still cached"
        );
    }
    let pending = eventually(Duration::from_secs(10), || {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("cw")
                .query_async(&mut conn)
                .await
                .ok()?;
            match summary {
                redis::Value::Array(parts) if matches!(parts.first(), Some(redis::Value::Int(0))) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(pending.is_some(), "entries left unacknowledged");
    assert_eq!(daemon.stop().await, Some(0));
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_stream_lost_in_a_redis_restart_is_read_from_its_start_and_an_idle_stream_stays_connected() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let port = free_port();
    let mut redis_server = common::spawn_redis(port);
    let p = env.prefix.clone();
    let stream = format!("{p}stream");
    // The restart is also a gap (the replication id changes: `faults.rs` covers its resync); with on_gap = "none"
    // this test sees only what the entries themselves do.
    let settings = format!("stream = \"{stream}\"\ngroup = \"cw\"\nconsumer = \"me\"\non_gap = \"none\"");
    let body = config(&env, &settings).replace("run_on_start = true\n", "");
    let redis_url = format!("redis://127.0.0.1:{port}/0");
    let path = env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"{redis_url}\"\n[admin]\nlisten = \"{}\"\n\n{body}",
            env.mysql_url,
            env.admin_addr()
        ),
    );
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let connect = || async {
        eventually(Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.ok()
        })
        .await
        .expect("the test's Redis answers")
    };
    let group_exists = |mut conn: redis::aio::MultiplexedConnection, stream: String| async move {
        eventually(Duration::from_secs(10), || {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            async move {
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&stream)
                    .query_async::<Vec<redis::Value>>(&mut conn)
                    .await
                    .ok()
                    .filter(|groups| !groups.is_empty())
            }
        })
        .await
        .is_some()
            && redis::cmd("PING").query_async::<()>(&mut conn).await.is_ok()
    };
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    assert!(group_exists(connect().await, stream.clone()).await, "{}", daemon.log());

    // Idle for longer than the client's default 500 ms response timeout, several blocking reads long.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !daemon.log().contains("Stream read failed"),
        "an idle stream reconnected:\n{}",
        daemon.log()
    );

    // Redis restarts empty (no persistence); the application adds entries before the daemon is back.
    redis_server.kill().unwrap();
    redis_server.wait().unwrap();
    redis_server = common::spawn_redis(port);
    let mut conn = connect().await;
    for id in 1..=20 {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}product:{id}"))
            .arg("cached")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("message")
            .arg(format!("{p}product:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for id in 1..=20 {
        let key = format!("{p}product:{id}");
        let deleted = eventually(Duration::from_secs(15), || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move {
                let exists: u64 = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.ok()?;
                (exists == 0).then_some(())
            }
        })
        .await;
        assert!(
            deleted.is_some(),
            "{key}, added after the restart, was skipped:\n{}",
            daemon.log()
        );
    }
    assert_eq!(daemon.stop().await, Some(0));
    let _ = redis_server.kill();
    let _ = redis_server.wait();
}
