//! `cachewarden audit` against real MariaDB and Redis: consistent caches pass, changed and deleted rows are reported
//! as stale with what Redis holds and what the database says, and the exit code tells.

mod common;

use common::{TestEnv, cli_output, run_once_ok};

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
    run_once_ok(&path);

    let (code, stdout, stderr) = cli_output(&["audit"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
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
    let (_, stdout, _) = cli_output(&["audit", "--job", "products"], &path);
    assert!(
        stdout.contains("products: 0 keys checked: no cached key matches"),
        "{stdout}"
    );
    assert!(
        stdout.contains("overall: 0 keys checked: nothing was compared"),
        "{stdout}"
    );
    assert!(!stdout.contains("consistent"), "{stdout}");
    run_once_ok(&path);

    env.sql("UPDATE products SET price = 18.00 WHERE id = 1").await;
    env.sql("DELETE FROM products WHERE id = 2").await;
    let (code, stdout, stderr) = cli_output(&["audit", "--job", "products"], &path);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
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

/// `cachewarden audit --all` on `path`, which must exit with `code`: its stdout and stderr.
fn audit_all(path: &std::path::Path, expected: i32) -> (String, String) {
    let (code, stdout, stderr) = cli_output(&["audit", "--all"], path);
    assert_eq!(code, Some(expected), "{stdout}{stderr}");
    (stdout, stderr)
}

/// A job of `rows` products, another of the same rows encrypted without a refresh_query, and a whole-result job;
/// warmed, then 30 values made wrong, 30 keys of deleted rows left behind and 30 keys deleted, on `env`'s Redis.
async fn damaged_cache(env: &TestEnv, rows: u32) -> std::path::PathBuf {
    env.sql(&format!(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price INT);
         INSERT INTO products SELECT seq, CONCAT('product ', seq), seq % 100 FROM seq_1_to_{rows}"
    ))
    .await;
    let p = &env.prefix;
    let keys = env.write_file("cache-key", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    let path = env.config_file(&format!(
        r#"[crypto]
key_file = "{keys}"

[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT id, name, price FROM products"
refresh_query = "SELECT id, name, price FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"
compress = "zstd"
compress_over = 10

[[warm]]
name = "secret"
schedule = "every 1h"
query = "SELECT id, name FROM products"
key = "{p}secret:{{id}}"
ttl = "1h"
encrypt_columns = ["name"]

[[warm]]
name = "cheap"
schedule = "every 1h"
query = "SELECT id, price FROM products WHERE price = 0 ORDER BY id"
key = "{p}cheap"
ttl = "1h"
shape = "array"

[[warm]]
name = "long"
schedule = "every 1h"
query = "SELECT id, REPEAT('x', IF(id % 1000 = 0, 300, 10)) AS body FROM products"
key = "{p}long:{{id}}"
ttl = "1h"
max_value_bytes = 200
"#,
        keys = keys.display()
    ));
    run_once_ok(&path);
    let mut conn = env.any_redis().await;
    let mut damage = Vec::new();
    for i in 0..30 {
        // Wrong: another value under the key (plain JSON: the audit compares decompressed values).
        damage.push(
            redis::cmd("SET")
                .arg(format!("{p}product:{}", 1000 + i * 7))
                .arg("{\"id\":0}")
                .clone(),
        );
        damage.push(
            redis::cmd("SET")
                .arg(format!("{p}secret:{}", 2000 + i * 7))
                .arg("{\"id\":0}")
                .clone(),
        );
        // Missing: deleted from Redis.
        damage.push(redis::cmd("DEL").arg(format!("{p}product:{}", 5000 + i * 7)).clone());
        // Orphaned: a key of a row that does not exist.
        damage.push(
            redis::cmd("SET")
                .arg(format!("{p}product:{}", rows + 1 + i))
                .arg("{\"id\":1}")
                .clone(),
        );
    }
    damage.push(redis::cmd("SET").arg(format!("{p}cheap")).arg("[]").clone());
    for command in damage {
        let _: () = command.query_async(&mut conn).await.unwrap();
    }
    path
}

/// A [`damaged_cache`] of `rows` rows audited with `audit --all`, which must find the damage exactly (encrypted values
/// compare by what they say: each envelope has its own nonce, and only the damaged ones differ); the configuration
/// and what the audit printed.
async fn damaged_and_audited(env: &TestEnv, rows: u32) -> (std::path::PathBuf, String) {
    let path = damaged_cache(env, rows).await;
    let (stdout, stderr) = audit_all(&path, 1);
    assert!(
        stdout.contains(&format!("products: {rows} checked, 30 wrong, 30 missing, 30 orphaned")),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("secret: {rows} checked, 30 wrong, 0 missing, 0 orphaned")),
        "{stdout}"
    );
    (path, stdout)
}

#[tokio::test]
async fn audit_all_finds_exactly_the_wrong_missing_and_orphaned_keys_among_a_hundred_thousand() {
    let env = TestEnv::new().await;
    let (path, stdout) = damaged_and_audited(&env, 100_000).await;
    assert!(
        stdout.contains("cheap: 1 checked, 1 wrong, 0 missing, 0 orphaned"),
        "{stdout}"
    );
    // Values the warm run does not store (over max_value_bytes) are not missing: they are not compared.
    assert!(
        stdout.contains("long: 99900 checked, 0 wrong, 0 missing, 0 orphaned\n  (100 rows not compared"),
        "{stdout}"
    );
    let p = &env.prefix;
    assert!(
        stdout.contains(&format!("  WRONG {p}product:1000\n    cached:   {{\"id\":0}}\n")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("  ORPHANED {p}product:100001\n")), "{stdout}");

    // Warmed again, the same audit is clean (the orphans are deleted by hand: no run deletes them).
    let mut conn = env.redis().await;
    for i in 1..=30 {
        let _: () = redis::cmd("DEL")
            .arg(format!("{p}product:{}", 100_000 + i))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    run_once_ok(&path);
    let (code, stdout, stderr) = cli_output(&["audit", "--all", "--job", "products"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("products: 100000 checked, 0 wrong, 0 missing, 0 orphaned"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret:"), "--job audits that job alone: {stdout}");
}

#[tokio::test]
async fn audit_all_on_a_redis_cluster_finds_the_same() {
    let env = TestEnv::new().await.on_cluster();
    damaged_and_audited(&env, 10_000).await;
}

#[tokio::test]
async fn the_daemon_sweeps_every_key_and_repairs_wrong_and_orphaned_ones() {
    sweeps_and_repairs(TestEnv::new().await).await;
}

#[tokio::test]
async fn on_a_redis_cluster_the_daemon_sweeps_every_key_and_repairs_wrong_and_orphaned_ones() {
    sweeps_and_repairs(TestEnv::new().await.on_cluster()).await;
}

async fn sweeps_and_repairs(env: TestEnv) {
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50));
         INSERT INTO products SELECT seq, CONCAT('product ', seq) FROM seq_1_to_500",
    )
    .await;
    let p = &env.prefix;
    let path = env.config_file(&format!(
        "[daemon]\naudit_period = \"2s\"\naudit_repair = true\naudit_slice = 120\n\n[channel]\nenabled = false\n\n[[warm]]\n\
         name = \"products\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"SELECT id, name FROM products\"\n\
         refresh_query = \"SELECT id, name FROM products WHERE id = :id\"\nkey = \"{p}product:{{id}}\"\nttl = \"1h\"\n\n\
         [[warm]]\nname = \"names\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
         query = \"SELECT id, name FROM products\"\nkey = \"{p}name:{{id}}\"\nttl = \"1h\"\n{}",
        more_shapes(&env)
    ));
    let daemon = common::Daemon::start(&env, &path, &[], &[]);
    common::wait_for_admin(&env).await;
    // Every start-up run done (they run side by side), so that none writes over the damage below.
    let warmed = common::eventually(std::time::Duration::from_secs(10), || async {
        for job in ["products", "names", "packed", "secret", "cheap"] {
            let runs = format!("cachewarden_warm_runs_total{{warm_job=\"{job}\",outcome=\"success\"}}");
            (common::metric(&env, &runs).await == 1.0).then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(warmed.is_some(), "{}", daemon.log());
    // A fault the daemon did not see: a wrong value, and a key of a row that does not exist.
    let mut conn = env.any_redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{p}product:7"))
        .arg("{\"id\":7,\"name\":\"stale\"}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{p}product:9999"))
        .arg("{\"id\":9999}")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The same in a compressed job, an encrypted one with no refresh path, and a whole result in one key.
    for key in ["packed:7", "secret:8", "cheap"] {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}{key}"))
            .arg("[{\"id\":0}]")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let repaired = common::eventually(std::time::Duration::from_secs(20), || async {
        let right = env.get(&format!("{p}product:7")).await? == "{\"id\":7,\"name\":\"product 7\"}";
        let gone = env.get(&format!("{p}product:9999")).await.is_none();
        (right && gone).then_some(())
    })
    .await;
    assert!(repaired.is_some(), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("Audit: a cached key is stale.") && log.contains("product:9999"),
        "{log}"
    );
    assert!(
        common::metric(&env, "cachewarden_audit_repaired_keys_total{warm_job=\"products\"}").await >= 2.0,
        "{log}"
    );
    // The next sweep finds every key right.
    let clean = common::eventually(std::time::Duration::from_secs(10), || async {
        let checked = common::metric(&env, "cachewarden_audit_keys_checked{warm_job=\"products\"}").await;
        let wrong = common::metric(&env, "cachewarden_audit_wrong_keys{warm_job=\"products\"}").await
            + common::metric(&env, "cachewarden_audit_orphaned_keys{warm_job=\"products\"}").await;
        (checked == 500.0 && wrong == 0.0).then_some(())
    })
    .await;
    assert!(clean.is_some(), "{}", daemon.log());
    // Repaired in every shape: refreshed (compressed), or deleted and the job run again (no way to read one key).
    let shapes = common::eventually(std::time::Duration::from_secs(20), || async {
        for (job, checked) in [("packed", 500.0), ("secret", 500.0), ("cheap", 1.0)] {
            let labels = format!("{{warm_job=\"{job}\"}}");
            let mut values = Vec::new();
            for name in [
                "cachewarden_audit_keys_checked",
                "cachewarden_audit_wrong_keys",
                "cachewarden_audit_missing_keys",
                "cachewarden_audit_repaired_keys_total",
            ] {
                values.push(common::metric(&env, &format!("{name}{labels}")).await);
            }
            let done = values[0] == checked && values[1] + values[2] == 0.0 && values[3] >= 1.0;
            done.then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(shapes.is_some(), "{}", daemon.log());
    let cheap = env.get(&format!("{p}cheap")).await.unwrap_or_default();
    assert!(cheap.starts_with("[{\"id\":1,"), "{cheap}");
    assert!(
        env.get(&format!("{p}secret:8")).await.is_some(),
        "written again by the run"
    );
    // 500 keys read 120 at a time, each slice a statement of its own.
    assert!(daemon.log().contains("slices=5"), "{}", daemon.log());
    // Read in slices without a refresh_query, a job's orphans cannot be told from new rows' keys: the sweep says it
    // did not look for them, on /metrics and on the page.
    let names = "{warm_job=\"names\"}";
    assert_eq!(
        common::metric(&env, &format!("cachewarden_audit_orphans_checked{names}")).await,
        0.0
    );
    assert_eq!(
        common::metric(&env, "cachewarden_audit_orphans_checked{warm_job=\"products\"}").await,
        1.0
    );
    assert_eq!(
        common::metric(&env, &format!("cachewarden_audit_failures_total{names}")).await,
        0.0
    );
    let page = common::get(&env, "/").await.unwrap().body;
    assert!(page.contains("Consistency (every key"), "{page}");
    assert!(page.contains("(not all looked for)"), "{page}");
}

/// A compressed job with a refresh path, an encrypted one without, and a whole result in one key (`shape = "array"`),
/// over the sweep test's products.
fn more_shapes(env: &TestEnv) -> String {
    let p = &env.prefix;
    let keys = env.write_file("sweep-key", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    format!(
        r#"
[[warm]]
name = "packed"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name FROM products"
refresh_query = "SELECT id, name FROM products WHERE id = :id"
key = "{p}packed:{{id}}"
ttl = "1h"
compress = "zstd"
compress_over = 10

[[warm]]
name = "secret"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name FROM products"
key = "{p}secret:{{id}}"
ttl = "1h"
encrypt_columns = ["name"]

[[warm]]
name = "cheap"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name FROM products WHERE id <= 3 ORDER BY id"
key = "{p}cheap"
ttl = "1h"
shape = "array"

[crypto]
key_file = "{keys}"
"#,
        keys = keys.display()
    )
}
