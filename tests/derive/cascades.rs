//! Changes that foreign keys cascade below the binlog leave no stale key.

use super::*;

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
    common::first_run(&env, &daemon, "stars").await;
    let seed = fastrand::u64(..);
    random_parent_writes(&env, seed, 150).await;
    assert_settled(&env, cascade_jobs, seed, &daemon).await;
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
async fn on_mysql_derived_rules_keep_every_key_right_under_random_writes_and_cascades() {
    let server = common::OwnMySql::start(41);
    derived_rules_keep_every_key_right(TestEnv::new().await.on_mysql(&server).await).await;
    cascades_keep_every_key_right(TestEnv::new().await.on_mysql(&server).await, false).await;
}
