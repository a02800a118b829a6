//! A hash per row: warmed over a key of another type, kept by the binlog field by field (derived refreshes, and
//! `[[on_change]]` projections that write only the changed fields), audited; on one Redis and on the test cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use super::common::{self, TestEnv, eventually};

/// A hash's fields, or none when the key does not exist.
pub(super) async fn hash(env: &TestEnv, key: &str) -> BTreeMap<String, String> {
    let mut conn = env.any_redis().await;
    redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap()
}

pub(super) fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
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
    super::plant_string(&env, &format!("{p}product:3")).await;
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
    let mut monitor = super::monitor(&env).await;
    let (code, out) = env.run_cli(&["run", "--once"], &plain);
    assert_eq!(code, Some(0), "{out}");
    if let Some(monitor) = &mut monitor {
        let writes = super::writes(monitor, &["HSET", "HDEL", "UNLINK", "SET"], &format!("{p}product:"), p).await;
        let expected = super::set_of(&[
            r#""HSET" "product:2" "name" "Lamp""#,
            r#""UNLINK" "product:4""#,
            r#""HSET" "product:4" "id" "4" "name" "Desk" "price" "80.00""#,
        ]);
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
    let mut monitor = super::monitor(&env).await;
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
    if let Some(monitor) = &mut monitor {
        let verbs = ["HSET", "HDEL", "UNLINK", "SET", "DEL"];
        let writes = super::writes(monitor, &verbs, &format!("{p}product:"), p).await;
        let expected = super::set_of(&[
            r#""HSET" "product:1" "price" "21.00""#,
            r#""HDEL" "product:1" "note""#,
            r#""HSET" "product:2" "note" "hot""#,
        ]);
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
