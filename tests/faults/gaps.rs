//! Changes the usual path misses: a purged binlog, a channel gap, a pending debounced warm, TRUNCATE and statement-
//! logged changes, a kill during a run.

use super::*;

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
    let get = |key: String| common::get_on(own.conn.clone(), key);
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
        metric(
            &env,
            "cachewarden_binlog_statements_total{source=\"main\",kind=\"statement_dml\"}"
        )
        .await,
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
        metric(
            &env,
            "cachewarden_binlog_statements_total{source=\"main\",kind=\"truncate\"}"
        )
        .await,
        1.0
    );
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
    run_once_ok(&path);
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
