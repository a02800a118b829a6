//! Credentials rotated under a running daemon: MySQL and Redis passwords apply on SIGHUP and after a refusal, without a
//! restart.

use super::*;

/// Changes `user`'s password and writes the URL with it to the credentials directory, as a rotation does.
async fn rotate(env: &TestEnv, user: &str, password: &str, credentials: &Path) {
    use sqlx::Connection as _;
    let mut root = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let statement = format!("ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut root)
        .await
        .unwrap();
    let rest = env.mysql_url.split_once('@').unwrap().1;
    std::fs::write(
        credentials.join("mysql-url"),
        format!("mysql://{user}:{password}@{rest}\n"),
    )
    .unwrap();
}

/// Cuts every connection `user` has open: whatever the daemon does next needs a new one.
async fn cut_connections(env: &TestEnv, user: &str) {
    use sqlx::Connection as _;
    let mut root = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let list = format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'");
    let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(list))
        .fetch_all(&mut root)
        .await
        .unwrap();
    for id in ids {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .execute(&mut root)
            .await;
    }
}

/// Queues a run of `job` through the admin endpoint; an earlier run still holding it (409) is waited out.
async fn queue_run(env: &TestEnv, job: &str) -> bool {
    let path = format!("/jobs/{job}/run");
    let queued = eventually(Duration::from_secs(15), || async {
        let reply = admin::request(env.admin_addr(), Method::POST, &path).await.ok()?;
        (reply.status == 202).then_some(())
    })
    .await;
    queued.is_some()
}

/// A warm run (through the pool) and a binlog change (through the replication connection) both take effect.
async fn warm_and_binlog_work(env: &TestEnv, round: u32) -> bool {
    let p = &env.prefix;
    let (warmed, gone) = (format!("{p}j:1"), format!("{p}gone:2"));
    let mut conn = env.redis().await;
    let _: () = redis::cmd("DEL").arg(&warmed).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&gone)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(queue_run(env, "j").await, "job j was never queued");
    env.sql(&format!("UPDATE t SET name = 'r{round}' WHERE id = 2")).await;
    eventually(Duration::from_secs(15), || async {
        (env.get(&warmed).await.is_some() && env.get(&gone).await.is_none()).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_mysql_password_applies_on_sighup_and_after_an_access_denied_without_a_restart() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));\nINSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await;
    let (p, database) = (
        env.prefix.clone(),
        env.mysql_url.rsplit('/').next().unwrap().to_string(),
    );
    let user = format!("cw_rot_{}", fastrand::u32(..1_000_000));
    env.sql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'first-pass';\nGRANT SELECT ON {database}.* TO '{user}'@'%';\n\
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
    ))
    .await;
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    rotate(&env, &user, "first-pass", &credentials).await;
    let body = format!(
        "[redis]\nurl = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}ckpt\"\n\
         heartbeat = \"1s\"\n\n{}\n[[on_change]]\ntable = \"t\"\ndelete = [\"{p}gone:{{id}}\"]\n",
        env.redis_url,
        env.admin_addr(),
        10_000 + fastrand::u32(..1_000_000),
        job(
            &env,
            "j",
            "SELECT id, name FROM t",
            "0 0 0 1 1 *",
            "run_on_start = true"
        ),
    );
    let config = env.write_file("jobs.toml", &body);
    let daemon = Daemon::start(
        &env,
        &config,
        &[],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    let following = eventually(Duration::from_secs(20), || async {
        (common::metric(&env, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "{}", daemon.log());

    // 1. Rotated, then SIGHUP: new pools, the binlog reconnected with the new URL.
    rotate(&env, &user, "second-pass", &credentials).await;
    daemon.signal("HUP");
    let applied = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("SIGHUP: [mysql] changed").then_some(())
    })
    .await;
    assert!(applied.is_some(), "{}", daemon.log());
    cut_connections(&env, &user).await;
    assert!(warm_and_binlog_work(&env, 1).await, "after SIGHUP:\n{}", daemon.log());

    // 2. Rotated with no SIGHUP: an access denied reads the credentials again once and goes on with them.
    rotate(&env, &user, "third-pass", &credentials).await;
    cut_connections(&env, &user).await;
    assert!(
        warm_and_binlog_work(&env, 2).await,
        "after an access denied:\n{}",
        daemon.log()
    );
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{}", daemon.log());
    assert!(
        !daemon.log().contains("takes effect only after a restart"),
        "{}",
        daemon.log()
    );
    env.sql(&format!("DROP USER '{user}'@'%'")).await;
}

/// Gives the ACL user `user` the password `password` alone (the old one stops working) and writes the URL with it to
/// the credentials directory; then cuts every connection of the user, so that whatever comes next reconnects.
async fn rotate_redis(redis: &common::OwnRedis, user: &str, password: &str, credentials: &Path) {
    let mut conn = redis.conn.clone();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "resetpass", &format!(">{password}")][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://{user}:{password}@127.0.0.1:{}/0\n", redis.port);
    std::fs::write(credentials.join("redis-url"), url).unwrap();
}

async fn cut_redis_connections(redis: &common::OwnRedis, user: &str) {
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", user][..])
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_redis_password_applies_on_sighup_and_after_a_refused_password_without_a_restart() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));\nINSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await;
    let redis = common::OwnRedis::start().await;
    let p = env.prefix.clone();
    let user = "cw_rotated";
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "on", ">first-pass", "~*", "&*", "+@all"][..])
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    rotate_redis(&redis, user, "first-pass", &credentials).await;
    let channel = format!("{p}inv");
    let body = format!(
        "[mysql]\nurl = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[channel]\nname = \"{channel}\"\nallow = [\"{p}*\"]\n\n{}",
        env.mysql_url,
        env.admin_addr(),
        job(
            &env,
            "j",
            "SELECT id, name FROM t",
            "0 0 0 1 1 *",
            "run_on_start = true"
        ),
    );
    let config = env.write_file("jobs.toml", &body);
    let daemon = Daemon::start(
        &env,
        &config,
        &[],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    wait_for_admin(&env).await;
    // A warm run (the shared connection) and a channel message (the pub/sub connection) both take effect.
    let works = || async {
        let mut conn = redis.conn.clone();
        let (warmed, victim) = (format!("{p}j:1"), format!("{p}victim"));
        let _: () = redis::cmd("DEL").arg(&warmed).query_async(&mut conn).await.unwrap();
        assert!(queue_run(&env, "j").await, "{}", daemon.log());
        let _: () = redis::cmd("SET")
            .arg(&victim)
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let deleted = common::published_until_deleted(&conn, &channel, &victim, Duration::from_secs(15)).await;
        let warm = eventually(Duration::from_secs(15), || async {
            let value: Option<String> = redis::cmd("GET")
                .arg(&warmed)
                .query_async(&mut conn.clone())
                .await
                .ok()?;
            value
        })
        .await;
        deleted && warm.is_some()
    };
    assert!(works().await, "{}", daemon.log());

    // 1. Rotated, then SIGHUP: every connection authenticates with the new password, reconnects included.
    rotate_redis(&redis, user, "second-pass", &credentials).await;
    daemon.signal("HUP");
    let applied = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("[redis] url's credentials changed").then_some(())
    })
    .await;
    assert!(applied.is_some(), "{}", daemon.log());
    cut_redis_connections(&redis, user).await;
    assert!(works().await, "after SIGHUP:\n{}", daemon.log());

    // 2. Rotated with no SIGHUP: the refused password reads the credentials again once and goes on with them.
    rotate_redis(&redis, user, "third-pass", &credentials).await;
    cut_redis_connections(&redis, user).await;
    assert!(works().await, "after a refused password:\n{}", daemon.log());
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{}", daemon.log());
    assert!(
        !daemon.log().contains("takes effect only after a restart"),
        "{}",
        daemon.log()
    );
}
