//! A Redis Cluster (3 masters, 3 replicas on loopback, from scripts/services; ElastiCache with cluster mode enabled):
//! warm runs, pattern deletes, binlog rules, the channel and the audit reach every shard, with keys on the masters
//! that own their slots.

mod common;

use cachewarden::commands;
use cachewarden::warm::Mode;
use common::TestEnv;

const ITEMS: u32 = 10_000;

#[tokio::test]
async fn a_warm_run_writes_every_key_to_its_shard_with_its_ttl_and_a_pattern_delete_reaches_every_shard() {
    let env = TestEnv::new().await.on_cluster();
    env.sql(&format!(
        "CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO items SELECT seq, seq * 7 FROM seq_1_to_{ITEMS}"
    ))
    .await;
    let p = &env.prefix;
    let config = env.config(&format!(
        r#"
[[warm]]
name = "items"
schedule = "every 1h"
query = "SELECT id, v FROM items"
key = "{p}item:{{id}}"
ttl = "1h"
"#
    ));
    assert!(config.redis.cluster);
    let outcomes = commands::run_once(&config, &[], Mode::Write)
        .await
        .expect("the cluster is reachable");
    let summary = outcomes[0].result.as_ref().expect("the warm run succeeds");
    assert_eq!(
        (summary.rows, summary.keys_written),
        (u64::from(ITEMS), u64::from(ITEMS))
    );

    // Every key is on a master (Redis keeps a key only on the node that owns its slot), and on every master.
    let masters = env.masters().await;
    assert_eq!(masters.len(), 3, "{masters:?}");
    let mut total = 0;
    for master in &masters {
        let mut conn = redis::Client::open(master.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys = env.keys_on(&mut conn).await;
        assert!(keys.len() > 2_000, "{master} holds {} of the keys", keys.len());
        total += keys.len();
    }
    assert_eq!(total, ITEMS as usize);
    for id in [1, 777, ITEMS] {
        let key = format!("{p}item:{id}");
        assert_eq!(env.get(&key).await.unwrap(), format!(r#"{{"id":{id},"v":{}}}"#, id * 7));
        let ttl = env.pttl(&key).await;
        assert!((3_500_000..=3_600_000).contains(&ttl), "{key} has PTTL {ttl}");
    }

    // A pattern delete through the invalidation path visits every master.
    let cache = cachewarden::cache::Cache::connect(&config.redis).await.unwrap();
    let (deleted, cut_short) = cache.delete_matching(&format!("{p}item:*"), u64::MAX).await.unwrap();
    assert_eq!((deleted, cut_short), (u64::from(ITEMS), false));
    assert!(env.keys().await.is_empty());
}
