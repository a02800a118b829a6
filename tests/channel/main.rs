//! The invalidation channel against real Redis (and MariaDB for refresh): every message kind, allow-list refusals,
//! large pattern deletes without KEYS, resync after a killed subscription, streams across restarts and dead
//! consumers, a burst beyond the pub/sub buffer limit, and bounded memory while applying is stuck.

#[path = "../common/mod.rs"]
mod common;
mod load;
mod messages;
mod resync;

use std::time::Duration;

use common::{Daemon, TestEnv, becomes, cli_output, eventually, free_port, get, metric, wait_for_admin};
use sqlx::{Connection as _, Executor as _};

const PRODUCTS: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO products VALUES (1, 'Kettle', 19.90), (2, 'Lamp', 5.00), (3, 'Chair', 120.00)
";

/// Jobs and a channel of this test's own: products with a per-key refresh query, and a single-key summary.
fn config(env: &TestEnv, channel: &str) -> String {
    let p = &env.prefix;
    format!(
        r#"[channel]
{channel}

[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name, price FROM products"
refresh_query = "SELECT id, name, price FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"

[[warm]]
name = "summary"
schedule = "0 0 0 1 1 *"
query = "SELECT COUNT(*) AS products FROM products"
key = "{p}summary"
shape = "object"
ttl = "1h"
"#
    )
}

async fn set(env: &TestEnv, key: &str, value: &str) {
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn publish(env: &TestEnv, channel: &str, message: &str) {
    let mut conn = env.redis().await;
    let _: u64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Starts the daemon and waits until it has subscribed to `channel`.
async fn start(env: &TestEnv, body: &str, channel: &str) -> Daemon {
    let path = env.config_file(body);
    let daemon = Daemon::start(env, &path, &[], &[]);
    wait_for_admin(env).await;
    let mut conn = env.redis().await;
    let subscribed = eventually(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            let (_, count): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut conn)
                .await
                .ok()?;
            (count >= 1).then_some(())
        }
    })
    .await;
    assert!(subscribed.is_some(), "daemon never subscribed to {channel}");
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    daemon
}
