//! Row changes reach the mapped keys: refreshes, deletes, projections, when_changed and debounced warms, glob
//! characters in values, and table patterns.

use super::*;
use std::ops::Not as _;

#[tokio::test]
async fn inserts_updates_and_deletes_refresh_and_delete_the_mapped_keys() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let path = env.config_file(&config(&env, "", &products_rule(&env, "")));
    let mut daemon = start(&env, &path).await;

    env.sql("INSERT INTO products VALUES (4, 'Desk', 80.00, 3, 1)").await;
    assert!(becomes(&env, "product:4", Some(r#"{"id":4,"name":"Desk","price":"80.00"}"#)).await);

    set(&env, "category:1:page:1").await;
    env.sql("UPDATE products SET price = 17.50 WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"17.50"}"#)).await);
    assert!(
        becomes(&env, "category:1:page:1", None).await,
        "the category pattern was not deleted"
    );

    // A changed key column: the old key goes, the new one is written.
    env.sql("UPDATE products SET id = 20 WHERE id = 2").await;
    assert!(becomes(&env, "product:20", Some(r#"{"id":20,"name":"Lamp","price":"5.00"}"#)).await);
    env.sql("UPDATE products SET id = 21 WHERE id = 20").await;
    assert!(becomes(&env, "product:20", None).await);
    assert!(becomes(&env, "product:21", Some(r#"{"id":21,"name":"Lamp","price":"5.00"}"#)).await);

    env.sql("DELETE FROM products WHERE id = 1").await;
    assert!(becomes(&env, "product:1", None).await);

    // A multi-row transaction is applied whole.
    env.sql("BEGIN;\nINSERT INTO products VALUES (5, 'Rug', 40.00, 4, 1), (6, 'Vase', 12.00, 4, 1);\nCOMMIT")
        .await;
    assert!(becomes(&env, "product:5", Some(r#"{"id":5,"name":"Rug","price":"40.00"}"#)).await);
    assert!(becomes(&env, "product:6", Some(r#"{"id":6,"name":"Vase","price":"12.00"}"#)).await);
    assert!(metric(&env, "cachewarden_binlog_transactions_total{source=\"main\"}").await >= 6.0);
    // Idle now: the server's heartbeats (every 1 s here) keep "last heard" fresh and say nothing is pending.
    let now = cachewarden::telemetry::metrics::unix_now().as_secs_f64();
    let fresh = eventually(Duration::from_secs(10), || async {
        let heard = metric(&env, "cachewarden_binlog_last_heard_timestamp_seconds{source=\"main\"}").await;
        (heard > now && metric(&env, "cachewarden_binlog_lag_seconds{source=\"main\"}").await == 0.0).then_some(())
    })
    .await;
    assert!(
        fresh.is_some(),
        "heartbeats are not heard while idle:\n{}",
        daemon.log()
    );
    // The status page names the checkpoint saved: the binlog file and the offset in it.
    let page = eventually(Duration::from_secs(10), || async {
        let page = get(&env, "/").await?.body;
        page.contains("<td>checkpoint saved</td><td>none yet</td>")
            .not()
            .then_some(page)
    })
    .await
    .expect("a checkpoint is saved");
    let shown = page.split("<td>checkpoint saved</td><td>").nth(1).unwrap_or_default();
    let shown = shown.split("</td>").next().unwrap_or_default();
    let (file, offset) = shown.split_once(':').unwrap_or_default();
    assert!(
        file.rsplit_once('.')
            .is_some_and(|(_, number)| number.parse::<u32>().is_ok())
            && offset.split(' ').next().unwrap_or_default().parse::<u64>().is_ok(),
        "{shown}"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn projections_are_written_from_the_row_image() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql("ALTER TABLE products ADD COLUMN seen TIMESTAMP NULL, ADD COLUMN tags JSON")
        .await;
    let p = &env.prefix;
    let rules = format!(
        "[[on_change]]\ntable = \"{}.products\"\n\
         project = {{ key = \"{p}card:{{id}}\", columns = [\"id\", \"name\", \"price\", \"seen\", \"tags\"], ttl = \"10m\" }}\n",
        env.database
    );
    let path = env.config_file(&config(&env, "", &rules));
    let mut daemon = start(&env, &path).await;
    env.sql("SET time_zone = '+02:00';\nUPDATE products SET price = 8.25, seen = '2026-11-26 10:00:00', tags = '[\"a\"]' WHERE id = 1")
        .await;
    assert!(
        becomes(
            &env,
            "card:1",
            Some(r#"{"id":1,"name":"Kettle","price":"8.25","seen":"2026-11-26T08:00:00Z","tags":"[\"a\"]"}"#)
        )
        .await,
        "got {:?}",
        value(&env, "card:1").await
    );
    let ttl = env.pttl(&format!("{p}card:1")).await;
    assert!((590_000..=600_000).contains(&ttl), "PTTL {ttl}");
    env.sql("UPDATE products SET id = 10 WHERE id = 1").await;
    assert!(becomes(&env, "card:1", None).await);
    // The old key's delete and the new key's write are two Redis calls: wait for the second too.
    assert!(
        becomes(
            &env,
            "card:10",
            Some(r#"{"id":10,"name":"Kettle","price":"8.25","seen":"2026-11-26T08:00:00Z","tags":"[\"a\"]"}"#)
        )
        .await,
        "got {:?}",
        value(&env, "card:10").await
    );
    env.sql("DELETE FROM products WHERE id = 10").await;
    assert!(becomes(&env, "card:10", None).await);
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn when_changed_ignores_other_columns_and_warm_is_debounced() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    let rules = format!(
        "{}[[on_change]]\ntable = \"{}.products\"\nwarm = [\"stats\"]\ndebounce = \"5s\"\n",
        products_rule(&env, "when_changed = [\"price\", \"name\"]"),
        env.database
    );
    let path = env.config_file(&config(&env, "", &rules));
    let mut daemon = start(&env, &path).await;
    // The first start (no checkpoint) re-warms what the rules cover; let that finish first.
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)).await);
    assert!(becomes(&env, "stats", Some(r#"{"n":3,"stock":"21"}"#)).await);

    set(&env, "product:1").await;
    let window_opened = std::time::Instant::now();
    env.sql("UPDATE products SET stock = 99 WHERE id = 1").await;
    // The stats rule fires on any change (no when_changed): it proves the update was read.
    assert!(becomes(&env, "stats", Some(r#"{"n":3,"stock":"115"}"#)).await);
    assert_eq!(
        value(&env, "product:1").await.as_deref(),
        Some("stale"),
        "a stock-only update refreshed the product"
    );

    // Let the window that change opened close (its run counted long before), so the burst below opens its own.
    tokio::time::sleep(Duration::from_millis(5_500).saturating_sub(window_opened.elapsed())).await;
    let runs = || {
        metric(
            &env,
            r#"cachewarden_warm_runs_total{warm_job="stats",outcome="success"}"#,
        )
    };
    let runs_before = runs().await;
    // Three changes at once: one run at once, one at the window's end with the final state, and no more.
    for stock in [1, 2, 3] {
        env.sql(&format!("UPDATE products SET stock = {stock} WHERE id = 2"))
            .await;
    }
    let two_runs = eventually(Duration::from_secs(20), || async {
        (runs().await >= runs_before + 2.0).then_some(())
    })
    .await;
    assert!(two_runs.is_some(), "the trailing run never came:\n{}", daemon.log());
    assert!(becomes(&env, "stats", Some(r#"{"n":3,"stock":"111"}"#)).await);
    // A second trailing run would start at the same window's end: give it time to be counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        runs().await - runs_before,
        2.0,
        "three changes in one window ran stats other than once at once and once at the window's end"
    );

    env.sql("UPDATE products SET name = 'Kettle 2' WHERE id = 1").await;
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle 2","price":"19.90"}"#)).await);
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn row_values_with_glob_characters_never_widen_a_pattern_delete() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql(
        "INSERT INTO products VALUES (7, '*', 1.00, 9, 1), (8, 'ga[mx]ma', 1.00, 9, 1), (9, 'a?b\\\\', 1.00, 9, 1)",
    )
    .await;
    let p = &env.prefix;
    let rule = format!(
        "[[on_change]]\ntable = \"{}.products\"\ndelete = [\"{p}named:{{name}}:*\"]\n",
        env.database
    );
    let path = env.config_file(&config(&env, "", &rule));
    let mut daemon = start(&env, &path).await;
    let others = ["named:alpha:1", "named:gamma:1", "named:gaxma:1", "named:axb:1"];
    for key in others.iter().chain(&["named:*:1", "named:ga[mx]ma:1", "named:a?b\\:1"]) {
        set(&env, key).await;
    }
    // Each hostile name deletes only its own keys: '*' is no wildcard, '[mx]' no class, '?' no single character.
    env.sql("UPDATE products SET price = 2.00 WHERE id IN (7, 8, 9)").await;
    for own in ["named:*:1", "named:ga[mx]ma:1", "named:a?b\\:1"] {
        assert!(
            becomes(&env, own, None).await,
            "{own} was not deleted:\n{}",
            daemon.log()
        );
    }
    // The deletes are done (the last one seen); a widened pattern would have taken the others with them.
    for key in others {
        assert_eq!(
            value(&env, key).await.as_deref(),
            Some("stale"),
            "{key} was deleted by another row's pattern"
        );
    }
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_table_pattern_follows_every_shard_it_matches_even_one_created_later() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql(
        "CREATE TABLE orders_eu (id INT PRIMARY KEY, total INT);
         CREATE TABLE orders_us (id INT PRIMARY KEY, total INT);
         CREATE TABLE invoices (id INT PRIMARY KEY, total INT);
         INSERT INTO orders_eu VALUES (1, 10);
         INSERT INTO orders_us VALUES (1, 20)",
    )
    .await;
    let p = &env.prefix;
    let rule = format!(
        "[[on_change]]\ntable = \"{db}.orders_*\"\ndelete = [\"{p}order:{{_table}}:{{id}}\"]\n\
         project = {{ key = \"{p}card:{{_database}}:{{_table}}:{{id}}\", columns = [\"id\", \"total\"], ttl = \"1h\" }}\n",
        db = env.database
    );
    let path = env.config_file(&config(&env, "", &rule));
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "the pattern matches 2 tables: {db}.orders_eu, {db}.orders_us",
            db = env.database
        )),
        "{out}"
    );
    let mut daemon = start(&env, &path).await;
    for key in ["order:orders_eu:1", "order:orders_us:1", "order:invoices:1"] {
        set(&env, key).await;
    }
    env.sql("UPDATE orders_eu SET total = 11 WHERE id = 1; UPDATE orders_us SET total = 21 WHERE id = 1")
        .await;
    let card = |total: u32| format!(r#"{{"id":1,"total":{total}}}"#);
    for (table, total) in [("orders_eu", 11), ("orders_us", 21)] {
        assert!(
            becomes(&env, &format!("order:{table}:1"), None).await,
            "{}",
            daemon.log()
        );
        let key = format!("card:{}:{table}:1", env.database);
        assert!(
            becomes(&env, &key, Some(&card(total))).await,
            "{key}:\n{}",
            daemon.log()
        );
    }
    // A shard created while the daemon runs is followed; a table outside the pattern is not.
    env.sql("CREATE TABLE orders_asia (id INT PRIMARY KEY, total INT); INSERT INTO orders_asia VALUES (1, 30)")
        .await;
    let key = format!("card:{}:orders_asia:1", env.database);
    assert!(becomes(&env, &key, Some(&card(30))).await, "{}", daemon.log());
    env.sql("UPDATE invoices SET total = 1 WHERE id = 1; INSERT INTO invoices VALUES (2, 2)")
        .await;
    // The invoice change was read after the shard's (same stream): had the pattern matched it, it would be gone.
    env.sql("DELETE FROM orders_asia WHERE id = 1").await;
    assert!(becomes(&env, &key, None).await, "{}", daemon.log());
    assert_eq!(value(&env, "order:invoices:1").await.as_deref(), Some("stale"));
    assert_eq!(daemon.stop().await, Some(0));
}
