//! JSON documents (`type = "json"`) on a real RedisJSON: warmed, kept by the binlog, read by path, audited, written
//! field by field; and the refusal by a Redis without the module.

use std::collections::BTreeSet;
use std::time::Duration;

use super::common::{self, TestEnv, eventually};

/// Each key's JSON document (`JSON.GET`) and the string the same row renders to, parsed; `None` where a key is
/// missing.
async fn documents(env: &TestEnv, ids: &[u32]) -> Vec<(Option<serde_json::Value>, Option<serde_json::Value>)> {
    let p = &env.prefix;
    let mut conn = env.any_redis().await;
    let mut pairs = Vec::new();
    for id in ids {
        // Before the warm run a key may hold another type (WRONGTYPE): no document yet.
        let document: Option<String> = redis::cmd("JSON.GET")
            .arg(format!("{p}doc:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        let parse = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        pairs.push((document.map(parse), env.get_json(&format!("{p}text:{id}")).await));
    }
    pairs
}

/// A document per row (`type = "json"`, RedisJSON) holds what the same row's string holds: warmed over a key of
/// another type (counted), kept by the binlog, read by path, audited.
async fn documents_follow_the_binlog(env: TestEnv) {
    let _binlog = common::binlog_shared();
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, price DECIMAL(8,2), note VARCHAR(20));
         INSERT INTO products VALUES (1, 'Kettle \"XL\"', 19.90, NULL), (2, 'Lamp', 5.00, 'old'), (3, 'Chair', NULL, NULL)",
    )
    .await;
    let p = &env.prefix;
    let mut conn = env.any_redis().await;
    super::plant_string(&env, &format!("{p}doc:3")).await;
    let query = "SELECT id, name, price, note FROM products";
    let job = |name: &str, key: &str, kind: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"{query}\"\n\
             refresh_query = \"{query} WHERE id = :id\"\nkey = \"{p}{key}:{{id}}\"\nttl = \"1h\"\ntype = \"{kind}\"\n\n"
        )
    };
    let body = format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}checkpoint\"\n\
         heartbeat = \"1s\"\non_gap = \"none\"\nderive_rules = true\n\n{}{}",
        10_000 + fastrand::u32(..1_000_000),
        job("docs", "doc", "json"),
        job("texts", "text", "string"),
    );
    let path = env.config_file(&body);
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(0), "{out}");
    let daemon = common::following_path(&env, &path).await;
    let same = |ids: &'static [u32]| {
        let env = &env;
        async move {
            eventually(Duration::from_secs(20), || async {
                let pairs = documents(env, ids).await;
                pairs
                    .iter()
                    .all(|(doc, text)| doc.is_some() && doc == text)
                    .then_some(())
            })
            .await
        }
    };
    assert!(
        same(&[1, 2, 3]).await.is_some(),
        "{:?}\n{}",
        documents(&env, &[1, 2, 3]).await,
        daemon.log()
    );
    let (kettle, _) = documents(&env, &[1]).await.remove(0);
    assert_eq!(kettle.unwrap()["name"], "Kettle \"XL\"");
    // An application reads one path; the TTL is on the key; the set that was at doc:3 was written over, counted.
    let price: String = redis::cmd("JSON.GET")
        .arg(format!("{p}doc:1"))
        .arg("$.price")
        .query_async(&mut conn)
        .await
        .unwrap();
    let text_price = env.get_json(&format!("{p}text:1")).await.unwrap()["price"].clone();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&price).unwrap(),
        serde_json::json!([text_price])
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}doc:1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{ttl}");
    assert_eq!(common::metric(&env, "cachewarden_other_type_keys_total").await, 1.0);

    // The binlog: a changed row, a column becoming NULL, a new row, a deleted one.
    env.sql(
        "UPDATE products SET price = 21.00, note = 'hot' WHERE id = 1;
         UPDATE products SET note = NULL WHERE id = 2;
         INSERT INTO products VALUES (4, 'Desk', 80.00, NULL);
         DELETE FROM products WHERE id = 3",
    )
    .await;
    let followed = eventually(Duration::from_secs(20), || async {
        let pairs = documents(&env, &[1, 2, 3, 4]).await;
        let right = pairs.iter().all(|(doc, text)| doc == text)
            && pairs[0].0.as_ref().is_some_and(|doc| doc["note"] == "hot")
            && pairs[2].0.is_none()
            && pairs[3].0.is_some();
        right.then_some(())
    })
    .await;
    assert!(
        followed.is_some(),
        "{:?}\n{}",
        documents(&env, &[1, 2, 3, 4]).await,
        daemon.log()
    );

    // The audit reads the documents back: clean, then a path changed behind the daemon's back is found.
    let audit = || env.run_cli(&["audit", "--all", "--job", "docs"], &path);
    let (code, out) = audit();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("docs: 3 checked, 0 wrong, 0 missing, 0 orphaned"), "{out}");
    let _: () = redis::cmd("JSON.SET")
        .arg(format!("{p}doc:2"))
        .arg("$.name")
        .arg("\"Lampe\"")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = audit();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("docs: 3 checked, 1 wrong, 0 missing, 0 orphaned"), "{out}");
    assert!(out.contains("Lampe"), "{out}");
    drop(daemon);

    // Over a document already there a run writes only the fields that changed (seen on one node's MONITOR): Lampe's
    // name alone, at its path; the unchanged documents get nothing; a deleted key is written whole.
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}doc:4"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut monitor = super::monitor(&env).await;
    let (code, out) = env.run_cli(&["run", "--once", "--job", "docs"], &path);
    assert_eq!(code, Some(0), "{out}");
    if let Some(monitor) = &mut monitor {
        let verbs = ["JSON.SET", "JSON.DEL", "UNLINK", "SET"];
        let writes = super::writes(monitor, &verbs, &format!("{p}doc:"), p).await;
        // The whole document's text is the server's to print; its key and path are what matter.
        let whole = r#""JSON.SET" "doc:4" "$" "#;
        let writes: BTreeSet<String> = writes
            .into_iter()
            .map(|command| match command.starts_with(whole) {
                true => format!("{whole}…"),
                false => command,
            })
            .collect();
        let expected = super::set_of(&[
            r#""JSON.SET" "doc:2" "$.name" "\"Lamp\"""#,
            r#""JSON.SET" "doc:4" "$" …"#,
        ]);
        assert_eq!(writes, expected);
    }
    let pairs = documents(&env, &[1, 2, 4]).await;
    assert!(
        pairs.iter().all(|(doc, text)| doc.is_some() && doc == text),
        "{pairs:?}"
    );
}

#[tokio::test]
async fn json_documents_are_warmed_follow_the_binlog_and_are_audited() {
    documents_follow_the_binlog(TestEnv::new().await.on_json_redis()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_json_documents_follow_the_binlog() {
    documents_follow_the_binlog(TestEnv::new().await.on_cluster()).await;
}

/// `type = "json"` needs RedisJSON (or Valkey JSON), which no registry reachable here has: `check` accepts the job,
/// and against a Redis without the module `check --connect` and the daemon's start refuse it (exit 78), naming the job
/// and what to load.
#[tokio::test]
async fn a_json_document_job_is_refused_at_start_by_a_redis_without_the_module() {
    let env = TestEnv::new().await;
    let path = env.config_file(&format!(
        "[[warm]]\nname = \"docs\"\nschedule = \"every 1h\"\nquery = \"SELECT 1 AS id\"\nkey = \"{}doc:{{id}}\"\n\
         type = \"json\"\nttl = \"1h\"\n",
        env.prefix
    ));
    let (code, out) = env.run_cli(&["check"], &path);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = env.run_cli(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{out}");
    let says = "type = \"json\" needs JSON.SET, JSON.GET and JSON.DEL, which this Redis does not have: load the RedisJSON module";
    assert!(out.contains("warm job \"docs\"") && out.contains(says), "{out}");
    let mut daemon = common::Daemon::start(&env, &path, &[], &[]);
    assert_eq!(
        daemon.exit_code(Duration::from_secs(20)).await,
        Some(78),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains(says), "{}", daemon.log());
    assert!(env.keys().await.is_empty());
}
