//! Several binlog sources in one configuration: each followed by a listener of its own, with its own checkpoint and
//! series; one whose server is down holds back none of the others, readiness names it, and it catches up after.

use super::*;

use common::OwnMariaDb;

/// The shared MariaDB (`shop`, the test's database) and a MariaDB of the test's own (`orders`), each with a
/// projection rule; the second server stopped and started again while both are written to.
#[tokio::test]
async fn two_sources_are_followed_each_on_its_own_and_one_down_stops_neither_the_other_nor_itself_for_good() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    let mut orders = OwnMariaDb::start();
    let body = common::shop_and_orders(&env, &orders).await;
    let p = &env.prefix;
    let path = env.config_file(&body);
    // `check --connect` holds each rule against its source's server: `so.orders` is only on the orders server.
    let (code, stdout, stderr) = common::cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let daemon = common::Daemon::start(&env, &path, &[], &[]);
    common::wait_for_admin(&env).await;
    let connected = |source: &'static str| {
        let env = &env;
        async move { metric(env, &format!("cachewarden_binlog_connected{{source=\"{source}\"}}")).await == 1.0 }
    };
    let both = eventually(Duration::from_secs(20), || async {
        (connected("shop").await && connected("orders").await).then_some(())
    })
    .await;
    assert!(both.is_some(), "not following both sources:\n{}", daemon.log());

    env.sql("INSERT INTO products VALUES (1, 'Kettle')").await;
    orders.sql("INSERT INTO so.orders VALUES (7, 70)");
    assert!(becomes(&env, "product:1", Some(r#"{"id":1,"name":"Kettle"}"#)).await);
    assert!(becomes(&env, "order:7", Some(r#"{"id":7,"total":70}"#)).await);
    // Each source saved its own checkpoint, and counted its own rows.
    let checkpoints = eventually(Duration::from_secs(10), || async {
        let shop = env.get(&format!("{p}checkpoint:shop")).await?;
        let orders = env.get(&format!("{p}checkpoint:orders")).await?;
        Some((shop, orders))
    })
    .await
    .expect("both checkpoints saved");
    assert_ne!(checkpoints.0, checkpoints.1);
    // (Counted once the batch is done, a moment after its key is written.)
    let counted = eventually(Duration::from_secs(10), || async {
        let rows = metric(&env, "cachewarden_binlog_rows_total{source=\"orders\"}").await;
        (rows >= 1.0).then_some(rows)
    })
    .await;
    assert_eq!(counted, Some(1.0), "the orders source counted its one row");
    assert!(metric(&env, "cachewarden_binlog_rows_total{source=\"shop\"}").await >= 1.0);
    let page = get(&env, "/").await.expect("status page").body;
    assert!(
        page.contains("<h2>Binlog “shop”</h2>") && page.contains("<h2>Binlog “orders”</h2>"),
        "{page}"
    );

    // The orders server goes down: readiness names that source, and the shop's changes still arrive.
    orders.stop();
    let named = eventually(Duration::from_secs(20), || async {
        let ready = get(&env, "/readyz").await?;
        (ready.status == 503 && ready.body.contains("binlog orders: cannot follow the binlog")).then_some(ready.body)
    })
    .await;
    assert!(
        named.is_some(),
        "readiness does not name the source that is down:\n{}",
        daemon.log()
    );
    assert!(!connected("orders").await);
    env.sql("UPDATE products SET name = 'Teapot' WHERE id = 1").await;
    assert!(
        becomes(&env, "product:1", Some(r#"{"id":1,"name":"Teapot"}"#)).await,
        "a source whose server is down held back another:\n{}",
        daemon.log()
    );

    // Back: the source reconnects from its checkpoint, follows again, and readiness clears.
    orders.launch();
    orders.sql("UPDATE so.orders SET total = 71 WHERE id = 7; INSERT INTO so.orders VALUES (8, 80)");
    assert!(
        becomes(&env, "order:7", Some(r#"{"id":7,"total":71}"#)).await,
        "{}",
        daemon.log()
    );
    assert!(becomes(&env, "order:8", Some(r#"{"id":8,"total":80}"#)).await);
    let ready = eventually(Duration::from_secs(20), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "still not ready after the source came back:\n{}",
        daemon.log()
    );
}

/// A source with `read_url`: the jobs naming it read its server — warm runs, `run --once`, `check --connect`, the
/// refreshes and join lookups of their derived rules — while the others read `[mysql]` (the shop's database, which
/// has no such tables); readiness names that server when it is down.
#[tokio::test]
async fn the_jobs_of_a_source_with_read_url_read_its_server() {
    let _shared = common::binlog_shared();
    let env = TestEnv::new().await;
    let mut orders = OwnMariaDb::start();
    env.sql("CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50)); INSERT INTO products VALUES (1, 'Kettle')")
        .await;
    orders.sql(
        "CREATE DATABASE so; CREATE TABLE so.customers (id INT PRIMARY KEY, name VARCHAR(50));
         CREATE TABLE so.orders (id INT PRIMARY KEY, total INT, customer_id INT);
         INSERT INTO so.customers VALUES (1, 'Ada'), (2, 'Bob');
         INSERT INTO so.orders VALUES (7, 70, 1), (8, 80, 2)",
    );
    let (p, url) = (&env.prefix, orders.url());
    let body = format!(
        r#"[channel]
enabled = false

[[binlog]]
name = "shop"
checkpoint_key = "{p}checkpoint:shop"
heartbeat = "1s"
derive_rules = true

[[binlog]]
name = "orders"
url = "{url}"
read_url = "{url}/so"
checkpoint_key = "{p}checkpoint:orders"
heartbeat = "1s"
derive_rules = true

[[warm]]
name = "products"
source = "shop"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name FROM products"
key = "{p}product:{{id}}"
ttl = "1h"

[[warm]]
name = "order_cards"
source = "orders"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"
refresh_query = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = :id"
key = "{p}card:{{id}}"
ttl = "1h"
"#
    );
    let path = env.config_file(&body);
    let (code, stdout, stderr) = common::cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // `run --once` reads each job where it reads.
    common::run_once_ok(&path);
    assert_eq!(
        env.get(&format!("{p}card:7")).await.as_deref(),
        Some(r#"{"id":7,"total":70,"name":"Ada"}"#)
    );
    assert_eq!(
        env.get(&format!("{p}product:1")).await.as_deref(),
        Some(r#"{"id":1,"name":"Kettle"}"#)
    );

    let daemon = common::Daemon::start(&env, &path, &[], &[]);
    common::wait_for_admin(&env).await;
    let following = eventually(Duration::from_secs(20), || async {
        let orders = metric(&env, "cachewarden_binlog_connected{source=\"orders\"}").await;
        (orders == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "not following orders:\n{}", daemon.log());
    // The driving table's change is read again from the orders server; a customer's change finds its orders there.
    orders.sql("UPDATE so.orders SET total = 71 WHERE id = 7; UPDATE so.customers SET name = 'Bea' WHERE id = 2");
    assert!(
        becomes(&env, "card:7", Some(r#"{"id":7,"total":71,"name":"Ada"}"#)).await,
        "{}",
        daemon.log()
    );
    assert!(
        becomes(&env, "card:8", Some(r#"{"id":8,"total":80,"name":"Bea"}"#)).await,
        "{}",
        daemon.log()
    );
    let page = get(&env, "/").await.expect("status page").body;
    assert!(
        page.contains("jobs of"),
        "the status page names the orders reader:\n{page}"
    );

    orders.stop();
    let named = eventually(Duration::from_secs(20), || async {
        let ready = get(&env, "/readyz").await?;
        (ready.status == 503 && ready.body.contains("the server the jobs of source \"orders\" read")).then_some(())
    })
    .await;
    assert!(
        named.is_some(),
        "readiness does not name the reader that is down:\n{}",
        daemon.log()
    );
}
