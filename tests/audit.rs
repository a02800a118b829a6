//! `cachewarden audit` against real MariaDB and Redis: consistent caches pass, changed and deleted rows are reported
//! as stale with what Redis holds and what the database says, and the exit code tells.

mod common;

use common::{TestEnv, text};

#[tokio::test]
async fn audit_reports_stale_keys_and_exits_non_zero() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
        INSERT INTO products VALUES (1, 'Kettle', 19.90), (2, 'Lamp', 5.00), (3, 'Chair', 120.00)",
    )
    .await;
    let p = &env.prefix;
    let path = env.config_file(&format!(
        r#"[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT id, name, price FROM products"
refresh_query = "SELECT id, name, price FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"

[[warm]]
name = "names"
schedule = "every 1h"
query = "SELECT id, name FROM products"
key = "{p}name:{{id}}"
ttl = "1h"
"#
    ));
    let output = env
        .cli()
        .args(["run", "--once", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));

    let output = env.cli().args(["audit", "--config"]).arg(&path).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("products: 3 keys checked, 0 stale, 1.0000 consistent"),
        "{stdout}"
    );
    assert!(stdout.contains("names: skipped (no refresh_query"), "{stdout}");

    // Nothing cached: said as such, not as "1.0000 consistent".
    let mut conn = env.redis().await;
    for id in 1..=3 {
        let _: () = redis::cmd("DEL")
            .arg(format!("{p}product:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let output = env
        .cli()
        .args(["audit", "--job", "products", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains("products: 0 keys checked: no cached key matches"),
        "{stdout}"
    );
    assert!(
        stdout.contains("overall: 0 keys checked: nothing was compared"),
        "{stdout}"
    );
    assert!(!stdout.contains("consistent"), "{stdout}");
    let output = env
        .cli()
        .args(["run", "--once", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));

    env.sql("UPDATE products SET price = 18.00 WHERE id = 1").await;
    env.sql("DELETE FROM products WHERE id = 2").await;
    let output = env
        .cli()
        .args(["audit", "--job", "products", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("products: 3 keys checked, 2 stale, 0.3333 consistent"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("STALE {p}product:1 (written ")), "{stdout}");
    assert!(
        stdout.contains(r#"cached:   {"id":1,"name":"Kettle","price":"19.90"}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"database: {"id":1,"name":"Kettle","price":"18.00"}"#),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("STALE {p}product:2")), "{stdout}");
    assert!(stdout.contains("(no row: the key should not exist)"), "{stdout}");
    assert!(!stdout.contains("product:3 ("), "{stdout}");
}
