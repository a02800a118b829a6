//! Binlog CDC against the binlog-enabled MariaDB and real Redis: row changes refresh and delete the right keys,
//! restarts resume from the checkpoint, kill -9 and Redis outages lose nothing, purged logs are recovered from, and
//! DDL mid-stream is followed.
//!
//! The binlog is server-wide: tests that purge it hold `common::binlog_exclusive`, the others `binlog_shared`.

mod changes;
#[path = "../common/mod.rs"]
mod common;
mod position;
mod recovery;
mod refusals;
mod sources;

use std::time::Duration;

use common::{Daemon, TestEnv, eventually, following_path as start, free_port, get, metric};
use sqlx::Connection as _;

const SCHEMA: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2), category_id INT, stock INT);
INSERT INTO products VALUES (1, 'Kettle', 19.90, 1, 5), (2, 'Lamp', 5.00, 1, 7), (3, 'Chair', 120.00, 2, 9)
";

/// `[binlog]`, a products job with a refresh query, and `rules`.
fn config(env: &TestEnv, binlog_extra: &str, rules: &str) -> String {
    let p = &env.prefix;
    format!(
        r#"{binlog}
[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name, price FROM products"
refresh_query = "SELECT id, name, price FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"

[[warm]]
name = "stats"
schedule = "0 0 0 1 1 *"
query = "SELECT COUNT(*) AS n, SUM(stock) AS stock FROM products"
key = "{p}stats"
shape = "object"
ttl = "1h"

{rules}
"#,
        binlog = env.binlog_toml(binlog_extra),
    )
}

fn products_rule(env: &TestEnv, extra: &str) -> String {
    let p = &env.prefix;
    format!(
        "[[on_change]]\ntable = \"{}.products\"\nrefresh = [\"{p}product:{{id}}\"]\n\
         delete = [\"{p}category:{{category_id}}:*\"]\n{extra}\n",
        env.database
    )
}

/// A counters job with a refresh query, and the rule that refreshes it.
fn counters_rules(env: &TestEnv) -> String {
    let p = &env.prefix;
    format!(
        "[[warm]]\nname = \"counters\"\nschedule = \"0 0 0 1 1 *\"\nquery = \"SELECT id, n FROM counters\"\n\
         refresh_query = \"SELECT id, n FROM counters WHERE id = :id\"\nkey = \"{p}counter:{{id}}\"\nttl = \"1h\"\n\n\
         [[on_change]]\ntable = \"{}.counters\"\nrefresh = [\"{p}counter:{{id}}\"]\n",
        env.database
    )
}

async fn value(env: &TestEnv, key: &str) -> Option<String> {
    env.get(&format!("{}{key}", env.prefix)).await
}

/// [`common::becomes`] for `key` under the test's prefix.
async fn becomes(env: &TestEnv, key: &str, expected: Option<&str>) -> bool {
    common::becomes(env, &format!("{}{key}", env.prefix), expected).await
}

async fn set(env: &TestEnv, key: &str) {
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}{key}", env.prefix))
        .arg("stale")
        .query_async(&mut conn)
        .await
        .unwrap();
}
