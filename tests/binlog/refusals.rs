//! What stops the binlog visibly: a server without row binlog, missing grants, and a Redis ACL refusal until fixed.

use super::*;

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
    let (code, _, stderr) = common::cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{stderr}");
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
    let (code, _, stderr) = common::cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{stderr}");
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
    let (code, _, stderr) = common::cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{stderr}");
    env.sql(&format!("DROP USER '{user}'@'%'")).await;
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
    assert_eq!(
        metric(&env, "cachewarden_binlog_apply_failing{source=\"main\"}").await,
        1.0
    );
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
    assert_eq!(
        metric(&env, "cachewarden_binlog_apply_failing{source=\"main\"}").await,
        0.0
    );
    assert_eq!(daemon.stop().await, Some(0));
}
