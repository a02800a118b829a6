//! Keys and memory per job: estimated from a sample of the keyspace each minute, exported as gauges and shown on the
//! status page; exact for a node holding fewer keys than a sample draws and for a job's one fixed key.

use super::*;
use common::{OwnRedis, metric};

/// Jobs over `items`: `products` (kind 'p'), `users` (kind 'u') and a one-key summary.
fn jobs(env: &TestEnv) -> String {
    let p = &env.prefix;
    let job = |name: &str, kind: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
             query = \"SELECT id, body FROM items WHERE kind = '{kind}'\"\nkey = \"{p}{name}:{{id}}\"\nttl = \"1h\"\n\n"
        )
    };
    format!(
        "{}{}[[warm]]\nname = \"summary\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
         query = \"SELECT COUNT(*) AS n FROM items\"\nkey = \"{p}summary\"\nshape = \"object\"\nttl = \"1h\"\n",
        job("products", "p"),
        job("users", "u")
    )
}

/// `products` rows of kind 'p' and `users` of kind 'u', each with a 50-byte body.
async fn items(env: &TestEnv, products: u32, users: u32) {
    env.sql("CREATE TABLE items (id INT PRIMARY KEY, kind CHAR(1) NOT NULL, body VARCHAR(100) NOT NULL)")
        .await;
    env.sql(&format!(
        "INSERT INTO items SELECT i, IF(i <= {products}, 'p', 'u'), REPEAT('x', 50) FROM \
         (SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d AS i FROM {digits} a, {digits} b, {digits} c, {digits} e) n \
         WHERE i <= {}",
        products + users,
        digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                  UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
    ))
    .await;
}

/// A daemon running the jobs over `products` and `users` rows, on a Redis of its own.
async fn started(products: u32, users: u32) -> (TestEnv, OwnRedis, Daemon) {
    let env = TestEnv::new().await;
    items(&env, products, users).await;
    let redis = OwnRedis::start().await;
    let path = env.config_file_with_redis(&format!("redis://127.0.0.1:{}/0", redis.port), &jobs(&env));
    let daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    (env, redis, daemon)
}

/// The job's estimated keys and bytes once the first sample after the warm runs is in.
async fn estimates(env: &TestEnv, daemon: &Daemon, job: &str) -> (f64, f64) {
    let keys = format!("cachewarden_warm_job_keys{{warm_job=\"{job}\"}}");
    let bytes = format!("cachewarden_warm_job_memory_bytes{{warm_job=\"{job}\"}}");
    eventually(Duration::from_secs(30), || async {
        let keys = metric(env, &keys).await;
        (keys > 0.0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no estimate for {job}:\n{}", daemon.log()));
    (metric(env, &keys).await, metric(env, &bytes).await)
}

#[tokio::test]
async fn a_large_keyspace_is_estimated_from_random_keys() {
    let (env, _redis, mut daemon) = started(4000, 1000).await;
    let (products, product_bytes) = estimates(&env, &daemon, "products").await;
    let (users, _) = estimates(&env, &daemon, "users").await;
    // 1,000 keys drawn of 5,001: the shares' standard deviations are about 63 keys, so these bounds are 6 and 4.7 of
    // them wide.
    assert!((3600.0..=4400.0).contains(&products), "products ~{products}");
    assert!((700.0..=1300.0).contains(&users), "users ~{users}");
    // Each key holds a 50-byte body in its JSON, plus Redis's own overhead.
    let per_key = product_bytes / products;
    assert!((60.0..=400.0).contains(&per_key), "{per_key} bytes a key");
    assert_eq!(metric(&env, "cachewarden_keyspace_sample_keys").await, 1000.0);
    // The one fixed key is measured, not drawn.
    let (summary, summary_bytes) = estimates(&env, &daemon, "summary").await;
    assert_eq!(summary, 1.0);
    assert!(summary_bytes > 0.0);
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_small_keyspace_is_counted_exactly_and_shown_on_the_status_page() {
    let (env, redis, mut daemon) = started(20, 5).await;
    assert_eq!(estimates(&env, &daemon, "products").await.0, 20.0);
    assert_eq!(estimates(&env, &daemon, "users").await.0, 5.0);
    // Every key of the node was read: the jobs' 26 and the daemon's own.
    let mut conn = redis.conn.clone();
    let size: f64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(metric(&env, "cachewarden_keyspace_sample_keys").await, size);
    assert!(size >= 26.0);
    let page = get(&env, "/").await.expect("the status page").body;
    assert!(
        page.contains("in Redis (sampled)") && page.contains("~20 keys, "),
        "{page}"
    );
    assert!(page.contains("~5 keys, ") && page.contains("~1 key, "), "{page}");
    assert_eq!(daemon.stop().await, Some(0));
}
