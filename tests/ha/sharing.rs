//! Work sharing: with several binlog sources under `[ha]`, each source is a lease of its own and the instances alive
//! spread them: one instance alone follows both, a second takes one over, a killed one's source is taken over
//! without losing a change, and one that comes back gets a source again. Each source is read by exactly one
//! instance at a time (its server's process list says so).

use super::*;

use std::sync::Arc;

use common::OwnMariaDb;

/// The first test's sources.
const SOURCES: &[&str] = &["shop", "orders"];

/// Whether the server `orders` comes to serve exactly one replication connection.
async fn one_reader(orders: &OwnMariaDb) -> bool {
    let urls = [orders.url()];
    let one = eventually(Duration::from_secs(10), || async {
        (readers(&urls).await == [1]).then_some(())
    });
    one.await.is_some()
}

/// Whether the instance at `addr` follows `source`.
async fn follows(addr: SocketAddr, source: &str) -> bool {
    metric_at(addr, &format!("cachewarden_binlog_following{{source=\"{source}\"}}")).await == 1.0
}

#[tokio::test]
async fn instances_share_the_sources_and_take_over_a_killed_ones_without_losing_a_change() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    let orders = OwnMariaDb::start();
    let body = common::shop_and_orders(&env, &orders).await;
    let p = &env.prefix;
    let (config_a, admin_a) = instance(&env, "a", "1s", &body);
    let (config_b, admin_b) = instance(&env, "b", "1s", &body);
    let mut a = Daemon::start(&env, &config_a, &[], &[]);
    assert!(
        spread(&[admin_a], SOURCES).await,
        "alone, a follows both sources:\n{}",
        a.log()
    );
    let mut b = Daemon::start(&env, &config_b, &[], &[]);
    assert!(
        spread(&[admin_a, admin_b], SOURCES).await,
        "a did not hand one source to b:\n{}\n{}",
        a.log(),
        b.log()
    );
    // (A replication connection given up lingers on the server until its next heartbeat fails to send: at most 1 s.)
    assert!(
        one_reader(&orders).await,
        "{} replication connections on the orders server",
        readers(&[orders.url()]).await[0]
    );
    let status = ha(admin_a).await.unwrap();
    let held: Vec<bool> = (status["binlog_sources"].as_array().unwrap().iter())
        .map(|row| row["held_here"].as_bool().unwrap())
        .collect();
    assert_eq!(held.iter().filter(|held| **held).count(), 1, "{status}");
    let page = admin::request(admin_a, Method::GET, "/").await.unwrap().body;
    assert!(
        page.contains("<td>followed by this instance</td><td>yes</td>")
            && page.contains("<td>followed by this instance</td><td>no: another instance follows it"),
        "the status page says which source this instance follows:\n{page}"
    );

    env.sql("INSERT INTO products VALUES (1, 'Kettle')").await;
    orders.sql("INSERT INTO so.orders VALUES (7, 70)");
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
        orders.sql(&format!("INSERT INTO so.orders VALUES ({id}, {id}0)"));
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
        spread(&[survivor_admin], SOURCES).await,
        "the survivor follows both:\n{}",
        survivor.log()
    );
    assert!(
        one_reader(&orders).await,
        "{} replication connections on the orders server",
        readers(&[orders.url()]).await[0]
    );

    // The killed instance comes back: it gets a source again, and each is still read by one instance.
    let restarted = Daemon::start(&env, killed_config, &[], &[]);
    let (admin_killed, admin_survivor) = match a_holds {
        true => (admin_a, admin_b),
        false => (admin_b, admin_a),
    };
    assert!(
        spread(&[admin_killed, admin_survivor], SOURCES).await,
        "no source went back to the restarted instance:\n{}\n{}",
        restarted.log(),
        survivor.log()
    );
    assert!(
        one_reader(&orders).await,
        "{} replication connections on the orders server",
        readers(&[orders.url()]).await[0]
    );
    orders.sql("UPDATE so.orders SET total = 71 WHERE id = 7");
    assert!(common::becomes(&env, &value("order:7"), Some(r#"{"id":7,"total":71}"#)).await);
}

/// Three instances and three sources — two MariaDB servers and a MySQL — under a steady stream of updates on all
/// three: a kill -9 and then a stop (SIGTERM) of each instance in turn, each brought back after. After each, every
/// source is followed by exactly one instance (its own metrics, and the server's process list); at the end every key
/// holds its row's last value (no change lost).
#[tokio::test]
async fn three_instances_share_three_sources_through_kills_and_stops_of_each_losing_no_change() {
    use sqlx::{Connection as _, Executor as _, Row as _};
    let env = TestEnv::new().await;
    let (m1, m2, my) = (OwnMariaDb::start(), OwnMariaDb::start(), common::OwnMySql::start(41));
    let servers = [("m1", m1.url()), ("m2", m2.url()), ("my", my.url())];
    let p = &env.prefix;
    let mut body = "[channel]\nenabled = false\n".to_string();
    for (name, url) in &servers {
        let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
        for statement in [
            "CREATE DATABASE s".to_string(),
            "CREATE TABLE s.t (id INT PRIMARY KEY, v INT)".to_string(),
            format!(
                "INSERT INTO s.t VALUES {}",
                (1..=20).map(|id| format!("({id}, 0)")).collect::<Vec<_>>().join(", ")
            ),
        ] {
            conn.execute(sqlx::AssertSqlSafe(statement)).await.unwrap();
        }
        body.push_str(&format!(
            "\n[[binlog]]\nname = \"{name}\"\nurl = \"{url}\"\ncheckpoint_key = \"{p}checkpoint:{name}\"\nheartbeat = \"1s\"\n\n\
             [[on_change]]\nsource = \"{name}\"\ntable = \"s.t\"\n\
             project = {{ key = \"{p}{name}:{{id}}\", columns = [\"id\", \"v\"], ttl = \"1h\" }}\n"
        ));
    }
    let names = ["a", "b", "c"];
    let (instances, mut daemons) = fleet(&env, &names, &body);
    let admins: Vec<SocketAddr> = instances.iter().map(|(_, admin)| *admin).collect();
    let sources: Vec<&str> = servers.iter().map(|(name, _)| *name).collect();
    assert!(
        spread(&admins, &sources).await,
        "the three sources were not spread:\n{}",
        logs(&daemons)
    );

    // Updates on every server until told to stop, a few hundred a second in all.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, urls) = (
            stop.clone(),
            servers.iter().map(|(_, url)| url.clone()).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            let mut conns = Vec::new();
            for url in &urls {
                conns.push(sqlx::MySqlConnection::connect(url).await.unwrap());
            }
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for conn in &mut conns {
                    let statement = format!("UPDATE s.t SET v = v + 1 WHERE id = {}", round % 20 + 1);
                    conn.execute(sqlx::AssertSqlSafe(statement)).await.unwrap();
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            round
        })
    };
    let urls: Vec<String> = servers.iter().map(|(_, url)| url.clone()).collect();
    for signal in ["KILL", "TERM"] {
        for index in 0..names.len() {
            daemons[index].signal(signal);
            let others: Vec<SocketAddr> = (0..names.len()).filter(|&i| i != index).map(|i| admins[i]).collect();
            assert!(
                spread(&others, &sources).await,
                "after a {signal} of {}, the others did not take its sources:\n{}",
                names[index],
                logs(&daemons)
            );
            let one_each = eventually(Duration::from_secs(10), || async {
                let counts = readers(&urls).await;
                counts.iter().all(|count| *count == 1).then_some(())
            })
            .await;
            assert!(
                one_each.is_some(),
                "replication connections per server: {:?}",
                readers(&urls).await
            );
            daemons[index] = Daemon::start(&env, &instances[index].0, &[], &[]);
            assert!(
                spread(&admins, &sources).await,
                "{} got no source back after it returned:\n{}",
                names[index],
                logs(&daemons)
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds > 100, "the writer ran {rounds} rounds");
    for (name, url) in &servers {
        let mut conn = sqlx::MySqlConnection::connect(url.as_str()).await.unwrap();
        let rows = sqlx::query("SELECT id, v FROM s.t").fetch_all(&mut conn).await.unwrap();
        for row in rows {
            let (id, v): (i32, i32) = (row.get("id"), row.get("v"));
            let expected = format!(r#"{{"id":{id},"v":{v}}}"#);
            assert!(
                common::becomes(&env, &format!("{p}{name}:{id}"), Some(&expected)).await,
                "{name} row {id}: the key does not hold v = {v} (a change was lost):\n{}",
                logs(&daemons)
            );
        }
    }
}

/// The replication connections each server of `urls` serves (its process list).
async fn readers(urls: &[String]) -> Vec<usize> {
    use sqlx::{Connection as _, Row as _};
    let mut counts = Vec::new();
    for url in urls {
        let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
        let rows = sqlx::query("SHOW PROCESSLIST").fetch_all(&mut conn).await.unwrap();
        let dumps = (rows.iter())
            .filter(|row| {
                row.try_get::<String, _>("Command")
                    .is_ok_and(|command| command.starts_with("Binlog Dump"))
            })
            .count();
        counts.push(dumps);
    }
    counts
}

/// Waits until each of `sources` is followed by exactly one of `addrs`, and none holds more than its share.
async fn spread(addrs: &[SocketAddr], sources: &[&str]) -> bool {
    let share = sources.len().div_ceil(addrs.len());
    eventually(Duration::from_secs(20), || async {
        let mut counts = vec![0; addrs.len()];
        for source in sources {
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
        counts.iter().all(|count| *count <= share).then_some(())
    })
    .await
    .is_some()
}
