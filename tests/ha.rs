//! Two daemons with `[ha]` against one Redis and one MariaDB: exactly one leads (schedule, binlog), a stop hands
//! over at once, a kill -9 during a binlog burst loses no invalidation, and a leader paused past its lease writes
//! nothing once it resumes (on one node and on a Redis Cluster). Plus Redis refusing the writes of a token the lease
//! no longer holds, on one node and, by each slot's copy of the epoch, on a cluster.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cachewarden::exec::cache::{Cache, CacheError, Fence};
use cachewarden::ops::admin;
use cachewarden::pure::model::KeyOp;
use common::{Daemon, TestEnv, cachewarden, eventually, free_port, metric_at, text};
use hyper::Method;

/// Waits here are generous: the test MariaDB's binlog is shared with every other test, so a new leader may first have
/// to read through other tests' bursts (behaviour is asserted, not speed; `scripts/bench` measures takeover times).
///
/// One instance's config: the shared servers, its own admin port and name, the lease, `body`.
fn instance(env: &TestEnv, name: &str, lease_ttl: &str, body: &str) -> (PathBuf, SocketAddr) {
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let p = &env.prefix;
    let cluster = if env.cluster { "cluster = true\n" } else { "" };
    let text = format!(
        "[mysql]\nurl = \"{}\"\n\n[redis]\nurl = \"{}\"\n{cluster}\n[admin]\nlisten = \"{admin}\"\n\n\
         [ha]\nenabled = true\nlease_ttl = \"{lease_ttl}\"\nkey = \"{p}leader\"\ninstance = \"{name}\"\n\n{body}",
        env.mysql_url, env.redis_url
    );
    (env.write_file(&format!("{name}.toml"), &text), admin)
}

/// Starts an instance with a replica id of its own, as an operator gives each host one
/// (`CACHEWARDEN_BINLOG__SERVER_ID`): with a shared id, a new leader's replication connection can wait for the server
/// to drop a paused old leader's (up to its net_write_timeout).
fn start(env: &TestEnv, config: &std::path::Path) -> Daemon {
    let server_id = (10_000 + fastrand::u32(..1_000_000)).to_string();
    Daemon::start(env, config, &[], &[("CACHEWARDEN_BINLOG__SERVER_ID", &server_id)])
}

/// `[binlog]` with a delete rule on `t`, and a job `j` on `t`.
fn binlog_and_job(env: &TestEnv, schedule: &str, extra: &str) -> String {
    let p = &env.prefix;
    format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}checkpoint\"\nheartbeat = \"1s\"\n\
         on_gap = \"warm\"\n\n[[warm]]\nname = \"j\"\nschedule = \"{schedule}\"\nquery = \"SELECT id, v FROM t\"\n\
         key = \"{p}j:{{id}}\"\nttl = \"1h\"\n{extra}\n\n[[on_change]]\ntable = \"t\"\ndelete = [\"{p}k:{{id}}\"]\n",
        10_000 + fastrand::u32(..1_000_000)
    )
}

async fn ha(addr: SocketAddr) -> Option<serde_json::Value> {
    let response = admin::request(addr, Method::GET, "/ha").await.ok()?;
    serde_json::from_str(&response.body).ok()
}

async fn role(addr: SocketAddr) -> String {
    ha(addr)
        .await
        .and_then(|status| status["role"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits until one of `addrs` leads and every other is standby; the leader's index.
async fn one_leader(addrs: &[SocketAddr], limit: Duration) -> Option<usize> {
    eventually(limit, || async {
        let mut roles = Vec::new();
        for addr in addrs {
            roles.push(role(*addr).await);
        }
        let leaders: Vec<usize> = (0..roles.len()).filter(|&i| roles[i] == "leader").collect();
        (leaders.len() == 1 && roles.iter().filter(|r| *r == "standby").count() == roles.len() - 1).then(|| leaders[0])
    })
    .await
}

const RUNS: &str = "cachewarden_warm_runs_total{warm_job=\"j\",outcome=\"success\"}";

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
    assert_eq!(metric_at(leader_addr, "cachewarden_binlog_connected").await, 1.0);
    assert_eq!(
        metric_at(standby_addr, "cachewarden_binlog_connected").await,
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
    let output = cachewarden()
        .args(["trigger", "j", "--admin", &standby_addr.to_string()])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is the standby") && stderr.contains("only the leader runs jobs"),
        "{stderr}"
    );
    let output = cachewarden()
        .args(["status", "--admin", &standby_addr.to_string()])
        .output()
        .unwrap();
    let (stdout, _) = text(&output);
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
            (metric_at(addrs[leader], "cachewarden_binlog_connected").await == 1.0).then_some(())
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

#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_after_it_resumes() {
    let _binlog = common::binlog_shared();
    paused_leader(TestEnv::new().await).await;
}

/// The same on a Redis Cluster, where the fence is each slot's copy of the lease's epoch.
#[tokio::test]
async fn on_a_cluster_a_leader_paused_past_its_lease_writes_nothing_after_it_resumes() {
    let _binlog = common::binlog_shared();
    paused_leader(TestEnv::new().await.on_cluster()).await;
}

/// Two instances on `env`'s Redis; the leader is paused (SIGSTOP) mid-read past its lease, the other takes over and
/// applies a change; once resumed, the old leader writes nothing and becomes standby.
async fn paused_leader(env: TestEnv) {
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT);\nINSERT INTO t SELECT seq, 0 FROM seq_1_to_4")
        .await;
    let p = env.prefix.clone();
    // `slow` reads for about 2 s: paused meanwhile, its writes would land after the takeover.
    let slow = format!(
        "\n[[warm]]\nname = \"slow\"\nschedule = \"0 0 0 1 1 *\"\nquery = \"SELECT id, v FROM t WHERE SLEEP(0.5) = 0\"\n\
         key = \"{p}slow:{{id}}\"\nttl = \"1h\"\ntimeout = \"1m\"\n"
    );
    let body = format!("{}{slow}", binlog_and_job(&env, "0 0 0 1 1 *", ""));
    let (config_a, admin_a) = instance(&env, "a", "2s", &body);
    let (config_b, admin_b) = instance(&env, "b", "2s", &body);
    let mut a = start(&env, &config_a);
    assert!(
        one_leader(&[admin_a], Duration::from_secs(20)).await.is_some(),
        "{}",
        a.log()
    );
    let mut b = start(&env, &config_b);
    assert_eq!(one_leader(&[admin_a, admin_b], Duration::from_secs(20)).await, Some(0));
    eventually(Duration::from_secs(60), || async {
        (metric_at(admin_a, "cachewarden_binlog_connected").await == 1.0).then_some(())
    })
    .await
    .expect("a follows the binlog");

    // a starts the slow job and freezes mid-read; b takes over and applies a change.
    let output = cachewarden()
        .args(["trigger", "slow", "--admin", &admin_a.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("STOP");
    assert!(
        eventually(Duration::from_secs(60), || async {
            (role(admin_b).await == "leader").then_some(())
        })
        .await
        .is_some(),
        "b did not take over:\n{}",
        b.log()
    );
    let mut conn = env.any_redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{p}k:1"))
        .arg("cached")
        .query_async(&mut conn)
        .await
        .unwrap();
    env.sql("UPDATE t SET v = 7 WHERE id = 1").await;
    let applied = eventually(Duration::from_secs(60), || async {
        env.get(&format!("{p}k:1")).await.is_none().then_some(())
    })
    .await;
    assert!(applied.is_some(), "b did not apply the change:\n{}", b.log());
    let checkpoint = |value: Option<String>| {
        value
            .and_then(|v| {
                let position = v.split_whitespace().next()?;
                position.rsplit(':').next()?.parse::<u64>().ok()
            })
            .unwrap_or(0)
    };
    let after_takeover = checkpoint(env.get(&format!("{p}checkpoint")).await);
    assert!(after_takeover > 0);

    // a resumes: its query finishes and its binlog task wakes, but nothing it writes may land.
    a.signal("CONT");
    assert!(
        eventually(Duration::from_secs(60), || async {
            (role(admin_a).await == "standby").then_some(())
        })
        .await
        .is_some(),
        "a did not notice it lost the lease:\n{}",
        a.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{p}slow:")))
        .collect();
    assert!(
        written.is_empty(),
        "the paused leader wrote {written:?} after losing the lease:\n{}",
        a.log()
    );
    assert!(
        checkpoint(env.get(&format!("{p}checkpoint")).await) >= after_takeover,
        "the checkpoint went backwards"
    );
    assert_eq!(role(admin_b).await, "leader");
    assert!(a.log().contains("stopped writing"), "{}", a.log());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn redis_refuses_every_value_write_whose_token_the_lease_no_longer_holds() {
    let env = TestEnv::new().await;
    let p = env.prefix.clone();
    let settings = env.config("").redis;
    let lease_key = format!("{p}leader");
    let fence = Fence::new(&lease_key);
    let cache = Cache::connect(&settings).await.unwrap().fenced(fence.clone());
    let set = |key: &str| KeyOp::Set {
        key: format!("{p}{key}"),
        value: b"v".to_vec(),
        ttl: Some(Duration::from_secs(60)),
        read: None,
    };
    // This process thinks it holds the lease as "a"; Redis says "b" does.
    fence.hold("a".into(), 0, Instant::now() + Duration::from_secs(60));
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(&lease_key)
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(cache.apply(&[set("plain")]).await, Err(CacheError::Fenced)));
    assert!(matches!(
        cache.supersede(&[set("image")]).await,
        Err(CacheError::Fenced)
    ));
    let lease = cache.begin_read(Duration::from_secs(5)).await.unwrap();
    let guarded: Vec<KeyOp> = (0..100)
        .map(|i| KeyOp::Set {
            key: format!("{p}guarded:{i}"),
            value: b"v".to_vec(),
            ttl: Some(Duration::from_secs(60)),
            read: lease.stamp(lease.read_at),
        })
        .collect();
    assert!(matches!(cache.apply(&guarded).await, Err(CacheError::Fenced)));
    assert!(
        env.keys().await.iter().all(|key| key == &lease_key),
        "{:?}",
        env.keys().await
    );
    // Deletes are allowed from anyone: at worst a miss.
    cache.apply(&[KeyOp::Delete { key: format!("{p}x") }]).await.unwrap();

    // With the lease ours, the same writes land.
    let _: () = redis::cmd("SET")
        .arg(&lease_key)
        .arg("a")
        .query_async(&mut conn)
        .await
        .unwrap();
    cache.apply(&[set("plain")]).await.unwrap();
    cache.supersede(&[set("image")]).await.unwrap();
    cache.apply(&guarded).await.unwrap();
    cache.end_read(lease).await;
    assert_eq!(env.keys().await.len(), 103);
    // And a fence that ran out locally refuses before asking Redis.
    fence.hold("a".into(), 0, Instant::now() - Duration::from_millis(1));
    assert!(matches!(cache.apply(&[set("late")]).await, Err(CacheError::Fenced)));
}

#[tokio::test]
async fn on_a_cluster_every_slot_refuses_the_value_writes_of_a_deposed_leader() {
    use cachewarden::exec::cache::LeaseAttempt;
    use cachewarden::exec::cache::cluster::{fence::fence_key, slot::key_slot};
    let env = TestEnv::new().await.on_cluster();
    let p = env.prefix.clone();
    let settings = env.config("").redis;
    let lease_key = format!("{p}leader");
    let ttl = Duration::from_secs(60);
    // Keys over many slots (and so every master).
    let batch = |name: &str| -> Vec<KeyOp> {
        (0..300)
            .map(|i| KeyOp::Set {
                key: format!("{p}{name}:{i}"),
                value: b"v".to_vec(),
                ttl: Some(ttl),
                read: None,
            })
            .collect()
    };
    let take = |cache: Cache, token: &'static str| {
        let lease_key = lease_key.clone();
        async move {
            let attempt = cache.take_lease(&lease_key, token, ttl).await.unwrap();
            let LeaseAttempt::Taken { epoch } = attempt else {
                panic!("{token} could not take the lease: {attempt:?}")
            };
            let fence = Fence::new(&lease_key);
            fence.hold(token.into(), epoch, Instant::now() + ttl);
            (cache.fenced(fence), epoch)
        }
    };
    let (a, epoch_a) = take(Cache::connect(&settings).await.unwrap(), "a").await;
    a.apply(&batch("a1")).await.unwrap();
    let b = Cache::connect(&settings).await.unwrap();
    assert!(matches!(
        b.take_lease(&lease_key, "b", ttl).await.unwrap(),
        LeaseAttempt::HeldBy(holder) if holder == "a"
    ));

    // a's lease runs out while a is paused; b takes over with a newer epoch and claims every slot.
    let mut conn = env.any_redis().await;
    let _: () = redis::cmd("DEL").arg(&lease_key).query_async(&mut conn).await.unwrap();
    let (b, epoch_b) = take(b, "b").await;
    assert!(epoch_b > epoch_a, "{epoch_b} > {epoch_a}");

    // a still believes it leads (its local fence has not run out): Redis refuses every value write, in every slot.
    assert!(matches!(a.apply(&batch("a2")).await, Err(CacheError::Fenced)));
    assert!(matches!(a.supersede(&batch("a3")).await, Err(CacheError::Fenced)));
    let lease = a.begin_read(Duration::from_secs(5)).await.unwrap();
    let guarded: Vec<KeyOp> = batch("a4")
        .into_iter()
        .map(|op| match op {
            KeyOp::Set { key, value, ttl, .. } => KeyOp::Set {
                key,
                value,
                ttl,
                read: lease.stamp(lease.read_at),
            },
            op => op,
        })
        .collect();
    assert!(matches!(a.apply(&guarded).await, Err(CacheError::Fenced)));
    a.end_read(lease).await;
    let keys = env.keys().await;
    for name in ["a2", "a3", "a4"] {
        assert!(
            !keys.iter().any(|key| key.starts_with(&format!("{p}{name}:"))),
            "the deposed leader wrote {name}"
        );
    }
    // Deletes are allowed from anyone.
    a.apply(&[KeyOp::Delete {
        key: format!("{p}a1:0"),
    }])
    .await
    .unwrap();

    // b writes; and where a slot's copy was lost (evicted), b claims it again while a stays refused there.
    b.apply(&batch("b1")).await.unwrap();
    let lost: Vec<String> = (0..50)
        .map(|i| fence_key(key_slot(format!("{p}b2:{i}").as_bytes()), &lease_key))
        .collect();
    for key in &lost {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
    }
    assert!(matches!(a.apply(&batch("b2")).await, Err(CacheError::Fenced)));
    b.supersede(&batch("b2")).await.unwrap();
    b.apply(&batch("b3")).await.unwrap();
    let keys = env.keys().await;
    for name in ["b1", "b2", "b3"] {
        let written = keys
            .iter()
            .filter(|key| key.starts_with(&format!("{p}{name}:")))
            .count();
        assert_eq!(written, 300, "{name}");
    }
    let copy: Option<String> = redis::cmd("GET").arg(&lost[0]).query_async(&mut conn).await.unwrap();
    assert_eq!(copy, Some(epoch_b.to_string()));
    // (The 16,384 copies are named after this test's lease key: TestEnv's cleanup removes them.)
}

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
                "cachewarden_binlog_connected",
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
        common::sample(&metrics, "cachewarden_binlog_gaps_total"),
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
