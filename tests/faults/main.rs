//! Changes that must reach the cache through faults that lose Redis's writes: a Redis restarted without persistence
//! (the checkpoint gone) and a failover to a replica that was behind (the checkpoint and the invalidations before it
//! rolled back). The binlog resumes from the earlier of Redis's checkpoint and the position it saved last.

#[path = "../common/mod.rs"]
mod common;
mod degraded;
mod gaps;
mod redis_loss;

use std::time::Duration;

use common::proxy::Proxy;
use common::{Daemon, OwnRedis, TestEnv, eventually, following as start, get, metric, run_once_ok, wait_for_admin};
use sqlx::Connection as _;

const SCHEMA: &str = "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)";

/// A daemon following `env`'s database with a delete rule on products, its Redis at `redis_url`.
fn config(env: &TestEnv, redis_url: &str, on_gap: &str) -> String {
    let p = &env.prefix;
    format!(
        r#"[mysql]
url = "{mysql}"

[redis]
url = "{redis_url}"

[admin]
listen = "{admin}"

{binlog}
[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
query = "SELECT id, name FROM products"
key = "{p}p:{{id}}"
ttl = "1h"

[[on_change]]
table = "products"
delete = ["{p}p:{{id}}"]
"#,
        mysql = env.mysql_url,
        admin = env.admin_addr(),
        binlog = env.binlog_toml(&format!("on_gap = \"{on_gap}\"")),
    )
}

async fn seed(env: &TestEnv, rows: u32) {
    env.sql(SCHEMA).await;
    let values: Vec<String> = (1..=rows).map(|id| format!("({id}, 'p{id}')")).collect();
    env.sql(&format!("INSERT INTO products VALUES {}", values.join(", ")))
        .await;
}

async fn exists(conn: &redis::aio::MultiplexedConnection, keys: &[String]) -> usize {
    redis::cmd("EXISTS")
        .arg(keys)
        .query_async(&mut conn.clone())
        .await
        .unwrap_or(usize::MAX)
}
