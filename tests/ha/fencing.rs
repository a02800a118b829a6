//! A deposed leader writes nothing: paused past its lease, and Redis refusing the writes of a token the lease no longer
//! holds (one node and each slot of a cluster).

use super::*;

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
        (metric_at(admin_a, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0).then_some(())
    })
    .await
    .expect("a follows the binlog");

    // a starts the slow job and freezes mid-read; b takes over and applies a change.
    let (code, stdout, stderr) = cli(&["trigger", "slow", "--admin", &admin_a.to_string()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
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
