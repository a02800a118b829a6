//! Invalidation derived from the SQL: a configuration with only `[[warm]]` jobs (no `[[on_change]]`) keeps its keys
//! right under random inserts, updates and deletes, on MariaDB and on MySQL; `check` names what is not covered and
//! why; `rules` prints the derived rules so that they can be frozen.

mod common;

use std::time::Duration;

use common::{Daemon, TestEnv, cachewarden, eventually, metric, text, wait_for_admin};
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
    let server_id = 10_000 + fastrand::u32(..1_000_000);
    format!(
        r#"{connections}[channel]
enabled = false

[binlog]
server_id = {server_id}
checkpoint_key = "{p}checkpoint"
heartbeat = "1s"
on_gap = "none"
derive_rules = true
derive_debounce = "1s"
{jobs}"#,
        connections = env.connection_toml(),
        p = env.prefix,
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
    let output = cachewarden()
        .args(["run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
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

/// Polls [`differences_of`] until none are left or 30 s passed; the last ones.
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
    let warmed = eventually(Duration::from_secs(20), || async {
        (metric(
            &env,
            "cachewarden_warm_runs_total{warm_job=\"top\",outcome=\"success\"}",
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(warmed.is_some(), "the jobs ran on start:\n{}", daemon.log());
    let seed = fastrand::u64(..);
    random_writes(&env, seed, 400).await;
    // Settled: the binlog applied, the debounced re-runs done; polled, as a benchmark measures how long it takes.
    let last = settled(&env, jobs).await;
    assert!(
        last.is_empty(),
        "seed {seed}: {} differences after the writes settled, e.g. {:#?}\n{}",
        last.len(),
        &last[..last.len().min(10)],
        daemon.log()
    );
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

#[tokio::test]
async fn with_only_warm_jobs_derived_rules_keep_every_key_right_under_random_writes() {
    let _binlog = common::binlog_shared();
    derived_rules_keep_every_key_right(TestEnv::new().await).await;
}

#[tokio::test]
async fn on_mysql_derived_rules_keep_every_key_right_under_random_writes_and_cascades() {
    let server = common::OwnMySql::start(41);
    derived_rules_keep_every_key_right(TestEnv::new().await.on_mysql(&server).await).await;
    cascades_keep_every_key_right(TestEnv::new().await.on_mysql(&server).await, false).await;
}

#[tokio::test]
async fn changes_that_foreign_keys_cascade_below_the_binlog_leave_no_stale_key() {
    let _binlog = common::binlog_shared();
    cascades_keep_every_key_right(TestEnv::new().await, true).await;
}

/// Four tables chained by foreign keys that cascade (sections → categories → products → reviews): a parent's delete
/// or id change changes children the binlog never shows.
const CASCADE_SCHEMA: &str = "
CREATE TABLE sections (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL) ENGINE=InnoDB;
CREATE TABLE categories (
  id INT PRIMARY KEY, section_id INT NOT NULL, name VARCHAR(40) NOT NULL,
  CONSTRAINT fk_section FOREIGN KEY (section_id) REFERENCES sections (id) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB;
CREATE TABLE products (
  id INT PRIMARY KEY, category_id INT NULL, name VARCHAR(40) NOT NULL,
  CONSTRAINT fk_category FOREIGN KEY (category_id) REFERENCES categories (id) ON DELETE SET NULL ON UPDATE CASCADE
) ENGINE=InnoDB;
CREATE TABLE reviews (
  id INT PRIMARY KEY, product_id INT NOT NULL, stars INT NOT NULL,
  CONSTRAINT fk_product FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB";

/// Jobs over the chained tables: rows with a refresh path, an inner join, a key holding the foreign key, rows of the
/// last table, and groups of it.
fn cascade_jobs(prefix: &str) -> String {
    let named = "SELECT p.id, c.name AS category, s.name AS section FROM products p \
                 JOIN categories c ON c.id = p.category_id JOIN sections s ON s.id = c.section_id";
    format!(
        r#"
[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, category_id, name FROM products"
refresh_query = "SELECT id, category_id, name FROM products WHERE id = :id"
key = "{prefix}p:{{id}}"
ttl = "1h"

[[warm]]
name = "named"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "{named}"
key = "{prefix}named:{{id}}"
ttl = "1h"

[[warm]]
name = "incat"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, category_id, name FROM products WHERE category_id IS NOT NULL"
key = "{prefix}incat:{{category_id}}:{{id}}"
ttl = "1h"

[[warm]]
name = "reviews"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, product_id, stars FROM reviews"
refresh_query = "SELECT id, product_id, stars FROM reviews WHERE id = :id"
key = "{prefix}r:{{id}}"
ttl = "1h"

[[warm]]
name = "category_names"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT name, id FROM categories"
key = "{prefix}cname:{{name}}"
ttl = "1h"

[[warm]]
name = "stars"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT product_id, COUNT(*) AS n, SUM(stars) AS total FROM reviews GROUP BY product_id"
key = "{prefix}stars:{{product_id}}"
ttl = "1h"
"#
    )
}

/// Random deletes and id changes of parents (each cascading), inserts (some refused by a foreign key: IGNORE) and
/// plain updates.
async fn random_parent_writes(env: &TestEnv, seed: u64, count: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let mut next = 1000;
    for _ in 0..count {
        next += 1;
        let statement = match rng.u32(0..100) {
            0..6 => format!("DELETE FROM sections WHERE id = {}", rng.u32(1..5)),
            6..10 => format!("UPDATE sections SET id = {next} WHERE id = {}", rng.u32(1..5)),
            10..14 => format!(
                "INSERT IGNORE INTO sections VALUES ({}, 'section again')",
                rng.u32(1..5)
            ),
            14..24 => format!("DELETE FROM categories WHERE id = {}", rng.u32(1..12)),
            24..30 => format!("UPDATE categories SET id = {next} WHERE id = {}", rng.u32(1..12)),
            30..38 => format!(
                "INSERT IGNORE INTO categories VALUES ({}, {}, 'category again')",
                rng.u32(1..12),
                rng.u32(1..5)
            ),
            38..44 => format!(
                "UPDATE categories SET name = CONCAT(name, '!') WHERE id = {}",
                rng.u32(1..12)
            ),
            44..54 => format!("DELETE FROM products WHERE id = {}", rng.u32(1..40)),
            54..62 => format!("UPDATE products SET id = {next} WHERE id = {}", rng.u32(1..40)),
            62..72 => format!(
                "INSERT IGNORE INTO products VALUES ({}, {}, 'product again')",
                rng.u32(1..40),
                rng.u32(1..12)
            ),
            72..80 => format!(
                "UPDATE IGNORE products SET category_id = {} WHERE id = {}",
                rng.u32(1..12),
                rng.u32(1..40)
            ),
            80..90 => format!(
                "INSERT IGNORE INTO reviews VALUES ({next}, {}, {})",
                rng.u32(1..40),
                rng.u32(1..6)
            ),
            _ => format!(
                "UPDATE reviews SET stars = {} WHERE id % 7 = {}",
                rng.u32(1..6),
                rng.u32(0..7)
            ),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// `hidden`: the server applies cascades below the binlog (MariaDB, MySQL up to 8.4), so what they removed can only be
/// pruned; MySQL 9's SQL-layer foreign keys log the children's rows as well.
async fn cascades_keep_every_key_right(env: TestEnv, hidden: bool) {
    env.sql(CASCADE_SCHEMA).await;
    let sections: Vec<String> = (1..5).map(|id| format!("({id}, 'section {id}')")).collect();
    let categories: Vec<String> = (1..12)
        .map(|id| format!("({id}, {}, 'category {id}')", id % 4 + 1))
        .collect();
    let products: Vec<String> = (1..40)
        .map(|id| format!("({id}, {}, 'product {id}')", id % 11 + 1))
        .collect();
    let reviews: Vec<String> = (1..120)
        .map(|id| format!("({id}, {}, {})", id % 39 + 1, id % 5 + 1))
        .collect();
    env.sql(&format!(
        "INSERT INTO sections VALUES {};\nINSERT INTO categories VALUES {};\nINSERT INTO products VALUES {};\n\
         INSERT INTO reviews VALUES {}",
        sections.join(", "),
        categories.join(", "),
        products.join(", "),
        reviews.join(", ")
    ))
    .await;
    let config = daemon_config_of(&env, cascade_jobs);
    let path = env.write_file("cascade.toml", &config);
    // What `check --connect` says of the parents: their cascades, and what a change there does.
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{out}");
    let sections_line = format!(
        "{}.sections  derived: the database changes rows the binlog does not show",
        env.database
    );
    assert!(out.contains(&sections_line), "{out}");
    assert!(
        out.contains("products.fk_category ON DELETE SET NULL ON UPDATE CASCADE"),
        "{out}"
    );
    // Known from the server too: a key over columns that are no unique key re-runs its job.
    assert!(
        out.contains("its key columns (name) are not a primary or unique key of"),
        "{out}"
    );
    let (code, rules) = env.run_cli(&["rules", "--connect", "--job", "reviews"], &path);
    assert_eq!(code, Some(0), "{rules}");
    assert!(rules.contains("events = [\"update\", \"delete\"]"), "{rules}");

    let daemon = common::following(&env, &config).await;
    let warmed = eventually(Duration::from_secs(20), || async {
        (metric(
            &env,
            "cachewarden_warm_runs_total{warm_job=\"stars\",outcome=\"success\"}",
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(warmed.is_some(), "the jobs ran on start:\n{}", daemon.log());
    let seed = fastrand::u64(..);
    random_parent_writes(&env, seed, 150).await;
    let last = settled(&env, cascade_jobs).await;
    assert!(
        last.is_empty(),
        "seed {seed}: {} differences after the writes settled, e.g. {:#?}\n{}",
        last.len(),
        &last[..last.len().min(10)],
        daemon.log()
    );
    if !hidden {
        return;
    }
    // What the cascades removed went through pruning.
    let mut pruned = 0.0;
    for job in ["products", "named", "incat", "reviews", "stars"] {
        pruned += metric(
            &env,
            &format!("cachewarden_warm_keys_pruned_total{{warm_job=\"{job}\"}}"),
        )
        .await;
    }
    assert!(pruned > 0.0, "no cascaded delete was pruned:\n{}", daemon.log());
}

#[tokio::test]
async fn without_derived_rules_the_same_writes_leave_stale_keys() {
    // The test above can fail: with derive_rules off nothing follows the writes.
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql("INSERT INTO products VALUES (1, 1, 'one', 'active', 20.00, NULL), (2, 1, 'two', 'active', 5.00, NULL)")
        .await;
    let path = env.write_file(
        "jobs.toml",
        &daemon_config(&env).replace("derive_rules = true", "derive_rules = false"),
    );
    let daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let warmed = eventually(Duration::from_secs(20), || async {
        (metric(
            &env,
            "cachewarden_warm_runs_total{warm_job=\"top\",outcome=\"success\"}",
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(warmed.is_some(), "{}", daemon.log());
    env.sql("UPDATE products SET status = 'hidden' WHERE id = 1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let differences = differences(&env).await;
    assert!(
        differences.iter().any(|d| d.starts_with("active:1:")),
        "{differences:?}"
    );
}

#[test]
fn check_names_what_is_not_covered_and_rules_prints_what_can_be_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let connections = "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n";
    let binlog = "[binlog]\nserver_id = 7\nderive_rules = true\n";
    let jobs = r#"
[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT p.id, p.name, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id WHERE p.status = 'active'"
refresh_query = "SELECT p.id, p.name, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id WHERE p.status = 'active' AND p.id = :id"
key = "product:{id}"
ttl = "1h"

[[warm]]
name = "regional"
schedule = "every 1h"
query = "SELECT p.id, r.name AS region FROM products p JOIN categories c ON c.id = p.category_id JOIN regions r ON r.id = c.region_id"
key = "regional:{id}"
ttl = "2h"

[[warm]]
name = "counts"
schedule = "every 1h"
query = "SELECT category_id, COUNT(*) AS n FROM products GROUP BY category_id"
key = "count:{category_id}"
ttl = "1h"

[[warm]]
name = "recent"
schedule = "every 1h"
query = "SELECT id FROM orders WHERE created_at > NOW() - INTERVAL 1 DAY"
key = "recent:{id}"
ttl = "10m"
"#;
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, format!("{connections}{binlog}{jobs}")).unwrap();
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = common::cli_output(args, &path);
        (code, (stdout, stderr))
    };
    let (code, (stdout, _)) = run(&["check"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("shop.products  derived: a changed row refreshes its key"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "shop.categories  derived: a changed row refreshes the keys of the products rows that join it \
             (c.id = p.category_id)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop.regions  derived: it joins r through another table")
            && stdout.contains("a change re-runs the job (debounced"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recent: TTL only: NOW() changes without any row changing"),
        "{stdout}"
    );
    assert!(stdout.contains("keys may stay stale up to the TTL (10m)"), "{stdout}");
    let (code, (_, stderr)) = run(&["check", "--strict"]);
    assert_eq!(code, Some(78), "{stderr}");

    // Frozen: derive_rules off, the printed rules pasted in; the effective rules are the same.
    let (code, (rules, _)) = run(&["rules"]);
    assert_eq!(code, Some(0));
    assert!(rules.contains("where = \"`status` = 'active'\""), "{rules}");
    assert!(rules.contains("warm = [\"counts\"]"), "{rules}");
    assert!(
        rules.contains(
            "lookup = { job = \"products\", table = \"shop.products\", on = { category_id = \"id\" }, \
             key = \"product:{id}\", refresh = true }"
        ),
        "{rules}"
    );
    let frozen = format!("{connections}[binlog]\nserver_id = 7\nderive_debounce = \"30s\"\n{jobs}\n{rules}");
    std::fs::write(&path, frozen).unwrap();
    let (code, (refrozen, stderr)) = run(&["rules"]);
    assert_eq!(code, Some(0), "{stderr}");
    let headless = |text: &str| -> String {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(headless(&refrozen), headless(&rules));
    let (_, (stdout, _)) = run(&["rules", "--format", "json", "--job", "counts"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{stdout}");
    assert_eq!(json[0]["table"], "shop.products");
    let (code, _) = run(&["rules", "--job", "nope"]);
    assert_eq!(code, Some(64));
}

#[test]
fn check_names_every_shape_the_binlog_cannot_follow_and_the_rule_that_covers_it_where_one_can() {
    let dir = tempfile::tempdir().unwrap();
    // (query, key placeholder, what check must say, whether a re-run on any change covers it)
    let shapes = [
        (
            "SELECT id FROM sessions WHERE seen > NOW() - INTERVAL 1 HOUR",
            "id",
            "NOW() changes without any row changing",
            false,
        ),
        (
            "SELECT id FROM products ORDER BY RAND()",
            "id",
            "RAND() changes without any row changing",
            false,
        ),
        (
            "SELECT id FROM products WHERE owner = @me",
            "id",
            "it reads the variable @me",
            false,
        ),
        (
            "SELECT id FROM products WHERE id IN (SELECT product_id FROM hits)",
            "id",
            "it has a subquery",
            true,
        ),
        (
            "SELECT id FROM products UNION SELECT id FROM archived",
            "id",
            "UNION",
            true,
        ),
        (
            "SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM products",
            "id",
            "it uses a window function (ROW_NUMBER)",
            true,
        ),
        ("SELECT LOWER(sku) AS sku FROM products", "sku", "computed", true),
        (
            "SELECT id FROM (SELECT id FROM products) AS t",
            "id",
            "derived table",
            true,
        ),
        (
            "WITH t AS (SELECT id FROM products) SELECT id FROM t",
            "id",
            "WITH",
            true,
        ),
        (
            "SELECT id FROM products p JOIN categories c ON c.id = p.category_id",
            "id",
            "qualified",
            true,
        ),
    ];
    let mut config = String::from(
        "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n\
         [binlog]\nserver_id = 7\nderive_rules = true\n",
    );
    for (index, (query, placeholder, _, _)) in shapes.iter().enumerate() {
        config.push_str(&format!(
            "\n[[warm]]\nname = \"shape{index}\"\nschedule = \"every 1h\"\nquery = \"{query}\"\n\
             key = \"shape{index}:{{{placeholder}}}\"\nttl = \"1h\"\n"
        ));
    }
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = common::cli_output(&["check"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // Each job's section: from its line to the next job's.
    for (index, (query, _, reason, coverable)) in shapes.iter().enumerate() {
        let start = stdout
            .find(&format!("  shape{index}: TTL only: "))
            .unwrap_or_else(|| panic!("{query}: not named TTL only:\n{stdout}"));
        let section = &stdout[start..];
        let section = &section[..section[2..].find("\n  shape").map_or(section.len(), |end| end + 2)];
        assert!(section.contains(reason), "{query}: {section}");
        let suggested = section.contains(&format!("warm = [\"shape{index}\"]"));
        assert_eq!(suggested, *coverable, "{query}: {section}");
    }

    // The subquery job alone with the rules check suggests pasted in: covered, so check --strict passes.
    let start = stdout.find("  shape3: TTL only").unwrap();
    let section = &stdout[start..stdout[start + 2..].find("\n  shape").unwrap() + start + 2];
    let suggested: String = section
        .lines()
        .filter_map(|line| line.strip_prefix("        "))
        .map(|line| format!("{line}\n"))
        .collect();
    let (query, ..) = shapes[3];
    std::fs::write(
        &path,
        format!(
            "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n\
             [binlog]\nserver_id = 7\n\n[[warm]]\nname = \"shape3\"\nschedule = \"every 1h\"\nquery = \"{query}\"\n\
             key = \"shape3:{{id}}\"\nttl = \"1h\"\n\n{suggested}"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = common::cli_output(&["check", "--strict"], &path);
    assert_eq!(code, Some(0), "{suggested}\n{stdout}{stderr}");
    assert!(stdout.contains("explicit rules cover every table"), "{stdout}");
}

#[tokio::test]
async fn a_row_pushed_out_of_a_top_n_by_another_loses_its_key() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE scores (id INT PRIMARY KEY, points INT NOT NULL);
         INSERT INTO scores VALUES (1, 10), (2, 9), (3, 1)",
    )
    .await;
    let jobs = |prefix: &str| {
        format!(
            "\n[[warm]]\nname = \"leaders\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
             query = \"SELECT id, points FROM scores ORDER BY points DESC LIMIT 2\"\n\
             key = \"{prefix}leader:{{id}}\"\nttl = \"1h\"\n"
        )
    };
    let daemon = common::following(&env, &daemon_config_of(&env, jobs)).await;
    let leader = |id: u32| {
        let key = format!("{}leader:{id}", env.prefix);
        let env = &env;
        async move { env.get(&key).await }
    };
    let warmed = eventually(Duration::from_secs(20), || async { leader(2).await.map(|_| ()) }).await;
    assert!(warmed.is_some(), "{}", daemon.log());
    // Row 3 passes row 2, which itself did not change: the re-run prunes its key.
    env.sql("UPDATE scores SET points = 20 WHERE id = 3").await;
    let pruned = eventually(Duration::from_secs(20), || async {
        (leader(2).await.is_none() && leader(3).await.is_some()).then_some(())
    })
    .await;
    assert!(pruned.is_some(), "{}", daemon.log());
    assert!(leader(1).await.is_some());
}

#[tokio::test]
async fn a_joined_change_reaching_more_keys_than_max_fanout_re_runs_the_job_instead() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE brands (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL);
         CREATE TABLE items (id INT PRIMARY KEY, brand_id INT NOT NULL, KEY (brand_id));
         INSERT INTO brands VALUES (1, 'big'), (2, 'small');
         INSERT INTO items VALUES (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (7, 2)",
    )
    .await;
    // `max_fanout` belongs to [binlog], which daemon_config_of leaves open just before the jobs.
    let jobs = |prefix: &str| {
        let query = "SELECT i.id, b.name AS brand FROM items i JOIN brands b ON b.id = i.brand_id";
        format!(
            "max_fanout = 3\n\n[[warm]]\nname = \"items\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
             query = \"{query}\"\nrefresh_query = \"{query} WHERE i.id = :id\"\n\
             key = \"{prefix}item:{{id}}\"\nttl = \"1h\"\n"
        )
    };
    let daemon = common::following(&env, &daemon_config_of(&env, jobs)).await;
    let brand = |id: u32| {
        let key = format!("{}item:{id}", env.prefix);
        let env = &env;
        async move { env.get(&key).await.filter(|value| value.contains(r#""brand":"#)) }
    };
    let warmed = eventually(Duration::from_secs(20), || async { brand(7).await }).await;
    assert!(warmed.is_some(), "{}", daemon.log());
    let rewarms = r#"cachewarden_binlog_lookup_rewarms_total{warm_job="items",reason="fanout"}"#;
    let looked_up = r#"cachewarden_binlog_lookup_keys_total{warm_job="items"}"#;

    // Two keys: within max_fanout, looked up and refreshed.
    env.sql("UPDATE brands SET name = 'tiny' WHERE id = 2").await;
    let refreshed = eventually(Duration::from_secs(20), || async {
        let (six, seven) = (brand(6).await?, brand(7).await?);
        (six.contains("tiny") && seven.contains("tiny")).then_some(())
    })
    .await;
    assert!(refreshed.is_some(), "{}", daemon.log());
    assert_eq!(metric(&env, looked_up).await, 2.0);
    assert_eq!(metric(&env, rewarms).await, 0.0);

    // Five keys: more than max_fanout, so the job runs again (and every key still ends right).
    env.sql("UPDATE brands SET name = 'huge' WHERE id = 1").await;
    let rerun = eventually(Duration::from_secs(20), || async {
        for id in 1..=5 {
            brand(id).await?.contains("huge").then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(rerun.is_some(), "{}", daemon.log());
    assert_eq!(metric(&env, rewarms).await, 1.0, "{}", daemon.log());
    assert_eq!(
        metric(&env, looked_up).await,
        2.0,
        "the over-wide lookup's keys are not counted as refreshed"
    );
    assert!(daemon.log().contains("more keys than max_fanout"), "{}", daemon.log());
}
