//! A Redis Cluster (3 masters, 3 replicas on loopback, from scripts/services; ElastiCache with cluster mode enabled):
//! warm runs, pattern deletes, binlog rules (refresh, delete, projection), the channel (pub/sub, stream), the audit,
//! a failover and a resharding, with keys on the masters that own their slots.

mod common;

use std::time::Duration;

use cachewarden::cli::commands;
use cachewarden::exec::warm::Mode;
use sqlx::Connection as _;

use common::{Daemon, TestEnv, cli_output, eventually, metric, wait_for_admin};

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
    // One master's MONITOR counts the guarded write scripts that carry this test's keys.
    let first_master = env.masters().await.remove(0);
    let client = redis::Client::open(first_master.as_str()).unwrap();
    let mut monitor = client.get_async_monitor().await.unwrap().into_on_message::<String>();
    let outcomes = commands::run_once(&config, &[], Mode::Write)
        .await
        .expect("the cluster is reachable");
    let summary = outcomes[0].result.as_ref().expect("the warm run succeeds");
    assert_eq!(
        (summary.rows, summary.keys_written),
        (u64::from(ITEMS), u64::from(ITEMS))
    );
    let mut scripts = 0;
    {
        use futures_util::StreamExt as _;
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), monitor.next()).await {
            if line.contains("\"EVALSHA\"") && line.contains(&format!("\"{p}item:")) {
                scripts += 1;
            }
        }
    }
    // On Redis 7 the per-slot scripts of a batch go to each master as one call: a few per batch of hundreds of keys,
    // not one per key's slot (about 3,300 here).
    assert!(
        (1..100).contains(&scripts),
        "{scripts} guarded write scripts reached {first_master}"
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
    let cache = cachewarden::exec::cache::Cache::connect(&config.redis).await.unwrap();
    let (deleted, cut_short) = cache.delete_matching(&format!("{p}item:*"), u64::MAX).await.unwrap();
    assert_eq!((deleted, cut_short), (u64::from(ITEMS), false));
    assert!(env.keys().await.is_empty());
}

/// Waits until every `(key, value)` holds (`None`: the key is gone), or says which does not.
async fn all_become(env: &TestEnv, expected: &[(String, Option<String>)]) -> Result<(), String> {
    let last = std::sync::Mutex::new(String::new());
    let done = eventually(Duration::from_secs(20), || async {
        for (key, value) in expected {
            let now = env.get(key).await;
            if now != *value {
                *last.lock().unwrap() = format!("{key} holds {now:?}, expected {value:?}");
                return None;
            }
        }
        Some(())
    })
    .await;
    done.ok_or_else(|| last.into_inner().unwrap())
}

/// 300 items, and a daemon that warms them, follows the binlog (a refresh rule for items, a delete rule and a
/// projection for notes) and reads invalidation messages from `channel` (the `[channel]` body), all on the cluster.
async fn daemon_on_the_cluster(env: &TestEnv, channel: &str) -> Daemon {
    let p = &env.prefix;
    env.sql("CREATE TABLE notes (id INT PRIMARY KEY)").await;
    let extra = format!(
        r#"[[on_change]]
table = "{db}.notes"
delete = ["{p}note:{{id}}"]
project = {{ key = "{p}proj:{{id}}", columns = ["id"], ttl = "1h" }}

[channel]
{channel}
"#,
        db = env.database,
    );
    following_daemon(env, 300, "refresh", &extra).await
}

fn item(env: &TestEnv, id: u32, v: u32) -> (String, Option<String>) {
    (
        format!("{}item:{id}", env.prefix),
        Some(format!(r#"{{"id":{id},"v":{v}}}"#)),
    )
}

fn gone(env: &TestEnv, key: String) -> (String, Option<String>) {
    (format!("{}{key}", env.prefix), None)
}

#[tokio::test]
async fn binlog_rules_pub_sub_messages_and_the_audit_work_on_the_cluster() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await.on_cluster();
    let p = env.prefix.clone();
    let mut daemon = daemon_on_the_cluster(&env, &format!("name = \"{p}inv\"")).await;
    let mut conn = env.any_redis().await;
    for id in 1..=100 {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}note:{id}"))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // Binlog: refreshed rows on every shard, deleted rows' keys gone, a delete rule's keys gone, projections written
    // from the row images and deleted with their rows.
    env.sql(
        "UPDATE items SET v = v + 1000 WHERE id <= 200;
        DELETE FROM items WHERE id > 290;
        INSERT INTO notes SELECT seq FROM seq_1_to_100",
    )
    .await;
    let mut expected: Vec<_> = (1..=200).map(|id| item(&env, id, id + 1000)).collect();
    expected.extend((291..=300).map(|id| gone(&env, format!("item:{id}"))));
    expected.extend((1..=100).map(|id| gone(&env, format!("note:{id}"))));
    expected.extend((1..=100).map(|id| (format!("{p}proj:{id}"), Some(format!(r#"{{"id":{id}}}"#)))));
    all_become(&env, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    env.sql("DELETE FROM notes").await;
    let expected: Vec<_> = (1..=100).map(|id| gone(&env, format!("proj:{id}"))).collect();
    all_become(&env, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert!(
        env.get(&format!("{p}checkpoint")).await.is_some(),
        "no checkpoint on the cluster"
    );

    // Pub/sub (published on a node of the cluster: cluster-wide) and `cachewarden invalidate`.
    let _: u64 = redis::cmd("PUBLISH")
        .arg(format!("{p}inv"))
        .arg(format!(
            r#"{{"delete": ["{p}item:201", "{p}item:202"], "patterns": ["{p}item:21*"]}}"#
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut expected = vec![gone(&env, "item:201".into()), gone(&env, "item:202".into())];
    expected.extend((210..=219).chain([21]).map(|id| gone(&env, format!("item:{id}"))));
    expected.push(item(&env, 220, 220));
    all_become(&env, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));

    // The audit samples every shard: consistent, then one key made stale behind the daemon's back.
    let config = env.dir.path().join("jobs.toml");
    let (code, stdout, stderr) = cli_output(&["audit"], &config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("items: 277 keys checked, 0 stale, 1.0000 consistent"),
        "{stdout}"
    );
    let _: () = redis::cmd("SET")
        .arg(format!("{p}item:250"))
        .arg(r#"{"id":250,"v":0}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, stdout, stderr) = cli_output(&["audit"], &config);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("items: 277 keys checked, 1 stale"), "{stdout}");
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_stream_channel_and_the_invalidate_command_work_on_the_cluster() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await.on_cluster();
    let p = env.prefix.clone();
    let channel = format!("stream = \"{p}stream\"\ngroup = \"cw\"\nconsumer = \"me\"");
    let mut daemon = daemon_on_the_cluster(&env, &channel).await;
    let config = env.dir.path().join("jobs.toml");
    let (one, two, three) = (format!("{p}item:1"), format!("{p}item:2"), format!("{p}item:3*"));
    let (code, stdout, stderr) = cli_output(&["invalidate", &one, &two, "--pattern", &three], &config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mut expected = vec![gone(&env, "item:1".into()), gone(&env, "item:2".into())];
    expected.extend((30..=39).chain([3]).map(|id| gone(&env, format!("item:{id}"))));
    expected.push(item(&env, 40, 40));
    all_become(&env, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    // And the binlog keeps refreshing alongside.
    env.sql("UPDATE items SET v = 7 WHERE id = 41").await;
    all_become(&env, &[item(&env, 41, 7)])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert_eq!(daemon.stop().await, Some(0));
}

/// Rows of the items table in the tests with a cluster of their own.
const ROWS: u32 = 3000;

/// `rows` items, and a daemon that warms them (run on start) and follows the binlog with an `action` rule
/// (`"delete"` or `"refresh"`) for their keys, its configuration ending with `extra`; returned once it has warmed
/// them all and follows the binlog.
async fn following_daemon(env: &TestEnv, rows: u32, action: &str, extra: &str) -> Daemon {
    let p = &env.prefix;
    env.sql(&format!(
        "CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO items SELECT seq, seq FROM seq_1_to_{rows}"
    ))
    .await;
    let path = env.config_file(&format!(
        r#"[binlog]
server_id = {server_id}
checkpoint_key = "{p}checkpoint"
heartbeat = "1s"
on_gap = "none"

[[warm]]
name = "items"
schedule = "every 1h"
run_on_start = true
query = "SELECT id, v FROM items"
refresh_query = "SELECT id, v FROM items WHERE id = :id"
key = "{p}item:{{id}}"
ttl = "1h"

[[on_change]]
table = "{db}.items"
{action} = ["{p}item:{{id}}"]

{extra}"#,
        server_id = 30_000 + fastrand::u32(..1_000_000),
        db = env.database,
    ));
    let daemon = Daemon::start(env, &path, &[], &[]);
    wait_for_admin(env).await;
    let ready = eventually(Duration::from_secs(30), || async {
        let following = metric(env, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0;
        let warmed = metric(env, r#"cachewarden_warm_keys_written_total{warm_job="items"}"#).await == f64::from(rows);
        (following && warmed).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "not warmed and following the binlog:\n{}",
        daemon.log()
    );
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_during_a_binlog_burst_loses_no_invalidation() {
    let _binlog = common::binlog_shared();
    let cluster = common::OwnCluster::start(3, 1);
    let mut env = TestEnv::new().await.on_cluster();
    env.redis_url = cluster.url();
    let mut daemon = following_daemon(&env, ROWS, "delete", "").await;

    // A replica to promote: one of the second master's.
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    let second_master = nodes
        .lines()
        .find(|line| line.contains(&format!(":{}@", cluster.base + 1)))
        .and_then(|line| line.split(' ').next())
        .unwrap()
        .to_string();
    let replica_port: u16 = nodes
        .lines()
        .find(|line| line.contains(" slave ") && line.contains(&second_master))
        .and_then(|line| line.split(' ').nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no replica of {second_master}:\n{nodes}"));
    let mut replica = redis::Client::open(format!("redis://127.0.0.1:{replica_port}").as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // The burst: every row changes once, in single-row transactions; the failover a third of the way through.
    let mut db = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    for id in 1..=ROWS {
        sqlx::query("UPDATE items SET v = v + 1 WHERE id = ?")
            .bind(id)
            .execute(&mut db)
            .await
            .unwrap();
        if id == ROWS / 3 {
            let _: () = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query_async(&mut replica)
                .await
                .unwrap();
        }
    }
    let promoted = eventually(Duration::from_secs(20), || async {
        let mut replica = replica.clone();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut replica)
            .await
            .ok()?;
        info.contains("role:master").then_some(())
    })
    .await;
    assert!(promoted.is_some(), "the replica on {replica_port} was not promoted");

    // Every changed row's key ends deleted: nothing was lost while the shard changed hands.
    let settled = eventually(Duration::from_secs(30), || async {
        env.keys().await.iter().all(|key| !key.contains(":item:")).then_some(())
    })
    .await;
    let left: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|key| key.contains(":item:"))
        .collect();
    assert!(
        settled.is_some(),
        "{} keys survived their rows' changes, e.g. {:?}\n{}",
        left.len(),
        &left[..left.len().min(5)],
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_during_a_binlog_burst_and_warm_runs_leaves_every_key_equal_to_its_row() {
    let _binlog = common::binlog_shared();
    let cluster = common::OwnCluster::start(3, 0);
    let mut env = TestEnv::new().await.on_cluster();
    env.redis_url = cluster.url();
    let mut daemon = following_daemon(&env, ROWS, "refresh", "").await;
    let slots_before = env.masters().await;

    // Move 4,000 slots (and their keys, by MIGRATE: ASK redirects meanwhile) from the first master to the second,
    // while every row changes twice and warm runs are triggered.
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    let id_of = |port: u16| {
        nodes
            .lines()
            .find(|line| line.contains(&format!(":{port}@")))
            .and_then(|line| line.split(' ').next())
            .unwrap()
            .to_string()
    };
    let (from, to) = (id_of(cluster.base), id_of(cluster.base + 1));
    let seed = format!("127.0.0.1:{}", cluster.base);
    let reshard = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &seed,
                "--cluster-from",
                &from,
                "--cluster-to",
                &to,
            ])
            .args(["--cluster-slots", "4000", "--cluster-yes", "--cluster-pipeline", "10"])
            .output()
            .expect("redis-cli runs")
    });
    let mut db = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    for _ in 0..2 {
        for id in 1..=ROWS {
            sqlx::query("UPDATE items SET v = v + 1 WHERE id = ?")
                .bind(id)
                .execute(&mut db)
                .await
                .unwrap();
            if id % 1000 == 0 {
                let _ =
                    cachewarden::ops::admin::request(env.admin_addr(), hyper::Method::POST, "/jobs/items/run").await;
            }
        }
    }
    let output = reshard.await.unwrap();
    assert!(
        output.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut owned: Vec<(i64, i64)> = Vec::new();
    let mut conn = env.redis().await;
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
    for range in slots {
        owned.push((
            redis::from_redis_value(range[0].clone()).unwrap(),
            redis::from_redis_value(range[1].clone()).unwrap(),
        ));
    }
    assert!(
        owned.len() > 3,
        "no slot moved: {owned:?} (masters before: {slots_before:?})"
    );

    // Every key equals its row (each row changed twice: v + 2), on whichever master now owns its slot.
    let expected: Vec<_> = (1..=ROWS).map(|id| item(&env, id, id + 2)).collect();
    all_become(&env, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert_eq!(
        env.keys().await.iter().filter(|key| key.contains(":item:")).count(),
        ROWS as usize
    );
    // The burst did meet the resharding: batches were answered MOVED/ASK and sent again.
    let redirected = daemon
        .log()
        .matches("The cluster moved slots or lost a node under a batch")
        .count();
    assert!(
        redirected > 0,
        "no batch met a moved slot; the test did not exercise the resharding"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

/// A slot being migrated (`CLUSTER SETSLOT … MIGRATING/IMPORTING`, its key moved by `MIGRATE`): the owner answers ASK
/// for the key, and a warm run asks the node the ASK names at once (after `ASKING`), instead of reading the slot map
/// again and again (which still names the owner until the migration ends) until it gives up.
#[tokio::test]
async fn a_warm_run_follows_ask_redirects_into_a_slot_being_migrated() {
    let cluster = common::OwnCluster::start(3, 0);
    let mut env = TestEnv::new().await.on_cluster();
    env.redis_url = cluster.url();
    env.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO items SELECT seq, seq * 7 FROM seq_1_to_300")
        .await;
    let p = &env.prefix;
    let key = format!("{p}item:1");
    let mut seed = env.redis().await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&key)
        .query_async(&mut seed)
        .await
        .unwrap();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut seed).await.unwrap();
    // Each master: (id, port, whether it owns the slot).
    let masters: Vec<(String, u16, bool)> = nodes
        .lines()
        .filter(|line| line.contains("master"))
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let port = words[1].split([':', '@']).nth(1).unwrap().parse().unwrap();
            let owns = words[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                (low.parse::<u16>().unwrap()..=high.parse::<u16>().unwrap()).contains(&slot)
            });
            (words[0].to_string(), port, owns)
        })
        .collect();
    let source = masters.iter().find(|m| m.2).unwrap().clone();
    let target = masters.iter().find(|m| !m.2).unwrap().clone();
    let node = |port: u16| async move {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    };
    let (mut from, mut to) = (node(source.1).await, node(target.1).await);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("old")
        .query_async(&mut from)
        .await
        .unwrap();
    let setslot = |slot: u16, state: &str, node: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(node)
            .clone()
    };
    let _: () = setslot(slot, "IMPORTING", &source.0)
        .query_async(&mut to)
        .await
        .unwrap();
    let _: () = setslot(slot, "MIGRATING", &target.0)
        .query_async(&mut from)
        .await
        .unwrap();
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(target.1)
        .arg(&key)
        .arg(0)
        .arg(5000)
        .query_async(&mut from)
        .await
        .unwrap();

    let body = format!(
        "[[warm]]\nname = \"items\"\nschedule = \"every 1h\"\nquery = \"SELECT id, v FROM items\"\nkey = \"{p}item:{{id}}\"\n\
         ttl = \"1h\"\n"
    );
    let text = env
        .connection_toml()
        .replace("cluster = true\n", "cluster = true\nstale_set_protection = false\n");
    let path = env.write_file("jobs.toml", &format!("{text}{body}"));
    let (code, out) = env.run_cli(&["run", "--once"], &path);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("moved slots"), "{out}");
    // The key was written where it now lives: on the node importing the slot.
    let _: () = redis::cmd("ASKING").query_async(&mut to).await.unwrap();
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut to).await.unwrap();
    assert_eq!(value.as_deref(), Some(r#"{"id":1,"v":7}"#));
}
