//! Redis data shapes (`type` per warm job): a hash per row, warmed, kept by the binlog, audited, on one Redis and on
//! the test cluster; and the types and combinations that are refused, with the job and field named.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TestEnv, eventually};

/// A hash's fields, or none when the key does not exist.
async fn hash(env: &TestEnv, key: &str) -> BTreeMap<String, String> {
    let mut conn = env.any_redis().await;
    redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap()
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn hashes_follow_the_binlog(env: TestEnv) {
    let _binlog = common::binlog_shared();
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, price DECIMAL(8,2), note VARCHAR(20),
           added DATE);
         INSERT INTO products VALUES (1, 'Kettle \"XL\"', 19.90, NULL, '2026-12-01'), (2, 'Lamp', 5.00, 'old', NULL),
           (3, 'Chair', NULL, NULL, NULL)",
    )
    .await;
    let p = &env.prefix;
    let mut conn = env.any_redis().await;
    // A key of another type already there: the warm run replaces it.
    let _: () = redis::cmd("SET")
        .arg(format!("{p}product:3"))
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
    let query = "SELECT id, name, price, note, added FROM products";
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    let body = format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\nderive_rules = true\n\n[[warm]]\nname = \"products\"\n\
         schedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"{query}\"\n\
         refresh_query = \"{query} WHERE id = :id\"\nkey = \"{p}product:{{id}}\"\nttl = \"1h\"\ntype = \"hash\"\n"
    );
    let path = env.config_file(&body);
    let daemon = common::following_path(&env, &path).await;
    let kettle = fields(&[
        ("id", "1"),
        ("name", "Kettle \"XL\""),
        ("price", "19.90"),
        ("added", "2026-12-01"),
    ]);
    let warmed = eventually(Duration::from_secs(20), || async {
        (hash(&env, &format!("{p}product:1")).await == kettle).then_some(())
    })
    .await;
    assert!(
        warmed.is_some(),
        "{:?}\n{}",
        hash(&env, &format!("{p}product:1")).await,
        daemon.log()
    );
    // NULL columns have no field; the string that was there is a hash now; the TTL is on the key.
    assert_eq!(
        hash(&env, &format!("{p}product:3")).await,
        fields(&[("id", "3"), ("name", "Chair")])
    );
    // That key is counted and named (the others were written as usual).
    assert_eq!(common::metric(&env, "cachewarden_other_type_keys_total").await, 1.0);
    assert!(
        daemon.log().contains("Keys held another Redis type") && daemon.log().contains(&format!("{p}product:3")),
        "{}",
        daemon.log()
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}product:1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{ttl}");

    // The binlog: a changed row's fields (one becoming NULL goes), a new row, a deleted one.
    env.sql(
        "UPDATE products SET price = 21.00, note = 'hot' WHERE id = 1;
         UPDATE products SET note = NULL WHERE id = 2;
         INSERT INTO products VALUES (4, 'Desk', 80.00, NULL, NULL);
         DELETE FROM products WHERE id = 3",
    )
    .await;
    let expected = [
        (
            1,
            fields(&[
                ("id", "1"),
                ("name", "Kettle \"XL\""),
                ("price", "21.00"),
                ("note", "hot"),
                ("added", "2026-12-01"),
            ]),
        ),
        (2, fields(&[("id", "2"), ("name", "Lamp"), ("price", "5.00")])),
        (3, BTreeMap::new()),
        (4, fields(&[("id", "4"), ("name", "Desk"), ("price", "80.00")])),
    ];
    let followed = eventually(Duration::from_secs(20), || async {
        for (id, want) in &expected {
            (hash(&env, &format!("{p}product:{id}")).await == *want).then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(followed.is_some(), "{}", daemon.log());

    // The audit reads the hashes back: clean, then one field changed behind the daemon's back is found.
    let (code, out) = env.run_cli(&["audit", "--all"], &path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("products: 3 checked, 0 wrong, 0 missing, 0 orphaned"),
        "{out}"
    );
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}product:2"))
        .arg("name")
        .arg("Lampe")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = env.run_cli(&["audit", "--all"], &path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("products: 3 checked, 1 wrong, 0 missing, 0 orphaned")
            && out.contains(r#"cached:   {"id":"2","name":"Lampe","price":"5.00"}"#),
        "{out}"
    );
    drop(daemon);

    // Without stale-set protection a hash is written by a script of its own, in one step all the same.
    let plain = env.write_file(
        "plain.toml",
        &format!(
            "[mysql]\nurl = \"{}\"\n\n[redis]\nurl = \"{}\"\nstale_set_protection = false\n{}\n{}",
            env.mysql_url,
            env.redis_url,
            if env.cluster { "cluster = true\n" } else { "" },
            &body[body.find("[[warm]]").unwrap()..]
        ),
    );
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}product:4"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // Over a hash already there only the fields that changed are written (seen on one node's MONITOR): Lampe's name
    // alone; the unchanged rows get nothing; the deleted key is written whole.
    let monitor = match env.cluster {
        true => None,
        false => {
            let client = redis::Client::open(env.redis_url.as_str()).unwrap();
            Some(client.get_async_monitor().await.unwrap().into_on_message::<String>())
        }
    };
    let (code, out) = env.run_cli(&["run", "--once"], &plain);
    assert_eq!(code, Some(0), "{out}");
    if let Some(mut monitor) = monitor {
        use futures_util::StreamExt as _;
        let mut writes = std::collections::BTreeSet::new();
        // The run has ended: what it sent is in the stream already; a pause with nothing more ends the reading.
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), monitor.next()).await {
            let Some((_, command)) = line.split_once("] ") else {
                continue;
            };
            let ours = command.contains(&format!("\"{p}product:"));
            let write = ["\"HSET\"", "\"HDEL\"", "\"UNLINK\"", "\"SET\""]
                .iter()
                .any(|w| command.starts_with(w));
            if ours && write {
                writes.insert(command.replace(p.as_str(), ""));
            }
        }
        let expected: std::collections::BTreeSet<String> = [
            r#""HSET" "product:2" "name" "Lamp""#,
            r#""UNLINK" "product:4""#,
            r#""HSET" "product:4" "id" "4" "name" "Desk" "price" "80.00""#,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(writes, expected);
    }
    assert_eq!(hash(&env, &format!("{p}product:4")).await, expected[3].1);
    assert_eq!(
        hash(&env, &format!("{p}product:2")).await,
        expected[1].1,
        "Lampe is right again"
    );
}

#[tokio::test]
async fn a_hash_per_row_is_warmed_and_follows_the_binlog_field_by_field() {
    hashes_follow_the_binlog(TestEnv::new().await).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_hash_per_row_is_warmed_and_follows_the_binlog() {
    hashes_follow_the_binlog(TestEnv::new().await.on_cluster()).await;
}

/// An `[[on_change]]` projection into a hash job's keys writes only the fields that changed, from the row image (seen
/// on one node's MONITOR): a changed value is HSET, a column that became NULL HDELeted, the key's TTL kept; a new row's
/// key is not started from the image (its job writes it whole), and a deleted row's key goes.
async fn a_projection_updates_a_hash_field_by_field(env: TestEnv) {
    let _binlog = common::binlog_shared();
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, price DECIMAL(8,2), note VARCHAR(20));
         INSERT INTO products VALUES (1, 'Kettle', 19.90, 'new'), (2, 'Lamp', 5.00, NULL)",
    )
    .await;
    let p = &env.prefix;
    let body = format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\n\n[[warm]]\nname = \"products\"\nschedule = \"0 0 0 1 1 *\"\n\
         run_on_start = true\nquery = \"SELECT id, name, price, note FROM products\"\nkey = \"{p}product:{{id}}\"\n\
         ttl = \"1h\"\ntype = \"hash\"\n\n[[on_change]]\ntable = \"products\"\n\
         project = {{ key = \"{p}product:{{id}}\", columns = [\"id\", \"name\", \"price\", \"note\"], ttl = \"5m\" }}\n",
        10_000 + fastrand::u32(..1_000_000)
    );
    let path = env.config_file(&body);
    let daemon = common::following_path(&env, &path).await;
    let kettle = |price: &str, note: Option<&str>| {
        let mut fields = fields(&[("id", "1"), ("name", "Kettle"), ("price", price)]);
        if let Some(note) = note {
            fields.insert("note".into(), note.into());
        }
        fields
    };
    let warmed = eventually(Duration::from_secs(20), || async {
        (hash(&env, &format!("{p}product:1")).await == kettle("19.90", Some("new"))).then_some(())
    })
    .await;
    assert!(warmed.is_some(), "{}", daemon.log());
    let monitor = match env.cluster {
        true => None,
        false => {
            let client = redis::Client::open(env.redis_url.as_str()).unwrap();
            Some(client.get_async_monitor().await.unwrap().into_on_message::<String>())
        }
    };
    env.sql(
        "UPDATE products SET price = 21.00 WHERE id = 1;
         UPDATE products SET note = NULL WHERE id = 1;
         UPDATE products SET note = 'hot' WHERE id = 2;
         INSERT INTO products VALUES (3, 'Desk', 80.00, NULL)",
    )
    .await;
    let lamp = fields(&[("id", "2"), ("name", "Lamp"), ("price", "5.00"), ("note", "hot")]);
    let followed = eventually(Duration::from_secs(20), || async {
        let right = hash(&env, &format!("{p}product:1")).await == kettle("21.00", None)
            && hash(&env, &format!("{p}product:2")).await == lamp;
        right.then_some(())
    })
    .await;
    assert!(followed.is_some(), "{}", daemon.log());
    if let Some(mut monitor) = monitor {
        use futures_util::StreamExt as _;
        let mut writes = BTreeSet::new();
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), monitor.next()).await {
            let Some((_, command)) = line.split_once("] ") else {
                continue;
            };
            let mut words = command.split(' ');
            let (verb, key) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let write = ["\"HSET\"", "\"HDEL\"", "\"UNLINK\"", "\"SET\"", "\"DEL\""].contains(&verb);
            if write && key.starts_with(&format!("\"{p}product:")) {
                writes.insert(command.replace(p.as_str(), ""));
            }
        }
        let expected: BTreeSet<String> = [
            r#""HSET" "product:1" "price" "21.00""#,
            r#""HDEL" "product:1" "note""#,
            r#""HSET" "product:2" "note" "hot""#,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(writes, expected);
    }
    // The TTL stays the job's (not the projection's 5 minutes); the new row's key waits for its job.
    let mut conn = env.any_redis().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}product:1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3_000_000, "{ttl}");
    assert!(hash(&env, &format!("{p}product:3")).await.is_empty());
    env.sql("DELETE FROM products WHERE id = 2").await;
    let gone = eventually(Duration::from_secs(20), || async {
        hash(&env, &format!("{p}product:2")).await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", daemon.log());
}

#[tokio::test]
async fn a_projection_into_a_hash_writes_only_the_changed_fields() {
    a_projection_updates_a_hash_field_by_field(TestEnv::new().await).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_projection_into_a_hash_writes_only_the_changed_fields() {
    a_projection_updates_a_hash_field_by_field(TestEnv::new().await.on_cluster()).await;
}

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
    let _: () = redis::cmd("SET")
        .arg(format!("{p}category:2:products"))
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
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
    let _: () = redis::cmd("SET")
        .arg(&stray)
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
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

/// `type = "json"` needs RedisJSON (or Valkey JSON), which no registry reachable here has: `check` accepts the job,
/// and against a Redis without the module `check --connect` and the daemon's start refuse it (exit 78), naming the job
/// and what to load.
/// Each key's JSON document (`JSON.GET`) and the string the same row renders to, parsed; `None` where a key is
/// missing.
async fn documents(env: &TestEnv, ids: &[u32]) -> Vec<(Option<serde_json::Value>, Option<serde_json::Value>)> {
    let p = &env.prefix;
    let mut conn = env.any_redis().await;
    let mut pairs = Vec::new();
    for id in ids {
        // Before the warm run a key may hold another type (WRONGTYPE): no document yet.
        let document: Option<String> = redis::cmd("JSON.GET")
            .arg(format!("{p}doc:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        let parse = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        pairs.push((document.map(parse), env.get_json(&format!("{p}text:{id}")).await));
    }
    pairs
}

/// A document per row (`type = "json"`, RedisJSON) holds what the same row's string holds: warmed over a key of
/// another type (counted), kept by the binlog, read by path, audited.
async fn documents_follow_the_binlog(env: TestEnv) {
    let _binlog = common::binlog_shared();
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, price DECIMAL(8,2), note VARCHAR(20));
         INSERT INTO products VALUES (1, 'Kettle \"XL\"', 19.90, NULL), (2, 'Lamp', 5.00, 'old'), (3, 'Chair', NULL, NULL)",
    )
    .await;
    let p = &env.prefix;
    let mut conn = env.any_redis().await;
    let _: () = redis::cmd("SADD")
        .arg(format!("{p}doc:3"))
        .arg("a set")
        .query_async(&mut conn)
        .await
        .unwrap();
    let query = "SELECT id, name, price, note FROM products";
    let job = |name: &str, key: &str, kind: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"{query}\"\n\
             refresh_query = \"{query} WHERE id = :id\"\nkey = \"{p}{key}:{{id}}\"\nttl = \"1h\"\ntype = \"{kind}\"\n\n"
        )
    };
    let body = format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\nderive_rules = true\n\n{}{}",
        10_000 + fastrand::u32(..1_000_000),
        job("docs", "doc", "json"),
        job("texts", "text", "string"),
    );
    let path = env.config_file(&body);
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{out}");
    let daemon = common::following_path(&env, &path).await;
    let same = |ids: &'static [u32]| {
        let env = &env;
        async move {
            eventually(Duration::from_secs(20), || async {
                let pairs = documents(env, ids).await;
                pairs
                    .iter()
                    .all(|(doc, text)| doc.is_some() && doc == text)
                    .then_some(())
            })
            .await
        }
    };
    assert!(
        same(&[1, 2, 3]).await.is_some(),
        "{:?}\n{}",
        documents(&env, &[1, 2, 3]).await,
        daemon.log()
    );
    let (kettle, _) = documents(&env, &[1]).await.remove(0);
    assert_eq!(kettle.unwrap()["name"], "Kettle \"XL\"");
    // An application reads one path; the TTL is on the key; the set that was at doc:3 was written over, counted.
    let price: String = redis::cmd("JSON.GET")
        .arg(format!("{p}doc:1"))
        .arg("$.price")
        .query_async(&mut conn)
        .await
        .unwrap();
    let text_price = env.get_json(&format!("{p}text:1")).await.unwrap()["price"].clone();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&price).unwrap(),
        serde_json::json!([text_price])
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}doc:1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{ttl}");
    assert_eq!(common::metric(&env, "cachewarden_other_type_keys_total").await, 1.0);

    // The binlog: a changed row, a column becoming NULL, a new row, a deleted one.
    env.sql(
        "UPDATE products SET price = 21.00, note = 'hot' WHERE id = 1;
         UPDATE products SET note = NULL WHERE id = 2;
         INSERT INTO products VALUES (4, 'Desk', 80.00, NULL);
         DELETE FROM products WHERE id = 3",
    )
    .await;
    let followed = eventually(Duration::from_secs(20), || async {
        let pairs = documents(&env, &[1, 2, 3, 4]).await;
        let right = pairs.iter().all(|(doc, text)| doc == text)
            && pairs[0].0.as_ref().is_some_and(|doc| doc["note"] == "hot")
            && pairs[2].0.is_none()
            && pairs[3].0.is_some();
        right.then_some(())
    })
    .await;
    assert!(
        followed.is_some(),
        "{:?}\n{}",
        documents(&env, &[1, 2, 3, 4]).await,
        daemon.log()
    );

    // The audit reads the documents back: clean, then a path changed behind the daemon's back is found.
    let audit = || env.run_cli(&["audit", "--all", "--job", "docs"], &path);
    let (code, out) = audit();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("docs: 3 checked, 0 wrong, 0 missing, 0 orphaned"), "{out}");
    let _: () = redis::cmd("JSON.SET")
        .arg(format!("{p}doc:2"))
        .arg("$.name")
        .arg("\"Lampe\"")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = audit();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("docs: 3 checked, 1 wrong, 0 missing, 0 orphaned"), "{out}");
    assert!(out.contains("Lampe"), "{out}");
    drop(daemon);

    // Over a document already there a run writes only the fields that changed (seen on one node's MONITOR): Lampe's
    // name alone, at its path; the unchanged documents get nothing; a deleted key is written whole.
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}doc:4"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let monitor = match env.cluster {
        true => None,
        false => {
            let client = redis::Client::open(env.redis_url.as_str()).unwrap();
            Some(client.get_async_monitor().await.unwrap().into_on_message::<String>())
        }
    };
    let (code, out) = env.run_cli(&["run", "--once", "--job", "docs"], &path);
    assert_eq!(code, Some(0), "{out}");
    if let Some(mut monitor) = monitor {
        use futures_util::StreamExt as _;
        let mut writes = BTreeSet::new();
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), monitor.next()).await {
            let Some((_, command)) = line.split_once("] ") else {
                continue;
            };
            let write = ["\"JSON.SET\"", "\"JSON.DEL\"", "\"UNLINK\"", "\"SET\""]
                .iter()
                .any(|w| command.starts_with(w));
            if write && command.contains(&format!("\"{p}doc:")) {
                let command = command.replace(p.as_str(), "");
                // The whole document's text is the server's to print; its key and path are what matter.
                let command = match command.strip_prefix(r#""JSON.SET" "doc:4" "$" "#) {
                    Some(_) => r#""JSON.SET" "doc:4" "$" …"#.to_string(),
                    None => command,
                };
                writes.insert(command);
            }
        }
        let expected: BTreeSet<String> = [
            r#""JSON.SET" "doc:2" "$.name" "\"Lamp\"""#,
            r#""JSON.SET" "doc:4" "$" …"#,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(writes, expected);
    }
    let pairs = documents(&env, &[1, 2, 4]).await;
    assert!(
        pairs.iter().all(|(doc, text)| doc.is_some() && doc == text),
        "{pairs:?}"
    );
}

#[tokio::test]
async fn json_documents_are_warmed_follow_the_binlog_and_are_audited() {
    documents_follow_the_binlog(TestEnv::new().await.on_json_redis()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_json_documents_follow_the_binlog() {
    documents_follow_the_binlog(TestEnv::new().await.on_cluster()).await;
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

#[tokio::test]
async fn a_json_document_job_is_refused_at_start_by_a_redis_without_the_module() {
    let env = TestEnv::new().await;
    let path = env.config_file(&format!(
        "[[warm]]\nname = \"docs\"\nschedule = \"every 1h\"\nquery = \"SELECT 1 AS id\"\nkey = \"{}doc:{{id}}\"\n\
         type = \"json\"\nttl = \"1h\"\n",
        env.prefix
    ));
    let (code, out) = env.run_cli(&["check"], &path);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{out}");
    let says = "type = \"json\" needs JSON.SET, JSON.GET and JSON.DEL, which this Redis does not have: load the RedisJSON module";
    assert!(out.contains("warm job \"docs\"") && out.contains(says), "{out}");
    let mut daemon = common::Daemon::start(&env, &path, &[], &[]);
    assert_eq!(
        daemon.exit_code(Duration::from_secs(20)).await,
        Some(78),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains(says), "{}", daemon.log());
    assert!(env.keys().await.is_empty());
}

#[test]
fn check_refuses_what_a_hash_or_a_set_cannot_hold_and_the_types_not_built_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.toml");
    let job = |name: &str, key: &str, extra: &str| {
        format!(
            "\n[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT id, name FROM products\"\n\
             key = \"{key}\"\nttl = \"1h\"\n{extra}"
        )
    };
    let config = [
        "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n".to_string(),
        job("packed", "p:{id}", "type = \"hash\"\ncompress = \"zstd\"\n"),
        job("whole", "all_products", "type = \"hash\"\n"),
        job("board", "b:{id}", "type = \"zset\"\nmember = \"{id}\"\n"),
        job("flat", "s:{id}", "type = \"set\"\nmember = \"all\"\n"),
        job(
            "packedset",
            "ps:{id}",
            "type = \"set\"\nmember = \"{id}\"\ncompress = \"zstd\"\n",
        ),
        job("doc", "d:{id}", "type = \"json\"\ncompress = \"gzip\"\n"),
        job("setfine", "sf:{name}", "type = \"set\"\nmember = \"{id}\"\n"),
        "\n[[warm]]\nname = \"ranked\"\nschedule = \"every 1h\"\nttl = \"1h\"\nkey = \"top\"\ntype = \"zset\"\n\
         member = \"{id}\"\nscore = \"name\"\nquery = \"SELECT id, name FROM products ORDER BY id DESC LIMIT 3\"\n"
            .to_string(),
        "\n[[warm]]\nname = \"percat\"\nschedule = \"every 1h\"\nttl = \"1h\"\nkey = \"top:{name}\"\ntype = \"zset\"\n\
         member = \"{id}\"\nscore = \"id\"\nquery = \"SELECT id, name FROM products ORDER BY id DESC LIMIT 3\"\n"
            .to_string(),
        job("typo", "t:{id}", "type = \"hashes\"\n"),
        job("fine", "f:{id}", "type = \"hash\"\n"),
        job("hashed", "h:{id}", "type = \"hash\"\n"),
        // Strings into keys of the hashes' shape: each job would write the other's keys over.
        job("shadow", "h:{name}", ""),
        job("documents", "j:{id}", "type = \"json\"\n"),
        // A projection would write a JSON string over those documents (into the hashes it updates their fields).
        "\n[binlog]\nserver_id = 7\n\n[[on_change]]\ntable = \"products\"\n\
         project = { key = \"j:{id}\", columns = [\"name\"], ttl = \"1h\" }\n\n\
         [[on_change]]\ntable = \"products\"\nproject = { key = \"h:{id}\", columns = [\"name\"], ttl = \"1h\" }\n"
            .to_string(),
    ]
    .concat();
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = common::cli_output(&["check"], &path);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, Some(78), "{all}");
    for (job, field, says) in [
        ("packed", "compress", "compression applies to type = \"string\" only"),
        ("whole", "type", "has no placeholder"),
        ("board", "score", "type = \"zset\" needs `score`"),
        (
            "flat",
            "member",
            "has no placeholder, so every row would add the same member",
        ),
        ("packedset", "compress", "compression applies to type = \"string\" only"),
        ("doc", "compress", "a JSON document is stored parsed by the server"),
        ("ranked", "query", "a top N sorted set needs ORDER BY name DESC"),
        ("percat", "key", "a top N (LIMIT) ranks the whole query, not each key"),
        ("typo", "type", "\"hashes\" is not a type"),
        (
            "documents",
            "project",
            "which are JSON documents (type = \"json\"): refresh them instead",
        ),
        (
            "shadow",
            "type",
            "writes strings into keys of the shape of [[warm]] job \"hashed\"'s \"h:{id}\", which are hashes",
        ),
    ] {
        assert!(
            all.lines()
                .any(|line| line.contains(job) && line.contains(field) && line.contains(says)),
            "{job}.{field}: {all}"
        );
    }
    assert!(!all.contains("on_change[1]"), "{all}");
    for fine in ["\"fine\"", "\"setfine\""] {
        assert!(!all.lines().any(|line| line.contains(fine)), "{all}");
    }
}
