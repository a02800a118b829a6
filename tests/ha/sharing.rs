//! Work sharing: with several binlog sources under `[ha]`, each source is a lease of its own and the instances alive
//! spread them: one instance alone follows both, a second takes one over, a killed one's source is taken over
//! without losing a change, and one that comes back gets a source again. Each source is read by exactly one
//! instance at a time (its server's process list says so).

use super::*;

use common::OwnMariaDb;

/// `mariadb -e sql` on the server at `port`; its output.
fn on_server(port: u16, sql: &str) -> String {
    let output = std::process::Command::new("mariadb")
        .args([
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-uroot",
            "-N",
            "-e",
            sql,
        ])
        .output()
        .expect("mariadb runs");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The replication connections the server at `port` serves.
fn dump_threads(port: u16) -> usize {
    on_server(
        port,
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
    )
    .parse()
    .unwrap()
}

/// Whether the server at `port` comes to serve exactly one replication connection.
async fn one_reader(port: u16) -> bool {
    eventually(Duration::from_secs(10), || async {
        (dump_threads(port) == 1).then_some(())
    })
    .await
    .is_some()
}

/// Whether the instance at `addr` follows `source`.
async fn follows(addr: SocketAddr, source: &str) -> bool {
    metric_at(addr, &format!("cachewarden_binlog_following{{source=\"{source}\"}}")).await == 1.0
}

/// Waits until each source is followed by exactly one of `addrs`, and each of them follows `per_instance` sources.
async fn shared(addrs: &[SocketAddr], per_instance: usize) -> bool {
    eventually(Duration::from_secs(20), || async {
        let mut counts = vec![0; addrs.len()];
        for source in ["shop", "orders"] {
            let mut holders = 0;
            for (index, addr) in addrs.iter().enumerate() {
                if follows(*addr, source).await {
                    holders += 1;
                    counts[index] += 1;
                }
            }
            if holders != 1 {
                return None;
            }
        }
        counts.iter().all(|count| *count == per_instance).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn instances_share_the_sources_and_take_over_a_killed_ones_without_losing_a_change() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50))")
        .await;
    let orders = OwnMariaDb::start();
    on_server(
        orders.port,
        "CREATE DATABASE so; CREATE TABLE so.orders (id INT PRIMARY KEY, total INT)",
    );
    let p = &env.prefix;
    let body = format!(
        r#"[channel]
enabled = false

[[binlog]]
name = "shop"
checkpoint_key = "{p}checkpoint:shop"
heartbeat = "1s"

[[binlog]]
name = "orders"
url = "{orders_url}"
checkpoint_key = "{p}checkpoint:orders"
heartbeat = "1s"

[[on_change]]
source = "shop"
table = "products"
project = {{ key = "{p}product:{{id}}", columns = ["id", "name"], ttl = "1h" }}

[[on_change]]
source = "orders"
table = "so.orders"
project = {{ key = "{p}order:{{id}}", columns = ["id", "total"], ttl = "1h" }}
"#,
        orders_url = orders.url()
    );
    let (config_a, admin_a) = instance(&env, "a", "1s", &body);
    let (config_b, admin_b) = instance(&env, "b", "1s", &body);
    let mut a = Daemon::start(&env, &config_a, &[], &[]);
    assert!(
        shared(&[admin_a], 2).await,
        "alone, a follows both sources:\n{}",
        a.log()
    );
    let mut b = Daemon::start(&env, &config_b, &[], &[]);
    assert!(
        shared(&[admin_a, admin_b], 1).await,
        "a did not hand one source to b:\n{}\n{}",
        a.log(),
        b.log()
    );
    // (A replication connection given up lingers on the server until its next heartbeat fails to send: at most 1 s.)
    assert!(
        one_reader(orders.port).await,
        "{} replication connections on the orders server",
        dump_threads(orders.port)
    );
    let status = ha(admin_a).await.unwrap();
    let held: Vec<bool> = (status["binlog_sources"].as_array().unwrap().iter())
        .map(|row| row["held_here"].as_bool().unwrap())
        .collect();
    assert_eq!(held.iter().filter(|held| **held).count(), 1, "{status}");

    env.sql("INSERT INTO products VALUES (1, 'Kettle')").await;
    on_server(orders.port, "INSERT INTO so.orders VALUES (7, 70)");
    let value = |key: &str| format!("{p}{key}");
    assert!(common::becomes(&env, &value("product:1"), Some(r#"{"id":1,"name":"Kettle"}"#)).await);
    assert!(common::becomes(&env, &value("order:7"), Some(r#"{"id":7,"total":70}"#)).await);

    // kill -9 of the instance holding `orders`, with changes committed right after: the other takes the source over
    // from its checkpoint and applies them.
    let a_holds = follows(admin_a, "orders").await;
    let (killed, survivor, survivor_admin, killed_config) = match a_holds {
        true => (&mut a, &b, admin_b, &config_a),
        false => (&mut b, &a, admin_a, &config_b),
    };
    killed.signal("KILL");
    for id in 8..18 {
        on_server(orders.port, &format!("INSERT INTO so.orders VALUES ({id}, {id}0)"));
    }
    env.sql("UPDATE products SET name = 'Teapot' WHERE id = 1").await;
    for id in 8..18 {
        let expected = format!(r#"{{"id":{id},"total":{id}0}}"#);
        assert!(
            common::becomes(&env, &value(&format!("order:{id}")), Some(&expected)).await,
            "order {id} was lost in the takeover:\n{}",
            survivor.log()
        );
    }
    assert!(common::becomes(&env, &value("product:1"), Some(r#"{"id":1,"name":"Teapot"}"#)).await);
    assert!(
        shared(&[survivor_admin], 2).await,
        "the survivor follows both:\n{}",
        survivor.log()
    );
    assert!(
        one_reader(orders.port).await,
        "{} replication connections on the orders server",
        dump_threads(orders.port)
    );

    // The killed instance comes back: it gets a source again, and each is still read by one instance.
    let restarted = Daemon::start(&env, killed_config, &[], &[]);
    let (admin_killed, admin_survivor) = match a_holds {
        true => (admin_a, admin_b),
        false => (admin_b, admin_a),
    };
    assert!(
        shared(&[admin_killed, admin_survivor], 1).await,
        "no source went back to the restarted instance:\n{}\n{}",
        restarted.log(),
        survivor.log()
    );
    assert!(
        one_reader(orders.port).await,
        "{} replication connections on the orders server",
        dump_threads(orders.port)
    );
    on_server(orders.port, "UPDATE so.orders SET total = 71 WHERE id = 7");
    assert!(common::becomes(&env, &value("order:7"), Some(r#"{"id":7,"total":71}"#)).await);
}
