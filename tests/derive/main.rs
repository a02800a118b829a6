//! Invalidation derived from the SQL: a configuration with only `[[warm]]` jobs (no `[[on_change]]`) keeps its keys
//! right under random inserts, updates and deletes, on MariaDB and on MySQL; `check` names what is not covered and
//! why; `rules` prints the derived rules so that they can be frozen.

mod cascades;
mod check;
#[path = "../common/mod.rs"]
mod common;
mod writes;

use std::time::Duration;

use common::{Daemon, TestEnv, eventually, metric, run_once_ok, wait_for_admin};
use sqlx::Connection as _;

const SCHEMA: &str = "
CREATE TABLE categories (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL);
CREATE TABLE products (
  id INT PRIMARY KEY,
  category_id INT NOT NULL,
  name VARCHAR(40) NOT NULL,
  status VARCHAR(10) NOT NULL,
  price DECIMAL(8,2) NULL,
  deleted_at DATETIME NULL
);
CREATE VIEW live_products AS SELECT id, name AS title, price, category_id FROM products
  WHERE status = 'active' AND deleted_at IS NULL;
CREATE VIEW category_sizes AS SELECT category_id, COUNT(*) AS n FROM products GROUP BY category_id";

/// The jobs, their keys under `prefix`. Each shape the derivation handles: a filtered one-table job with a refresh
/// path, one without (deletes), both again with every other operator a filter can have, an inner join with a
/// refresh path (also with unqualified columns), an outer join without, a GROUP BY, a whole result in one key, a
/// top-N.
fn jobs(prefix: &str) -> String {
    let active = "SELECT id, name, status, price FROM products \
                  WHERE status = 'active' AND price >= 10 AND deleted_at IS NULL";
    let named = "SELECT p.id, p.name, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id \
                 WHERE p.deleted_at IS NULL";
    // Every other operator of a filter, NULLs and three-valued logic included.
    let operators = "SELECT id, status, price FROM products WHERE (status IN ('active', 'gone') OR name LIKE 'new 1%') \
                     AND NOT (price BETWEEN 20 AND 30) AND price <> 99 AND (price > 5 OR price IS NULL) \
                     AND id <= 2000";
    // The same join with its unambiguous columns unqualified: placed by information_schema's columns at start.
    let placed = "SELECT p.id, c.name AS category, price FROM products p JOIN categories c ON c.id = category_id \
                  WHERE deleted_at IS NULL";
    format!(
        r#"
[[warm]]
name = "named"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "{named}"
refresh_query = "{named} AND p.id = :id"
key = "{prefix}named:{{id}}"
ttl = "1h"

[[warm]]
name = "operators"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "{operators}"
refresh_query = "{operators} AND id = :id"
key = "{prefix}operators:{{id}}"
ttl = "1h"

[[warm]]
name = "operators_bare"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "{operators}"
key = "{prefix}operators_bare:{{id}}"
ttl = "1h"

[[warm]]
name = "placed"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "{placed}"
refresh_query = "{placed} AND p.id = :id"
key = "{prefix}placed:{{id}}"
ttl = "1h"

[[warm]]
name = "left"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT p.id, c.name AS category FROM products p LEFT JOIN categories c ON p.category_id = c.id"
key = "{prefix}left:{{id}}"
ttl = "1h"

[[warm]]
name = "active"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "{active}"
refresh_query = "{active} AND id = :id"
key = "{prefix}active:{{id}}"
ttl = "1h"

[[warm]]
name = "cheap"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, price FROM products WHERE price < 10"
key = "{prefix}cheap:{{id}}"
ttl = "1h"

[[warm]]
name = "per_category"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT category_id, COUNT(*) AS n, SUM(price) AS total FROM products WHERE deleted_at IS NULL GROUP BY category_id"
key = "{prefix}cat:{{category_id}}"
ttl = "1h"

[[warm]]
name = "per_category_read"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT category_id, COUNT(*) AS n, SUM(price) AS total FROM products WHERE deleted_at IS NULL GROUP BY category_id"
refresh_query = "SELECT category_id, COUNT(*) AS n, SUM(price) AS total FROM products WHERE deleted_at IS NULL AND category_id = :category_id GROUP BY category_id"
key = "{prefix}catr:{{category_id}}"
ttl = "1h"

[[warm]]
name = "live"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, title, price FROM live_products WHERE price >= 10"
refresh_query = "SELECT id, title, price FROM live_products WHERE price >= 10 AND id = :id"
key = "{prefix}live:{{id}}"
ttl = "1h"

[[warm]]
name = "sizes"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT category_id, n FROM category_sizes"
key = "{prefix}size:{{category_id}}"
ttl = "1h"

[[warm]]
name = "total"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT COUNT(*) AS n, MAX(price) AS top FROM products WHERE status = 'active'"
key = "{prefix}total"
ttl = "1h"

[[warm]]
name = "top"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name, price FROM products WHERE price IS NOT NULL ORDER BY price DESC, id LIMIT 5"
key = "{prefix}top:{{id}}"
ttl = "1h"
"#
    )
}

fn daemon_config(env: &TestEnv) -> String {
    daemon_config_of(env, jobs)
}

fn daemon_config_of(env: &TestEnv, jobs: fn(&str) -> String) -> String {
    format!(
        "{connections}{binlog}{jobs}",
        connections = env.connection_toml(),
        binlog = env.binlog_toml("on_gap = \"none\"\nderive_rules = true\nderive_debounce = \"1s\""),
        jobs = jobs(&env.prefix),
    )
}

/// Differences between the cache and what every job's query returns now (warmed into `{prefix}exp:` by
/// `run --once`, through the same rendering): keys whose value differs, and keys of rows the query no longer
/// returns. A missing key is a miss, not a difference.
async fn differences(env: &TestEnv) -> Vec<String> {
    differences_of(env, jobs).await
}

/// [`differences`] for the jobs `jobs` gives (under a key prefix).
async fn differences_of(env: &TestEnv, jobs: fn(&str) -> String) -> Vec<String> {
    let expected = format!("{}exp:", env.prefix);
    let mut redis = env.redis().await;
    let stale: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|key| key.starts_with(&expected))
        .collect();
    if !stale.is_empty() {
        let _: () = redis::cmd("DEL").arg(&stale).query_async(&mut redis).await.unwrap();
    }
    let config = env.write_file(
        "expected.toml",
        &format!(
            "{}[channel]\nenabled = false\n{}",
            env.connection_toml(),
            jobs(&expected)
        ),
    );
    run_once_ok(&config);
    let keys = env.keys().await;
    let mut differences = Vec::new();
    for key in &keys {
        if key.starts_with(&expected) || key.ends_with("checkpoint") {
            continue;
        }
        let name = &key[env.prefix.len()..];
        let want = env.get(&format!("{expected}{name}")).await;
        let have = env.get(key).await;
        match want {
            Some(want) if Some(&want) != have.as_ref() => {
                differences.push(format!("{name}: cached {have:?}, the query returns {want}"))
            }
            None => differences.push(format!("{name}: cached {have:?}, the query returns no such row")),
            _ => {}
        }
    }
    differences
}

/// Random single-row inserts, updates (in and out of the filters, NULLs, collation-equal texts, moved keys,
/// reassigned categories) and deletes, some in multi-statement transactions.
async fn random_writes(env: &TestEnv, seed: u64, count: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let mut next_id = 1000;
    let statuses = ["active", "hidden", "Active", "ACTIVE ", "gone"];
    let prices = ["NULL", "5.00", "9.99", "10.00", "25.50", "99.00", "10"];
    let mut in_transaction = false;
    for _ in 0..count {
        let id = rng.u32(1..60);
        let statement = match rng.u32(0..100) {
            0..25 => format!(
                "UPDATE products SET status = '{}' WHERE id = {id}",
                statuses[rng.usize(..statuses.len())]
            ),
            25..50 => format!(
                "UPDATE products SET price = {} WHERE id = {id}",
                prices[rng.usize(..prices.len())]
            ),
            50..56 => format!("UPDATE products SET category_id = {} WHERE id = {id}", rng.u32(1..9)),
            56..62 => {
                let category = rng.u32(1..9);
                match rng.u32(0..4) {
                    0 => format!("DELETE FROM categories WHERE id = {category}"),
                    1 => format!("INSERT IGNORE INTO categories VALUES ({category}, 'back {category}')"),
                    2 => format!("UPDATE categories SET name = UPPER(name) WHERE id = {category}"),
                    _ => format!("UPDATE categories SET name = CONCAT(name, '!') WHERE id = {category}"),
                }
            }
            62..70 => format!(
                "UPDATE products SET deleted_at = {} WHERE id = {id}",
                if rng.bool() { "NOW()" } else { "NULL" }
            ),
            70..80 => {
                next_id += 1;
                format!(
                    "INSERT INTO products VALUES ({next_id}, {}, 'new {next_id}', '{}', {}, NULL)",
                    rng.u32(1..6),
                    statuses[rng.usize(..statuses.len())],
                    prices[rng.usize(..prices.len())]
                )
            }
            80..90 => format!("DELETE FROM products WHERE id = {id}"),
            90..95 => {
                next_id += 1;
                format!("UPDATE products SET id = {next_id} WHERE id = {id}")
            }
            _ => {
                in_transaction = !in_transaction;
                (if in_transaction { "BEGIN" } else { "COMMIT" }).to_string()
            }
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    if in_transaction {
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    }
}

/// Fails the test, naming the writes' `seed`, unless every job's keys come to equal what its query renders (see
/// [`settled`]).
async fn assert_settled(env: &TestEnv, jobs: fn(&str) -> String, seed: u64, daemon: &Daemon) {
    let last = settled(env, jobs).await;
    assert!(
        last.is_empty(),
        "seed {seed}: {} differences after the writes settled, e.g. {:#?}\n{}",
        last.len(),
        &last[..last.len().min(10)],
        daemon.log()
    );
}

/// Polls [`differences_of`] until none are left or 30 s passed (the binlog applied, the debounced re-runs done); the
/// last ones.
async fn settled(env: &TestEnv, jobs: fn(&str) -> String) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = differences_of(env, jobs).await;
    while !last.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = differences_of(env, jobs).await;
    }
    last
}

async fn derived_rules_keep_every_key_right(env: TestEnv) {
    env.sql(SCHEMA).await;
    let mut seed_rows = Vec::new();
    for id in 1..60 {
        let price = if id % 7 == 0 {
            "NULL".to_string()
        } else {
            format!("{}.50", id % 30)
        };
        let status = if id % 3 == 0 { "hidden" } else { "active" };
        seed_rows.push(format!(
            "({id}, {}, 'product {id}', '{status}', {price}, NULL)",
            id % 5 + 1
        ));
    }
    env.sql(&format!(
        "INSERT INTO categories VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e');\nINSERT INTO products VALUES {}",
        seed_rows.join(", ")
    ))
    .await;
    // Views, read from the server: a one-table view merged into its job, a grouping one re-runs its job.
    let check = env.write_file("check.toml", &daemon_config(&env));
    let (code, out) = env.run_cli(&["check", "--connect"], &check);
    assert_eq!(code, Some(0), "{out}");
    let live = out.split("  live:").nth(1).unwrap_or_default();
    assert!(
        live.contains(&format!("(reads the view {}.live_products (merged))", env.database))
            && live.contains(&format!(
                "{}.products  derived: a changed row refreshes its key",
                env.database
            )),
        "{out}"
    );
    assert!(
        out.contains("category_sizes, which groups or removes duplicate rows: a change in its base tables re-runs"),
        "{out}"
    );
    // The join whose columns are unqualified is followed like the qualified one (offline it is TTL only).
    let placed = out.split("  placed:").nth(1).unwrap_or_default();
    assert!(
        placed.contains("categories  derived: a changed row refreshes the keys of the products rows that join it"),
        "{out}"
    );
    let daemon = common::following(&env, &daemon_config(&env)).await;
    common::first_run(&env, &daemon, "top").await;
    let seed = fastrand::u64(..);
    random_writes(&env, seed, 400).await;
    assert_settled(&env, jobs, seed, &daemon).await;
    // The grouped job with a refresh path was refreshed per group, never re-run.
    let reruns = metric(
        &env,
        "cachewarden_warm_runs_total{warm_job=\"per_category_read\",outcome=\"success\"}",
    )
    .await;
    assert_eq!(reruns, 1.0, "only the start-up run:\n{}", daemon.log());
    // The joined table's changes went through the derived lookups.
    for job in ["named", "placed"] {
        let looked_up = metric(
            &env,
            &format!("cachewarden_binlog_lookup_keys_total{{warm_job=\"{job}\"}}"),
        )
        .await;
        assert!(looked_up > 0.0, "no lookup found {job}'s keys:\n{}", daemon.log());
    }
    // The filters and the placed join are followed row by row, never re-run.
    for job in ["placed", "operators", "operators_bare"] {
        let runs = format!("cachewarden_warm_runs_total{{warm_job=\"{job}\",outcome=\"success\"}}");
        assert_eq!(metric(&env, &runs).await, 1.0, "{job} re-ran:\n{}", daemon.log());
    }
}
