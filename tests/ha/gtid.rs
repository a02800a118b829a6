//! After a switchover or failover of MySQL, the binlog resumes by GTID on the promoted server without a gap (MariaDB
//! and MySQL).

use super::*;

/// Runs `sql` on a server of the test's own.
async fn on(url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn scalar(url: &str, sql: &str) -> i64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn after_a_switchover_the_binlog_resumes_by_gtid_on_the_promoted_server_without_a_gap() {
    // A primary and a replica with its own binlog (log_slave_updates), replicating by GTID.
    let primary = common::OwnMariaDb::start_with(11, &[]);
    let replica = common::OwnMariaDb::start_with(12, &["--log-slave-updates"]);
    let fill = "CREATE DATABASE shop; USE shop; CREATE TABLE t (id INT PRIMARY KEY, v INT);
                INSERT INTO t SELECT seq, 0 FROM seq_1_to_100";
    on(&primary.url(), fill).await;
    on(
        &replica.url(),
        &format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root', \
             MASTER_USE_GTID = slave_pos; START SLAVE",
            primary.port
        ),
    )
    .await;
    let servers = Switchover {
        primary: primary.url(),
        replica: replica.url(),
        promote: "STOP SLAVE; RESET SLAVE ALL",
        // MariaDB GTIDs are domain-server-seq.
        primary_gtid: " gtid=0-11-".into(),
        replica_gtid: "-12-".into(),
        ids: (11, 12),
    };
    switchover(servers, move || drop(primary)).await;
}

/// The same on Oracle MySQL, whose GTID position is the set of every transaction executed (`uuid:1-N`).
#[tokio::test]
async fn on_mysql_after_a_failover_the_binlog_resumes_by_gtid_set_on_the_promoted_replica_without_a_gap() {
    let primary = common::OwnMySql::start(21);
    on(
        &primary.url(),
        "CREATE DATABASE shop; USE shop; CREATE TABLE t (id INT PRIMARY KEY, v INT);
         INSERT INTO t WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100)
         SELECT n, 0 FROM s",
    )
    .await;
    let replica = common::OwnMySql::replica_of(&primary, 22);
    let uuid = |url: String| async move {
        use sqlx::Connection as _;
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        sqlx::query_scalar::<_, String>("SELECT @@server_uuid")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let servers = Switchover {
        primary: primary.url(),
        replica: replica.url(),
        promote: "STOP REPLICA; RESET REPLICA ALL",
        primary_gtid: format!(" gtid={}:1", uuid(primary.url()).await),
        // The promoted replica's own transactions join the set under its uuid.
        replica_gtid: format!("{}:1", uuid(replica.url()).await),
        ids: (21, 22),
    };
    switchover(servers, move || drop(primary)).await;
}

/// A primary with table `shop.t` (ids 1..=100) and a GTID replica of it that keeps its own binlog.
struct Switchover {
    primary: String,
    replica: String,
    /// Makes the replica a primary of its own.
    promote: &'static str,
    /// What the checkpoint holds while following the primary, and after writes on the promoted replica.
    primary_gtid: String,
    replica_gtid: String,
    /// The servers' ids.
    ids: (u32, u32),
}

/// The daemon follows the primary; then its checkpoint loses its GTID (as an older version saved it) and it learns
/// it again; then, stopped, changes it never saw happen on the primary, the replica is promoted and takes changes of
/// its own: pointed at it, the daemon continues by GTID without a gap and loses none of them.
async fn switchover(servers: Switchover, stop_primary: impl FnOnce()) {
    let env = TestEnv::new().await;
    let p = env.prefix.clone();
    let (primary_id, replica_id) = servers.ids;
    let config = |url: &str| {
        env.write_file(
            "failover.toml",
            &format!(
                "[mysql]\nurl = \"{url}/shop\"\n\n[redis]\nurl = \"{redis}\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
                 [channel]\nenabled = false\n\n[binlog]\nserver_id = 4343\ncheckpoint_key = \"{p}checkpoint\"\n\
                 heartbeat = \"1s\"\non_gap = \"flush\"\n\n[[warm]]\nname = \"j\"\nschedule = \"0 0 0 1 1 *\"\n\
                 query = \"SELECT id, v FROM t\"\nkey = \"{p}k:{{id}}\"\nttl = \"1h\"\n\n\
                 [[on_change]]\ntable = \"t\"\ndelete = [\"{p}k:{{id}}\"]\n",
                redis = env.redis_url,
                admin = env.admin_addr(),
            ),
        )
    };
    let cache_rows = |from: u32, to: u32| {
        let env = &env;
        let p = p.clone();
        async move {
            let mut pipe = redis::pipe();
            for id in from..=to {
                pipe.set(format!("{p}k:{id}"), "cached").ignore();
            }
            pipe.query_async::<()>(&mut env.redis().await).await.unwrap();
        }
    };
    let all_gone = |from: u32, to: u32| {
        let env = &env;
        let p = p.clone();
        async move {
            for id in from..=to {
                if env.get(&format!("{p}k:{id}")).await.is_some() {
                    return false;
                }
            }
            true
        }
    };
    let following = || async {
        common::wait_for_admin(&env).await;
        eventually(Duration::from_secs(10), || async {
            (common::sample(
                &common::get(&env, "/metrics").await?.body,
                "cachewarden_binlog_connected{source=\"main\"}",
            ) == Some(1.0))
            .then_some(())
        })
        .await
        .expect("following the binlog");
    };
    let checkpoint = || async { env.get(&format!("{p}checkpoint")).await.unwrap_or_default() };
    let mut daemon = Daemon::start(&env, &config(&servers.primary), &[], &[]);
    following().await;
    // (After the first start's own recovery, which flushes what the rules cover: there was no checkpoint.)
    cache_rows(1, 100).await;
    on(&servers.primary, "UPDATE shop.t SET v = 1 WHERE id <= 30").await;
    let gone = eventually(Duration::from_secs(10), || async {
        all_gone(1, 30).await.then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", daemon.log());
    daemon.stop().await;

    // A checkpoint without its GTID, as older versions saved it: resumed by offset, it learns its GTID again.
    let saved = checkpoint().await;
    assert!(saved.contains(&servers.primary_gtid), "{saved}");
    let offset = saved.split_whitespace().next().unwrap().to_string();
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{p}checkpoint"))
        .arg(&offset)
        .query_async(&mut conn)
        .await
        .unwrap();
    on(&servers.primary, "UPDATE shop.t SET v = 1 WHERE id BETWEEN 31 AND 40").await;
    let mut daemon = Daemon::start(&env, &config(&servers.primary), &[], &[]);
    let gone = eventually(Duration::from_secs(10), || async {
        all_gone(31, 40).await.then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", daemon.log());
    let relearned = eventually(Duration::from_secs(10), || async {
        let saved = checkpoint().await;
        (saved.contains(&servers.primary_gtid) && saved != offset).then_some(saved)
    })
    .await;
    assert!(relearned.is_some(), "{}\n{}", checkpoint().await, daemon.log());
    assert!(!all_gone(91, 91).await, "a gap was recovered:\n{}", daemon.log());
    daemon.stop().await;

    // Changes the daemon does not see on the primary; the replica gets them; then the replica is promoted and
    // takes writes of its own.
    on(&servers.primary, "UPDATE shop.t SET v = 2 WHERE id BETWEEN 41 AND 60").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            (scalar(&servers.replica, "SELECT COUNT(*) FROM shop.t WHERE v = 2").await == 20).then_some(())
        })
        .await
        .is_some(),
        "the replica did not catch up"
    );
    on(&servers.replica, servers.promote).await;
    stop_primary();
    on(&servers.replica, "UPDATE shop.t SET v = 3 WHERE id BETWEEN 61 AND 90").await;

    let saved = checkpoint().await;
    assert!(
        saved.contains(&servers.primary_gtid) && saved.contains(&format!(" server={primary_id}")),
        "{saved}"
    );
    let mut daemon = Daemon::start(&env, &config(&servers.replica), &[], &[]);
    let caught_up = eventually(Duration::from_secs(20), || async {
        all_gone(41, 90).await.then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "changes lost across the switchover:\n{}",
        daemon.log()
    );
    // No gap: nothing was flushed (unchanged rows keep their keys) and no recovery ran.
    assert!(
        !all_gone(91, 91).await,
        "the unchanged row's key was flushed: a gap was recovered\n{}",
        daemon.log()
    );
    let metrics = common::get(&env, "/metrics").await.unwrap().body;
    assert_eq!(
        common::sample(&metrics, "cachewarden_binlog_gaps_total{source=\"main\"}"),
        Some(0.0),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("by_gtid=true"), "{}", daemon.log());
    let saved = checkpoint().await;
    assert!(
        saved.contains(&servers.replica_gtid) && saved.contains(&format!(" server={replica_id}")),
        "{saved}"
    );
    daemon.stop().await;
}
