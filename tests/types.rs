//! Redis data shapes (`type` per warm job): a hash per row, warmed, kept by the binlog, audited, on one Redis and on
//! the test cluster; and the types and combinations that are refused, with the job and field named.

mod common;

use std::collections::BTreeMap;
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
    let (code, out) = env.run_cli(&["run", "--once"], &plain);
    assert_eq!(code, Some(0), "{out}");
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

#[test]
fn check_refuses_what_a_hash_cannot_hold_and_the_types_not_built_yet() {
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
        job("board", "b:{id}", "type = \"zset\"\n"),
        job("typo", "t:{id}", "type = \"hashes\"\n"),
        job("fine", "f:{id}", "type = \"hash\"\n"),
        job("hashed", "h:{id}", "type = \"hash\"\n"),
        // A projection would write a JSON string over those hashes.
        "\n[binlog]\nserver_id = 7\n\n[[on_change]]\ntable = \"products\"\n\
         project = { key = \"h:{id}\", columns = [\"name\"], ttl = \"1h\" }\n"
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
        ("board", "type", "\"zset\" is not supported yet"),
        ("typo", "type", "\"hashes\" is not a type"),
        (
            "hashed",
            "project",
            "which are hashes (type = \"hash\"): refresh them instead",
        ),
    ] {
        assert!(
            all.lines()
                .any(|line| line.contains(job) && line.contains(field) && line.contains(says)),
            "{job}.{field}: {all}"
        );
    }
    assert!(!all.lines().any(|line| line.contains("\"fine\"")), "{all}");
}
