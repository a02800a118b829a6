//! One of two daemons leads; a stop hands over at once and a kill -9 during a binlog burst loses no invalidation (one
//! node and a cluster).

use super::*;

#[tokio::test]
async fn one_of_two_daemons_leads_and_a_stop_hands_over_at_once() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT);\nINSERT INTO t VALUES (1, 1)")
        .await;
    // A job every second: the leader runs it, the standby never does.
    let body = binlog_and_job(&env, "* * * * * *", "");
    let (config_a, admin_a) = instance(&env, "a", "10s", &body);
    let (config_b, admin_b) = instance(&env, "b", "10s", &body);
    let mut a = start(&env, &config_a);
    let mut b = start(&env, &config_b);
    let addrs = [admin_a, admin_b];
    let leader = one_leader(&addrs, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no single leader:\n{}\n{}", a.log(), b.log()));
    let (leader_addr, standby_addr) = (addrs[leader], addrs[1 - leader]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        metric_at(leader_addr, RUNS).await >= 2.0,
        "the leader runs the schedule"
    );
    assert_eq!(metric_at(standby_addr, RUNS).await, 0.0, "the standby runs nothing");
    assert_eq!(
        metric_at(leader_addr, "cachewarden_binlog_connected{source=\"main\"}").await,
        1.0
    );
    assert_eq!(
        metric_at(standby_addr, "cachewarden_binlog_connected{source=\"main\"}").await,
        0.0,
        "only the leader follows"
    );
    assert_eq!(metric_at(leader_addr, "cachewarden_ha_leader").await, 1.0);
    assert_eq!(metric_at(standby_addr, "cachewarden_ha_leader").await, 0.0);
    let status = ha(standby_addr).await.unwrap();
    assert_eq!(
        status["leader"],
        ["a", "b"][leader],
        "the standby says who leads: {status}"
    );
    assert!(status["lease_age_seconds"].as_f64().is_some(), "{status}");

    // Asking the standby to run a job says where to go instead.
    let (code, _, stderr) = cli(&["trigger", "j", "--admin", &standby_addr.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("is the standby") && stderr.contains("only the leader runs jobs"),
        "{stderr}"
    );
    let (_, stdout, _) = cli(&["status", "--admin", &standby_addr.to_string()]);
    assert!(stdout.contains("ha: standby: this instance is"), "{stdout}");

    // A stop releases the lease: the standby leads long before the 10 s lease could have run out.
    let (stopping, staying) = if leader == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let stopped = Instant::now();
    assert_eq!(stopping.stop().await, Some(0));
    let took = eventually(Duration::from_secs(9), || async {
        (role(standby_addr).await == "leader").then(|| stopped.elapsed())
    })
    .await
    .unwrap_or_else(|| panic!("no takeover after a stop:\n{}", staying.log()));
    assert!(
        took < Duration::from_secs(5),
        "took over after {took:?}, as if the lease had expired"
    );
    assert!(staying.log().contains("HA role changed"), "{}", staying.log());
    staying.stop().await;
}

#[tokio::test]
async fn a_kill_9_of_the_leader_during_a_binlog_burst_loses_no_invalidation() {
    let _binlog = common::binlog_shared();
    killed_leader(TestEnv::new().await).await;
}

/// The same on a Redis Cluster: the new leader claims every slot's copy of the fence before it writes.
#[tokio::test]
async fn on_a_cluster_a_kill_9_of_the_leader_during_a_binlog_burst_loses_no_invalidation() {
    let _binlog = common::binlog_shared();
    killed_leader(TestEnv::new().await.on_cluster()).await;
}

/// Two instances on `env`'s Redis; the leader is killed (kill -9) in the middle of a binlog burst, twice.
async fn killed_leader(env: TestEnv) {
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT);\nINSERT INTO t SELECT seq, 0 FROM seq_1_to_5000")
        .await;
    let p = env.prefix.clone();
    // run_on_start: a takeover must not re-warm (the cache is warm and the checkpoint fresh).
    let body = binlog_and_job(&env, "0 0 0 1 1 *", "run_on_start = true");
    let (config_a, admin_a) = instance(&env, "a", "2s", &body);
    let (config_b, admin_b) = instance(&env, "b", "2s", &body);
    let configs = [config_a, config_b];
    let addrs = [admin_a, admin_b];
    let mut daemons = [Some(start(&env, &configs[0])), Some(start(&env, &configs[1]))];
    let mut conn = env.any_redis().await;
    for round in 0..2 {
        let leader = one_leader(&addrs, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("round {round}: no single leader"));
        let standby = 1 - leader;
        eventually(Duration::from_secs(60), || async {
            (metric_at(addrs[leader], "cachewarden_binlog_connected{source=\"main\"}").await == 1.0).then_some(())
        })
        .await
        .expect("the leader follows the binlog");
        // Cached keys for 2,500 rows of this round, then a burst changing each of them, one transaction each.
        let ids: Vec<u32> = (1 + round * 2500..=2500 + round * 2500).collect();
        // (One command per key: a cluster refuses a pipeline across slots.)
        for id in &ids {
            let _: () = redis::cmd("SET")
                .arg(format!("{p}k:{id}"))
                .arg("cached")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let (from, to) = (ids[0], ids[ids.len() - 1]);
        // Killed mid-burst, whatever the machine's speed: after a random part of the burst is committed, the rest
        // waits for the kill. Some changes are applied by the old leader, some read but not applied, some not read.
        let (reached, reached_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_on, go_on_rx) = tokio::sync::oneshot::channel::<()>();
        let before_kill = from + 200 + fastrand::u32(..1500);
        let burst = {
            let url = env.mysql_url.clone();
            tokio::spawn(async move {
                use sqlx::Connection as _;
                let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
                let (mut reached, mut go_on_rx) = (Some(reached), Some(go_on_rx));
                for id in from..=to {
                    if id == before_kill {
                        let _ = reached.take().expect("reached once").send(());
                        let _ = go_on_rx.take().expect("resumed once").await;
                    }
                    sqlx::query("UPDATE t SET v = v + 1 WHERE id = ?")
                        .bind(id)
                        .execute(&mut db)
                        .await
                        .unwrap();
                }
            })
        };
        reached_rx.await.expect("the burst reaches the kill point");
        let mut killed = daemons[leader].take().unwrap();
        killed.signal("KILL");
        let _ = killed.exit_code(Duration::from_secs(5)).await;
        let _ = go_on.send(());
        assert!(
            eventually(Duration::from_secs(60), || async {
                (role(addrs[standby]).await == "leader").then_some(())
            })
            .await
            .is_some(),
            "round {round}: no takeover after kill -9"
        );
        burst.await.unwrap();
        let left = eventually(Duration::from_secs(120), || async {
            let mut left = 0;
            for id in from..=to {
                let exists: bool = redis::cmd("EXISTS")
                    .arg(format!("{p}k:{id}"))
                    .query_async(&mut conn.clone())
                    .await
                    .unwrap();
                left += u32::from(exists);
            }
            (left == 0).then_some(())
        })
        .await;
        assert!(
            left.is_some(),
            "round {round}: keys of changed rows survived the takeover:\n{}",
            daemons[standby].as_ref().unwrap().log()
        );
        assert_eq!(
            metric_at(addrs[standby], RUNS).await,
            0.0,
            "round {round}: the new leader re-warmed although the checkpoint was fresh"
        );
        // The killed instance comes back as standby for the next round.
        daemons[leader] = Some(start(&env, &configs[leader]));
    }
    for daemon in daemons.iter_mut().flatten() {
        daemon.stop().await;
    }
}
