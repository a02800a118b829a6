//! Running degraded: the documented least-privilege ACL, short database outages one after another, and a full
//! checkpoint disk.

use super::*;

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
    let get = |key: String| common::get_on(redis.conn.clone(), key);
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
    // The keyspace sample works under it too (DBSIZE, the SCAN of a small node, MEMORY USAGE of the job's keys).
    let sampled = eventually(Duration::from_secs(20), || async {
        let keys = common::metric(&env, r#"cachewarden_warm_job_keys{warm_job="products"}"#).await;
        (keys == 20.0).then_some(())
    })
    .await;
    assert!(
        sampled.is_some(),
        "{}\n{}",
        common::metric(&env, r#"cachewarden_warm_job_keys{warm_job="products"}"#).await,
        daemon.log()
    );
    // Channel: a message deletes a key.
    let deleted =
        common::published_until_deleted(&redis.conn, &channel, &format!("{p}p:5"), Duration::from_secs(10)).await;
    assert!(deleted, "{}", daemon.log());
    let ready = get_ready(&env).await;
    assert_eq!(ready, Some(200), "{}", daemon.log());
    assert!(!daemon.log().contains("NoPerm"), "{}", daemon.log());
    assert!(!daemon.log().contains("not estimated"), "{}", daemon.log());
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
    // (A checkpoint being written at that moment holds `checkpoint.tmp` for an instant: take its place.)
    let tmp = file.with_extension("tmp");
    while let Err(error) = std::os::unix::fs::symlink("/dev/full", &tmp) {
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists, "{error}");
        let _ = std::fs::remove_file(&tmp);
    }
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
        let failing = metric(&env, "cachewarden_binlog_checkpoint_failing{source=\"main\"}").await;
        (ready.status == 503 && ready.body.contains("checkpoint_file") && failing == 1.0).then_some(ready.body)
    })
    .await;
    assert!(reported.is_some(), "{:?}\n{}", get(&env, "/readyz").await, daemon.log());
    assert!(reported.unwrap().contains("No space left on device"));
    assert!(
        metric(&env, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0,
        "the stream goes on"
    );
    assert!(metric(&env, "cachewarden_binlog_lag_seconds{source=\"main\"}").await < 5.0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), held, "nothing was saved");

    // Space returns while the database is quiet: the checkpoint is saved at a heartbeat (the next change may be
    // far off), and readiness and the gauge clear.
    std::fs::remove_file(file.with_extension("tmp")).unwrap();
    let recovered = eventually(Duration::from_secs(10), || async {
        let ready = get(&env, "/readyz").await?.status == 200;
        let failing = metric(&env, "cachewarden_binlog_checkpoint_failing{source=\"main\"}").await;
        let moved = std::fs::read_to_string(&file).ok()? != held;
        (ready && failing == 0.0 && moved).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "{}", daemon.log());
    assert!(applied(5).await, "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(log.matches("Cannot save the binlog checkpoint").count(), 1, "{log}");
}
