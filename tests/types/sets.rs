//! Sets and sorted sets: warmed in one step for readers, members following the binlog (moves, filters, an exact top
//! N under random changes), keys of another type and missing keys, the audit, a score column of no numeric type;
//! on one Redis and on the test cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::common::{self, TestEnv, eventually};

use super::hashes::{fields, hash};

/// What the database says each set and the tops should be: each category's active product ids, and the top 5 (and 1)
/// active products by views (ties by the id's text, highest first, as Redis orders equal scores read in reverse).
async fn database_sets(env: &TestEnv) -> Sets {
    use sqlx::Connection as _;
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let rows: Vec<(i32, i32)> = sqlx::query_as("SELECT id, category_id FROM products WHERE active = 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut sets: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for (id, category) in rows {
        sets.entry(category).or_default().insert(id.to_string());
    }
    let mut tops = Vec::new();
    for query in [TOP_QUERY, &TOP_QUERY.replace("LIMIT 5", "LIMIT 1")] {
        let top: Vec<(i32, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(query.to_string()))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        tops.push(
            top.into_iter()
                .map(|(id, views)| (id.to_string(), views as f64))
                .collect(),
        );
    }
    let best = tops.pop().unwrap();
    (sets, tops.pop().unwrap(), best)
}

/// Each category's set, the top 5 with scores, and the top 1 (a top N without a buffer, whose one member falls).
type Sets = (BTreeMap<i32, BTreeSet<String>>, Vec<(String, f64)>, Vec<(String, f64)>);

const TOP_QUERY: &str =
    "SELECT id, views FROM products WHERE active = 1 ORDER BY views DESC, CAST(id AS CHAR) DESC LIMIT 5";

/// The best active row drops to a low score.
const TOP_FALLS: &str = "UPDATE products SET views = FLOOR(RAND() * 10) WHERE active = 1 ORDER BY views DESC, CAST(id AS CHAR) DESC LIMIT 1";

/// What Redis holds: the categories' sets, and the sorted set's top 5 with scores.
async fn cached_sets(env: &TestEnv, categories: &[i32]) -> Sets {
    let p = &env.prefix;
    let mut conn = env.any_redis().await;
    let mut sets = BTreeMap::new();
    for category in categories {
        // A key of another type (WRONGTYPE, before a run writes it over) holds no set.
        let members: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(format!("{p}category:{category}:products"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !members.is_empty() {
            sets.insert(*category, members);
        }
    }
    let mut tops = Vec::new();
    for (key, n) in [("top", 4), ("best", 0)] {
        let top: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
            .arg(format!("{p}{key}:products"))
            .arg(0)
            .arg(n)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        tops.push(top);
    }
    let best = tops.pop().unwrap();
    (sets, tops.pop().unwrap(), best)
}

async fn sets_follow_the_binlog(env: TestEnv) {
    let _binlog = common::binlog_shared();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    // 80 rows: more than a guarded batch's optimistic path starts at (64), which the hash job below takes.
    // Distinct scores at first, so the first warm run keeps all of the top's 5 + 3 (a cut between equal scores drops
    // that score: see the rename); the changes make ties later.
    let mut views: Vec<u32> = (0..80).map(|i| i * 3 + 60).collect();
    rng.shuffle(&mut views);
    let mut rows = Vec::new();
    for (id, views) in (1..=80).zip(views) {
        let active = id <= 3 || rng.u8(..4) > 0;
        rows.push(format!("({id}, {}, {}, {views}, 'p{id}')", id % 3 + 1, active as u8));
    }
    env.sql(&format!(
        "CREATE TABLE products (id INT PRIMARY KEY, category_id INT NOT NULL, active TINYINT NOT NULL, views INT NOT \
         NULL, name VARCHAR(20));
         INSERT INTO products VALUES {}",
        rows.join(", ")
    ))
    .await;
    let p = &env.prefix;
    // A key of another type where a set goes: the run's rename writes the set over it (counted).
    let mut conn = env.any_redis().await;
    super::plant_string(&env, &format!("{p}category:2:products")).await;
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    let body = format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\nderive_rules = true\n\n\
         [[warm]]\nname = \"categories\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
         query = \"SELECT id, category_id FROM products WHERE active = 1\"\nkey = \"{p}category:{{category_id}}:products\"\n\
         type = \"set\"\nmember = \"{{id}}\"\nttl = \"1h\"\n\n\
         [[warm]]\nname = \"top\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"{TOP_QUERY}\"\n\
         key = \"{p}top:products\"\ntype = \"zset\"\nmember = \"{{id}}\"\nscore = \"views\"\nbuffer = 3\nttl = \"1h\"\n\n\
         [[warm]]\nname = \"best\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"{}\"\n\
         key = \"{p}best:products\"\ntype = \"zset\"\nmember = \"{{id}}\"\nscore = \"views\"\nbuffer = 0\nttl = \"1h\"\n\n\
         [[warm]]\nname = \"rows\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
         query = \"SELECT id, name FROM products\"\nkey = \"{p}product:{{id}}\"\ntype = \"hash\"\nttl = \"1h\"\n",
        TOP_QUERY.replace("LIMIT 5", "LIMIT 1")
    );
    let path = env.config_file(&body);
    let daemon = common::following_path(&env, &path).await;
    let categories = [1, 2, 3, 4];
    let settled = || async {
        eventually(Duration::from_secs(30), || async {
            let want = database_sets(&env).await;
            (cached_sets(&env, &categories).await == want).then_some(())
        })
        .await
    };
    assert!(
        settled().await.is_some(),
        "seed {seed}: {:?}\n!= {:?}\n{}",
        cached_sets(&env, &categories).await,
        database_sets(&env).await,
        daemon.log()
    );
    // `jobs` and /jobs say what each job writes.
    let (code, out) = env.run_cli(&["jobs", "-o", "json"], &path);
    assert_eq!(code, Some(0), "{out}");
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "top")
        .unwrap();
    assert_eq!(top["type"], "zset", "{out}");
    assert_eq!(
        top["members"],
        serde_json::json!({"member": "{id}", "score": "views", "top": 5, "buffer": 3})
    );
    let listed = common::get(&env, "/jobs").await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    let set_job = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "categories")
        .unwrap();
    assert_eq!(set_job["type"], "set", "{listed}");
    assert_eq!(common::metric(&env, "cachewarden_other_type_keys_total").await, 1.0);
    // The sorted set holds the top 5 and its buffer of 3; the keys carry the job's TTL; a hash of the 80 is a hash.
    let held: u64 = redis::cmd("ZCARD")
        .arg(format!("{p}top:products"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 8, "seed {seed}");
    for key in [format!("{p}top:products"), format!("{p}category:1:products")] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{key}: {ttl}");
    }
    assert_eq!(
        hash(&env, &format!("{p}product:80")).await,
        fields(&[("id", "80"), ("name", "p80")])
    );

    // Random changes: scores, rows moving between sets and in and out of the filter, deletes, inserts. The first three
    // rows stay, so that no category empties (an emptied set has no key, and a set with no key is not started from
    // one member).
    let mut statements = Vec::new();
    let mut next_id = 81;
    for _ in 0..300 {
        let id = rng.u32(4..next_id);
        statements.push(match rng.u8(..10) {
            0..=3 => format!("UPDATE products SET views = {} WHERE id = {id}", rng.u32(..300)),
            // The top row falls: it leaves the sorted set (rows outside may rank between), which drains it.
            4 => TOP_FALLS.to_string(),
            5 => format!("UPDATE products SET category_id = {} WHERE id = {id}", rng.u32(1..=3)),
            6 => format!("UPDATE products SET active = 1 - active WHERE id = {id}"),
            7 => format!("DELETE FROM products WHERE id = {id}"),
            _ => {
                next_id += 1;
                format!(
                    "INSERT INTO products VALUES ({}, {}, 1, {}, 'new')",
                    next_id - 1,
                    rng.u32(1..=3),
                    rng.u32(..300)
                )
            }
        });
    }
    // At the end, the top 6 fall one after another: the set (5 + 3) drains below 5 and is warmed again.
    statements.extend(std::iter::repeat_n(TOP_FALLS.to_string(), 6));
    env.sql(&statements.join(";\n")).await;
    assert!(
        settled().await.is_some(),
        "seed {seed}: {:?}\n!= {:?}\n{}",
        cached_sets(&env, &categories).await,
        database_sets(&env).await,
        daemon.log()
    );
    for key in [format!("{p}top:products"), format!("{p}category:2:products")] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: {ttl}");
    }
    // No key a run built a set under is left behind.
    let builds: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|key| key.contains("cachewarden-build"))
        .collect();
    assert!(builds.is_empty(), "{builds:?}");

    // The audit compares members (and a top N's best N with their scores): clean, then a member removed and a score
    // changed behind the daemon's back are found, with what each key holds and should.
    let audit = || env.run_cli(&["audit", "--all", "--job", "categories", "--job", "top"], &path);
    let (code, out) = audit();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("categories: 3 checked, 0 wrong, 0 missing, 0 orphaned"),
        "{out}"
    );
    assert!(out.contains("top: 1 checked, 0 wrong, 0 missing, 0 orphaned"), "{out}");
    let (_, top, _) = database_sets(&env).await;
    let _: () = redis::cmd("SREM")
        .arg(format!("{p}category:1:products"))
        .arg("3")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(format!("{p}top:products"))
        .arg(1000)
        .arg(&top[4].0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = audit();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("categories: 3 checked, 1 wrong, 0 missing, 0 orphaned"),
        "{out}"
    );
    assert!(out.contains("top: 1 checked, 1 wrong, 0 missing, 0 orphaned"), "{out}");
    assert!(out.contains(&format!("[\"{}\",1000.0]", top[4].0)), "{out}");

    // Members added to a key of another type (deleted, counted) and to a missing key (not started from one member):
    // the job runs again and writes both whole.
    let stray = format!("{p}category:1:products");
    super::plant_string(&env, &stray).await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}category:3:products"))
        .query_async(&mut conn)
        .await
        .unwrap();
    env.sql("INSERT INTO products VALUES (1001, 1, 1, 1, 'one'), (1002, 3, 1, 1, 'three')")
        .await;
    let retyped = eventually(Duration::from_secs(20), || async {
        let mut conn = env.any_redis().await;
        let kind: String = redis::cmd("TYPE").arg(&stray).query_async(&mut conn).await.unwrap();
        (kind == "set").then_some(())
    })
    .await;
    assert!(retyped.is_some(), "{}", daemon.log());
    // The categories' sets (the top was changed behind the daemon's back above).
    let rewarmed = eventually(Duration::from_secs(30), || async {
        (cached_sets(&env, &categories).await.0 == database_sets(&env).await.0).then_some(())
    })
    .await;
    assert!(
        rewarmed.is_some(),
        "seed {seed}: {:?}\n!= {:?}\n{}",
        cached_sets(&env, &categories).await.0,
        database_sets(&env).await.0,
        daemon.log()
    );
    assert_eq!(common::metric(&env, "cachewarden_other_type_keys_total").await, 2.0);
}

#[tokio::test]
async fn sets_and_an_exact_top_n_sorted_set_are_warmed_and_follow_the_binlog() {
    sets_follow_the_binlog(TestEnv::new().await).await;
}

#[tokio::test]
async fn on_a_redis_cluster_sets_and_a_top_n_sorted_set_follow_the_binlog() {
    sets_follow_the_binlog(TestEnv::new().await.on_cluster()).await;
}

/// A set of 12,000 members replaces one of 2 while a reader counts its members all along: the reader sees 2 or 12,000,
/// never a set half built (it is built in chunks beside the key and renamed over it). `max_value_bytes` bounds each
/// member, not the set (its chunks are far over 4 KiB). A dry run lists the key.
async fn a_large_set_replaces_the_old_one_in_one_step(env: TestEnv) {
    let values: Vec<String> = (1..=12_000).map(|id| format!("({id})")).collect();
    env.sql(&format!(
        "CREATE TABLE members (id INT PRIMARY KEY);\nINSERT INTO members VALUES {}",
        values.join(", ")
    ))
    .await;
    let p = &env.prefix;
    let key = format!("{p}big");
    let path = env.config_file(&format!(
        "[[warm]]\nname = \"big\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM members\"\nkey = \"{key}\"\n\
         type = \"set\"\nmember = \"{{id}}\"\nttl = \"1h\"\nmax_value_bytes = 4096\n"
    ));
    let mut conn = env.any_redis().await;
    let _: () = redis::cmd("SADD")
        .arg(&key)
        .arg("old1")
        .arg("old2")
        .query_async(&mut conn)
        .await
        .unwrap();

    let (code, out) = env.run_cli(&["run", "--once", "--dry-run"], &path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|line| line.starts_with(&format!("big\t{key}\t")) && line.ends_with("\t12000 members")),
        "{out}"
    );
    let held: u64 = redis::cmd("SCARD").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(held, 2, "a dry run writes nothing");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let mut conn = env.any_redis().await;
        let key = key.clone();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let held: u64 = redis::cmd("SCARD").arg(&key).query_async(&mut conn).await.unwrap();
                seen.insert(held);
            }
            seen
        })
    };
    let cli = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || common::cli_output(&["run", "--once"], &path))
    };
    let (code, stdout, stderr) = cli.await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        seen.into_iter().filter(|n| *n != 2 && *n != 12_000).collect::<Vec<_>>(),
        Vec::<u64>::new()
    );
    let held: u64 = redis::cmd("SCARD").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(held, 12_000);
    let keys = env.keys().await;
    assert_eq!(keys, vec![key], "the key it was built under is gone");
}

#[tokio::test]
async fn a_large_set_replaces_the_old_one_in_one_step_for_readers() {
    a_large_set_replaces_the_old_one_in_one_step(TestEnv::new().await).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_large_set_replaces_the_old_one_in_one_step() {
    a_large_set_replaces_the_old_one_in_one_step(TestEnv::new().await.on_cluster()).await;
}

/// A sorted set's score column must hold numbers: `check --connect` and a run name the job and the column's type.
#[tokio::test]
async fn a_score_column_that_holds_no_numbers_is_refused_naming_the_job() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20), added DATETIME, views INT);
         INSERT INTO products VALUES (1, 'a', '2026-12-01 10:00:00', 3)",
    )
    .await;
    let job = |name: &str, score: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT id, name, added, views FROM \
             products\"\nkey = \"{}{name}\"\ntype = \"zset\"\nmember = \"{{id}}\"\nscore = \"{score}\"\nttl = \"1h\"\n\n",
            env.prefix
        )
    };
    let path = env.config_file(&[job("by_name", "name"), job("recent", "added"), job("popular", "views")].concat());
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{out}");
    for (job, type_name) in [("by_name", "VARCHAR"), ("recent", "DATETIME")] {
        let says = format!(
            "score = \"{}\" is a {type_name} column, not a number",
            if job == "recent" { "added" } else { "name" }
        );
        assert!(
            out.lines()
                .any(|line| line.contains(&format!("\"{job}\"")) && line.contains(&says)),
            "{job}: {out}"
        );
    }
    assert!(!out.contains("\"popular\""), "{out}");
    // A run fails those jobs before writing anything, and writes the other.
    let (code, out) = env.run_cli(&["run", "--once"], &path);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("UNIX_TIMESTAMP(added) AS added"), "{out}");
    assert_eq!(env.keys().await, vec![format!("{}popular", env.prefix)]);
}
