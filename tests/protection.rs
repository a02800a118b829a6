//! The stale-set protection protocol, step by step, on real Redis: invalidations leave evidence only in the hashes
//! of live read leases, a guarded write loses to newer evidence and wins otherwise, a write whose lease ended or
//! expired — or whose evidence was evicted — is refused whole, expired leases stop counting, and row images
//! (`supersede`) win over reads in flight. The test has a Redis database of its own, because the version counter and the read leases are global to
//! a database and other tests' warm runs would hold leases of their own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachewarden::exec::cache::{Cache, CacheError, LEASE_PREFIX, READERS_KEY, VERSION_KEY};
use cachewarden::pure::model::{KeyOp, ReadStamp};
use common::{TestEnv, Warm, services};

/// No other test uses this database.
const OWN_DB: u32 = 13;
/// How long the test's reads may take: leases live this plus cachewarden's one-minute margin.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

type Conn = redis::aio::MultiplexedConnection;

fn set(key: &str, value: &str, read: Option<ReadStamp>) -> KeyOp {
    KeyOp::Set {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        ttl: Some(Duration::from_secs(60)),
        read,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn command<T: redis::FromRedisValue>(conn: &mut Conn, args: &[&str]) -> T {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(arg);
    }
    cmd.query_async(conn).await.expect("redis command")
}

#[tokio::test]
async fn evidence_follows_read_leases_and_guards_writes() {
    let mut env = TestEnv::new().await;
    env.redis_url = format!("{}/{OWN_DB}", services().redis);
    let mut conn = env.redis().await;
    command::<()>(&mut conn, &["FLUSHDB"]).await;
    let config = env.config(&Warm::new(&env, "t").to_string());
    let cache = Cache::connect(&config.redis).await.expect("connect");
    let key = |name: &str| format!("{}{name}", env.prefix);
    let evidence_keys =
        async |conn: &mut Conn| -> Vec<String> { command(conn, &["KEYS", &format!("{LEASE_PREFIX}*")]).await };
    let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
    let invalidate = async |key: &String| cache.invalidate(std::slice::from_ref(key)).await.expect("invalidate");

    // No read in flight: an invalidation takes a version and unlinks, and leaves no evidence.
    cache.apply(&[set(&a, "1", None)]).await.expect("apply");
    let first = invalidate(&a).await;
    assert!(first >= 1, "the version counter moved: {first}");
    assert_eq!(env.get(&a).await, None, "invalidated key is gone");
    assert!(
        evidence_keys(&mut conn).await.is_empty(),
        "no evidence without a read lease"
    );

    // A read in flight: invalidations leave evidence in its lease's hash, living as long as the lease, and the
    // read's older value of that key is refused ...
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let evidence = lease.evidence().expect("protection is on");
    assert_eq!(lease.read_at, first, "the lease reads the current version");
    let second = invalidate(&b).await;
    assert_eq!(second, first + 1);
    let marked: Option<u64> = command(&mut conn, &["HGET", &evidence, &b]).await;
    assert_eq!(marked, Some(second), "the evidence holds the invalidation's version");
    let evidence_ttl = env.pttl(&evidence).await;
    assert!(
        (60_000..=65_000).contains(&evidence_ttl),
        "the evidence lives as long as the lease (5 s + 60 s): {evidence_ttl} ms"
    );
    let stamp = lease.stamp(lease.read_at);
    cache
        .apply(&[set(&b, "old", stamp.clone()), set(&c, "fresh", stamp.clone())])
        .await
        .expect("apply");
    assert_eq!(
        env.get(&b).await,
        None,
        "a value read before its key's invalidation must not land"
    );
    // ... while keys nobody invalidated are written although the counter moved.
    assert_eq!(env.get(&c).await.as_deref(), Some("fresh"));

    // Row images supersede reads in flight: written at once, and the lease's older value of that key is refused.
    cache.supersede(&[set(&d, "row-image", None)]).await.expect("supersede");
    assert_eq!(env.get(&d).await.as_deref(), Some("row-image"));
    assert!(
        command::<bool>(&mut conn, &["HEXISTS", &evidence, &d]).await,
        "supersede leaves evidence while a read is in flight"
    );
    cache.apply(&[set(&d, "older", stamp.clone())]).await.expect("apply");
    assert_eq!(env.get(&d).await.as_deref(), Some("row-image"), "the older read lost");

    // The lease ended: its writes are refused whole (the lease is their fence), its evidence is gone and no
    // invalidation recreates it, and a new read sees the latest version and writes freely.
    cache.end_read(lease).await;
    assert_eq!(
        command::<u64>(&mut conn, &["ZCARD", READERS_KEY]).await,
        0,
        "ended lease is gone"
    );
    let late = cache.apply(&[set(&a, "late", stamp)]).await;
    assert!(matches!(late, Err(CacheError::LeaseEnded)), "{late:?}");
    assert_eq!(env.get(&a).await, None, "a write after its lease ended must not land");
    invalidate(&c).await;
    assert!(
        evidence_keys(&mut conn).await.is_empty(),
        "no evidence once the lease ended"
    );
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    cache
        .apply(&[set(&b, "new", lease.stamp(lease.read_at))])
        .await
        .expect("apply");
    assert_eq!(
        env.get(&b).await.as_deref(),
        Some("new"),
        "a read after the invalidation's version writes"
    );
    cache.end_read(lease).await;

    // A lease whose process died or stalled (its expiry passed) no longer makes invalidations leave evidence, its
    // writes are refused, and the next lease drops it.
    command::<()>(
        &mut conn,
        &["ZADD", READERS_KEY, &(now_ms() - 1_000).to_string(), "dead-process"],
    )
    .await;
    let third = invalidate(&a).await;
    assert!(
        evidence_keys(&mut conn).await.is_empty(),
        "an expired lease does not count"
    );
    let stalled = ReadStamp {
        version: third,
        lease: Arc::from("dead-process"),
    };
    let late = cache.apply(&[set(&a, "stalled", Some(stalled))]).await;
    assert!(matches!(late, Err(CacheError::LeaseEnded)), "{late:?}");
    assert_eq!(env.get(&a).await, None, "a write under an expired lease must not land");
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let dead: Option<f64> = command(&mut conn, &["ZSCORE", READERS_KEY, "dead-process"]).await;
    assert_eq!(dead, None, "expired lease was dropped");
    cache.end_read(lease).await;

    // Redis evicted a live lease's evidence (maxmemory): lost evidence must read as "refuse", never as "nothing was
    // invalidated". Keys nobody invalidated are refused too: without the evidence nothing can tell them apart.
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let stamp = lease.stamp(lease.read_at);
    invalidate(&key("evicted")).await;
    command::<()>(&mut conn, &["DEL", &lease.evidence().unwrap()]).await;
    let refused = cache
        .apply(&[
            set(&key("evicted"), "old", stamp.clone()),
            set(&key("untouched"), "v", stamp),
        ])
        .await;
    assert!(matches!(refused, Err(CacheError::LeaseEnded)), "{refused:?}");
    assert_eq!(
        env.get(&key("evicted")).await,
        None,
        "an invalidated key must not be written once its evidence is gone"
    );
    assert_eq!(env.get(&key("untouched")).await, None);
    assert!(
        evidence_keys(&mut conn).await.is_empty(),
        "an invalidation never recreates evicted evidence"
    );
    cache.end_read(lease).await;

    // Big batches try the optimistic path (WATCH + MULTI/EXEC) first: at an unmoved version they are written whole;
    // once the counter has moved they go through the guard script, which still refuses the invalidated key.
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let stamp = lease.stamp(lease.read_at);
    let many = |value: &str| -> Vec<KeyOp> {
        (0..100)
            .map(|i| set(&key(&format!("many:{i}")), value, stamp.clone()))
            .collect()
    };
    cache.apply(&many("v1")).await.expect("apply");
    for i in [0, 50, 99] {
        assert_eq!(
            env.get(&key(&format!("many:{i}"))).await.as_deref(),
            Some("v1"),
            "many:{i}"
        );
    }
    invalidate(&key("many:50")).await;
    cache.apply(&many("v2")).await.expect("apply");
    assert_eq!(env.get(&key("many:0")).await.as_deref(), Some("v2"));
    assert_eq!(env.get(&key("many:99")).await.as_deref(), Some("v2"));
    assert_eq!(
        env.get(&key("many:50")).await,
        None,
        "the invalidated key is refused in a big batch too"
    );
    cache.end_read(lease).await;

    let version: u64 = command(&mut conn, &["GET", VERSION_KEY]).await;
    assert_eq!(version, third + 2, "every invalidation and supersede took a version");

    // Redis evicted the version counter alone while reads were in flight, and the next script started a new
    // counter below their versions: versions of the lost counter and the new one cannot be compared, so those
    // reads' writes are refused, whichever script (an invalidation, a new lease) started the new counter. (Seeds are
    // below 2^52, so a counter at 2^52 is certain to start again below.)
    for recreated_by_lease in [false, true] {
        command::<()>(&mut conn, &["SET", VERSION_KEY, &(1u64 << 52).to_string()]).await;
        let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
        command::<()>(&mut conn, &["DEL", VERSION_KEY]).await;
        let other = if recreated_by_lease {
            Some(cache.begin_read(READ_TIMEOUT).await.expect("begin_read"))
        } else {
            None
        };
        let version = invalidate(&key("recounted")).await;
        assert!(version < lease.read_at, "the new counter starts below: {version}");
        let late = cache
            .apply(&[set(&key("recounted"), "read before", lease.stamp(lease.read_at))])
            .await;
        assert!(matches!(late, Err(CacheError::LeaseEnded)), "{late:?}");
        assert_eq!(
            env.get(&key("recounted")).await,
            None,
            "a value read before the invalidation landed after it (new counter started by a lease: {recreated_by_lease})"
        );
        cache.end_read(lease).await;
        if let Some(other) = other {
            cache.end_read(other).await;
        }
    }

    // Redis lost its state while a read was in flight (a restart without persistence, a flush): the read's writes
    // are refused, big batches included, and a new counter does not start where the old one was.
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let lost: Vec<KeyOp> = (0..100)
        .map(|i| set(&key(&format!("lost:{i}")), "lost", lease.stamp(lease.read_at)))
        .collect();
    command::<()>(&mut conn, &["FLUSHDB"]).await;
    let late = cache.apply(&lost).await;
    assert!(matches!(late, Err(CacheError::LeaseEnded)), "{late:?}");
    assert_eq!(env.get(&key("lost:0")).await, None, "nothing of the batch landed");
    let restarted = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    // Random below 2^52: not 0, where a lost counter would otherwise start again and count through old versions.
    assert!(
        restarted.read_at > 1_000_000 && restarted.read_at != lease.read_at,
        "the new counter starts at a random point: {} (before: {})",
        restarted.read_at,
        lease.read_at
    );
    cache.end_read(restarted).await;
    cache.end_read(lease).await;
    assert_eq!(third, second + 3);
    command::<()>(&mut conn, &["FLUSHDB"]).await;
}

#[tokio::test]
async fn on_a_cluster_reads_whose_leases_redis_lost_are_refused_wherever_something_changed_since() {
    use cachewarden::exec::cache::cluster::slot::{key_slot, slot_tag};
    // A cluster of its own: the lost lease set (and the floors it leaves for an hour) must not touch other tests.
    let cluster = common::OwnCluster::start(3, 0);
    let mut env = TestEnv::new().await.on_cluster();
    env.redis_url = cluster.url();
    let config = env.config(&Warm::new(&env, "t").to_string());
    let cache = Cache::connect(&config.redis).await.expect("connect");
    let key = |tag: &str, n: u32| format!("{}{{{tag}}}:{n}", env.prefix);
    let (s1, s2, u, t) = (key("s", 1), key("s", 2), key("u", 1), key("t", 1));
    let mut conn = env.any_redis().await;

    // A read in flight, with evidence in slot s already (s1 was invalidated during it).
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let stamp = lease.stamp(lease.read_at);
    cache.invalidate(std::slice::from_ref(&s1)).await.expect("invalidate");
    // Redis loses the read leases (evicted under allkeys-lru, say); then s2 (whose slot holds the read's evidence)
    // and u (a slot with none) change, while no other read is in flight.
    let _: () = redis::cmd("DEL")
        .arg("cachewarden:{cachewarden}:readers")
        .query_async(&mut conn)
        .await
        .unwrap();
    cache.invalidate(&[&s2, &u]).await.expect("invalidate");

    // Its writes must not land where something changed after the loss: not s2, whose evidence in the slot never
    // heard of that change, nor u, whose slot would otherwise look unchanged. Slot t saw nothing: t is written.
    for changed in [&s2, &u] {
        let late = cache.apply(&[set(changed, "read before", stamp.clone())]).await;
        assert!(matches!(late, Err(CacheError::LeaseEnded)), "{changed}: {late:?}");
        assert_eq!(env.get(changed).await, None, "{changed}");
    }
    cache
        .apply(&[set(&t, "read before", stamp.clone())])
        .await
        .expect("apply");
    assert_eq!(env.get(&t).await.as_deref(), Some("read before"));
    let floor: String = redis::cmd("GET")
        .arg(format!("cachewarden:{{{}}}:slot", slot_tag(key_slot(b"u"))))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(floor.contains('/'), "the changed slot has a floor: {floor}");
    cache.end_read(lease).await;

    // A read registered after the loss writes everywhere.
    let lease = cache.begin_read(READ_TIMEOUT).await.expect("begin_read");
    let fresh: Vec<KeyOp> = [&s1, &s2, &u, &t]
        .into_iter()
        .map(|key| set(key, "new", lease.stamp(lease.read_at)))
        .collect();
    cache.apply(&fresh).await.expect("apply");
    for key in [&s1, &s2, &u, &t] {
        assert_eq!(env.get(key).await.as_deref(), Some("new"), "{key}");
    }
    cache.end_read(lease).await;
}
