//! The stale-set protection protocol, step by step, on real Redis: markers are left only while a read lease is
//! live, a guarded write loses to a newer marker and wins otherwise, expired leases stop counting, and row images
//! (`supersede`) win over reads in flight. The test has a Redis database of its own, because the version counter and
//! the read leases are global to a database and other tests' warm runs would hold leases of their own.

mod common;

use std::time::Duration;

use cachewarden::cache::{Cache, MARKER_PREFIX, READERS_KEY, VERSION_KEY};
use cachewarden::model::KeyOp;
use common::{TestEnv, services};

/// No other test uses this database.
const OWN_DB: u32 = 13;

async fn flush(env: &TestEnv) {
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut env.redis().await)
        .await
        .expect("FLUSHDB");
}

fn set(key: &str, value: &str, read_at: Option<u64>) -> KeyOp {
    KeyOp::Set {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        ttl: Some(Duration::from_secs(60)),
        read_at,
    }
}

#[tokio::test]
async fn markers_follow_read_leases_and_guard_writes() {
    let mut env = TestEnv::new().await;
    env.redis_url = format!("{}/{OWN_DB}", services().redis);
    flush(&env).await;
    let config = env.config(&format!(
        "[[warm]]\nname = \"t\"\nquery = \"SELECT 1 AS id\"\nkey = \"{}t:{{id}}\"\nschedule = \"every 1h\"\nttl = \"1h\"\n",
        env.prefix
    ));
    let cache = Cache::connect(&config.redis).await.expect("connect");
    let key = |name: &str| format!("{}{name}", env.prefix);
    let marker = |name: &str| format!("{MARKER_PREFIX}{}{name}", env.prefix);
    let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
    let mut conn = env.redis().await;
    let exists = async |conn: &mut redis::aio::MultiplexedConnection, key: &str| -> bool {
        redis::cmd("EXISTS").arg(key).query_async(conn).await.expect("EXISTS")
    };

    // No read in flight: an invalidation takes a version and unlinks, and leaves no marker.
    cache.apply(&[set(&a, "1", None)]).await.expect("apply");
    let first = cache.invalidate(std::slice::from_ref(&a)).await.expect("invalidate");
    assert!(first >= 1, "the version counter moved: {first}");
    assert_eq!(env.get(&a).await, None, "invalidated key is gone");
    assert!(!exists(&mut conn, &marker("a")).await, "no marker without a read lease");

    // A read in flight: invalidations leave markers, and the read's older value of that key is refused ...
    let lease = cache.begin_read().await.expect("begin_read");
    assert_eq!(lease.read_at, first, "the lease reads the current version");
    let second = cache.invalidate(std::slice::from_ref(&b)).await.expect("invalidate");
    assert_eq!(second, first + 1);
    let marked: Option<u64> = redis::cmd("GET").arg(marker("b")).query_async(&mut conn).await.unwrap();
    assert_eq!(marked, Some(second), "marker holds the invalidation's version");
    let marker_ttl: i64 = redis::cmd("PTTL")
        .arg(marker("b"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        marker_ttl > 0 && marker_ttl <= config.redis.marker_ttl.as_millis() as i64,
        "marker expires: {marker_ttl} ms"
    );
    cache
        .apply(&[
            set(&b, "old", Some(lease.read_at)),
            set(&c, "fresh", Some(lease.read_at)),
        ])
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
        exists(&mut conn, &marker("d")).await,
        "supersede marks while a read is in flight"
    );
    cache
        .apply(&[set(&d, "older", Some(lease.read_at))])
        .await
        .expect("apply");
    assert_eq!(env.get(&d).await.as_deref(), Some("row-image"), "the older read lost");

    // The lease ended: invalidations stop leaving markers; a new read sees the latest version and writes freely.
    cache.end_read(lease).await;
    let readers: u64 = redis::cmd("ZCARD")
        .arg(READERS_KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(readers, 0, "ended lease is gone");
    cache.invalidate(std::slice::from_ref(&c)).await.expect("invalidate");
    assert!(!exists(&mut conn, &marker("c")).await, "no marker once the lease ended");
    let lease = cache.begin_read().await.expect("begin_read");
    cache
        .apply(&[set(&b, "new", Some(lease.read_at))])
        .await
        .expect("apply");
    assert_eq!(
        env.get(&b).await.as_deref(),
        Some("new"),
        "a read after the marker's version writes"
    );
    cache.end_read(lease).await;

    // A lease whose process died (its expiry passed) no longer makes invalidations leave markers, and the next
    // lease drops it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    redis::cmd("ZADD")
        .arg(READERS_KEY)
        .arg(now_ms - 1_000)
        .arg("dead-process")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    cache.invalidate(std::slice::from_ref(&a)).await.expect("invalidate");
    assert!(
        !exists(&mut conn, &marker("a")).await,
        "an expired lease does not count"
    );
    let lease = cache.begin_read().await.expect("begin_read");
    let dead: Option<f64> = redis::cmd("ZSCORE")
        .arg(READERS_KEY)
        .arg("dead-process")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, None, "expired lease was dropped");
    cache.end_read(lease).await;

    let version: u64 = redis::cmd("GET").arg(VERSION_KEY).query_async(&mut conn).await.unwrap();
    assert_eq!(version, second + 3, "every invalidation and supersede took a version");
    flush(&env).await;
}
