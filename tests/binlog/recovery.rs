//! Nothing lost across restarts, kill -9, Redis outages, purged logs, DDL mid-stream, huge transactions and a server
//! restart.

use super::*;

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
        metric(&env, "cachewarden_binlog_gaps_total{source=\"main\"}").await,
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
    assert_eq!(
        metric(&env, "cachewarden_binlog_gaps_total{source=\"main\"}").await,
        1.0
    );
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
        (metric(&env, "cachewarden_binlog_rows_total{source=\"main\"}").await >= 100_000.0).then_some(())
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
        metric(&env, "cachewarden_binlog_gaps_total{source=\"main\"}").await,
        1.0,
        "only the first start is a gap"
    );
    assert_eq!(daemon.stop().await, Some(0));
}
