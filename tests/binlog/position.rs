//! The position tools: binlog status, set, reset and replay.

use super::*;

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

/// A server slow to find a GTID start (it reads its binlog up to the position first, sending no heartbeat) is waited
/// for: the session is not taken for dead after the heartbeat's silence (3 s here, the server's hold 5 s), and the
/// change after the position is applied.
#[tokio::test]
async fn a_start_by_gtid_waits_for_a_server_slow_to_find_the_position() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let port: u16 = env
        .mysql_url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("the test database's port");
    let server = common::proxy::Proxy::stalling_binlog_starts(port, Duration::from_secs(5));
    let url = env
        .mysql_url
        .replace(&format!("127.0.0.1:{port}/"), &format!("127.0.0.1:{}/", server.port));
    let binlog = format!("on_gap = \"none\"\nurl = \"{url}\"");
    // And with no server_id: the instance takes its own (from the host and this test's own configuration path).
    let body: String = config(&env, &binlog, &products_rule(&env, ""))
        .lines()
        .filter(|line| !line.starts_with("server_id = "))
        .map(|line| format!("{line}\n"))
        .collect();
    let path = env.config_file(&body);
    let gtid: String = {
        let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
        sqlx::query_scalar("SELECT @@GLOBAL.gtid_binlog_pos")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    env.sql("UPDATE products SET price = 18.00 WHERE id = 1").await;
    set(&env, "category:1:page:1").await;
    let (code, out) = env.run_cli(&["binlog", "set", "--gtid", &gtid], &path);
    assert_eq!(code, Some(0), "{out}");

    let mut daemon = start(&env, &path).await;
    assert!(
        becomes(&env, "category:1:page:1", None).await,
        "the change after the GTID position was not applied:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(server.stalls() >= 1, "the proxy never held the stream:\n{log}");
    assert!(log.contains("by_gtid=true"), "{log}");
    assert!(!log.contains("the connection is dead"), "{log}");
    assert!(log.contains("still finding the GTID position"), "{log}");
    assert!(log.contains("server_id is not set: using this instance's own"), "{log}");
    assert_eq!(daemon.stop().await, Some(0));
}
