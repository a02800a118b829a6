//! Each message kind applied; refused and malformed messages counted, logged with unique keys and kept as dead letters.

use super::*;

#[tokio::test]
async fn each_message_kind_is_applied() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let allow = format!("allow = [\"{p}product:*\", \"{p}summary\", \"{p}user:*\"]");
    let body = config(&env, &format!("name = \"{channel}\"\n{allow}"));
    let mut daemon = start(&env, &body, &channel).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:1"),
            Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)
        )
        .await
    );

    // The seed's publisher: a plain key.
    publish(&env, &channel, &format!("{p}product:1")).await;
    assert!(becomes(&env, &format!("{p}product:1"), None).await);

    // JSON delete, and a pattern delete that leaves the neighbours alone.
    for key in ["user:1000:profile", "user:1000:cart", "user:1001:profile"] {
        set(&env, &format!("{p}{key}"), "x").await;
    }
    publish(
        &env,
        &channel,
        &format!(r#"{{"delete": ["{p}product:2"], "patterns": ["{p}user:1000:*"]}}"#),
    )
    .await;
    assert!(becomes(&env, &format!("{p}product:2"), None).await);
    assert!(becomes(&env, &format!("{p}user:1000:profile"), None).await);
    assert!(becomes(&env, &format!("{p}user:1000:cart"), None).await);
    assert_eq!(env.get(&format!("{p}user:1001:profile")).await.as_deref(), Some("x"));

    // Refresh: a changed row is re-rendered through refresh_query; a deleted row deletes the key.
    env.sql("UPDATE products SET price = 17.50 WHERE id = 3").await;
    publish(&env, &channel, &format!(r#"{{"refresh": ["{p}product:3"]}}"#)).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:3"),
            Some(r#"{"id":3,"name":"Chair","price":"17.50"}"#)
        )
        .await
    );
    env.sql("DELETE FROM products WHERE id = 3").await;
    let path = env.config_file(&body);
    let (code, stdout, stderr) = common::cli_output(&["invalidate", "--refresh", &format!("{p}product:3")], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("(1 subscriber)"), "{stdout}");
    assert!(becomes(&env, &format!("{p}product:3"), None).await);

    // What the daemon would refuse is refused before publishing, with the daemon's reason (exit 65).
    for (args, reason) in [
        (vec![format!("{p}secret:1")], "is outside the allow-list"),
        (
            vec!["--warm".to_string(), "nope".to_string()],
            "no warm job named \"nope\"",
        ),
        (vec![format!("{p}product:*")], "contains a wildcard"),
    ] {
        let args: Vec<&str> = std::iter::once("invalidate")
            .chain(args.iter().map(String::as_str))
            .collect();
        let (code, stdout, stderr) = cli_output(&args, &path);
        assert_eq!(code, Some(65), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("the daemon would refuse this message") && stderr.contains(reason),
            "{stderr}"
        );
        assert!(!stdout.contains("published"), "{stdout}");
    }

    // Refreshing a single-key job's key runs the job; `warm` runs a job by name.
    publish(&env, &channel, &format!(r#"{{"refresh": ["{p}summary"]}}"#)).await;
    assert!(becomes(&env, &format!("{p}summary"), Some(r#"{"products":2}"#)).await);
    publish(&env, &channel, r#"{"warm": ["products"]}"#).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:1"),
            Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)
        )
        .await
    );

    assert_eq!(
        metric(&env, r#"cachewarden_channel_messages_total{outcome="applied"}"#).await,
        6.0
    );
    assert_eq!(daemon.stop().await, Some(0));

    // With the daemon gone, pub/sub would drop the message: said, not hidden.
    let (code, stdout, stderr) = common::cli_output(&["invalidate", &format!("{p}product:1")], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("(0 subscribers)") && stderr.contains("nobody is subscribed"),
        "{stdout}{stderr}"
    );
}

#[tokio::test]
async fn messages_outside_the_allow_list_or_malformed_are_refused_and_counted() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    // Default allow-list: the jobs' key templates.
    let mut daemon = start(&env, &config(&env, &format!("name = \"{channel}\"")), &channel).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:1"),
            Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)
        )
        .await
    );
    set(&env, &format!("{p}secret:1"), "keep").await;

    let refused = [
        (format!("{p}secret:1"), "key_not_allowed"),
        (r#"{"patterns": ["*"]}"#.to_string(), "pattern_not_allowed"),
        (format!(r#"{{"patterns": ["{p}*"]}}"#), "pattern_not_allowed"),
        (format!(r#"{{"delete": ["{p}product:*"]}}"#), "wildcard_in_delete"),
        (r#"{"delete": ["#.to_string(), "malformed"),
        (format!(r#"{{"delet": ["{p}product:1"]}}"#), "malformed"),
        (r#"{"delete": [""]}"#.to_string(), "empty_key"),
        (r#"{"warm": ["nope"]}"#.to_string(), "unknown_job"),
        (
            format!(r#"{{"delete": ["{p}product:1", "{p}secret:1"]}}"#),
            "key_not_allowed",
        ),
        ("x".repeat(70 * 1024), "too_large"),
        // A forged log line riding on a refused key.
        (
            format!("{p}secret:1\n2026-11-26T11:00:00.000000Z ERROR cachewarden::ops::app: FORGED"),
            "key_not_allowed",
        ),
    ];
    for (message, _) in &refused {
        publish(&env, &channel, message).await;
    }
    let total = eventually(Duration::from_secs(10), || async {
        let total = metric(&env, r#"cachewarden_channel_messages_total{outcome="refused"}"#).await;
        (total == refused.len() as f64).then_some(total)
    })
    .await;
    assert_eq!(total, Some(refused.len() as f64));
    for reason in [
        "key_not_allowed",
        "pattern_not_allowed",
        "wildcard_in_delete",
        "malformed",
        "too_large",
    ] {
        let count = metric(
            &env,
            &format!(r#"cachewarden_channel_refused_total{{reason="{reason}"}}"#),
        )
        .await;
        assert!(count >= 1.0, "no refusal counted for {reason}");
    }
    // Nothing was touched, not even the allowed key in the message that also named a forbidden one.
    assert_eq!(env.get(&format!("{p}secret:1")).await.as_deref(), Some("keep"));
    assert!(env.get(&format!("{p}product:1")).await.is_some());
    assert!(daemon.is_running());
    let log = daemon.log();
    assert!(
        log.contains("Refused an invalidation message") && log.contains("truncated=true"),
        "{log}"
    );
    // The forged line is logged inside the refusal, escaped, never as a line of its own.
    assert!(
        log.contains(r"\n2026-11-26T11:00:00.000000Z ERROR cachewarden::ops::app: FORGED"),
        "{log}"
    );
    assert!(
        !log.lines().any(|line| line.starts_with("2026-11-26T11:00:00")),
        "{log}"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

/// The top-level keys of a JSON object, in order, duplicates kept (a `Map` would keep only the last).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[tokio::test]
async fn json_log_lines_have_unique_keys_even_for_refused_messages() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let path = env.config_file(&config(&env, &format!("name = \"{channel}\"")));
    let mut daemon = Daemon::start(&env, &path, &["--log-format", "json"], &[]);
    wait_for_admin(&env).await;
    let refused = eventually(Duration::from_secs(20), || async {
        publish(&env, &channel, &format!("{p}secret:1")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = daemon.log();
        log.contains("Refused an invalidation message").then_some(log)
    })
    .await
    .expect("the refusal is logged");
    for line in refused.lines() {
        let Keys(keys) = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "duplicate keys {keys:?} in {line}");
    }
    let refusal: serde_json::Value = serde_json::from_str(
        refused
            .lines()
            .find(|line| line.contains("Refused an invalidation message"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(refusal["payload"], format!("{p}secret:1"));
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .starts_with("Refused an invalidation message")
    );

    // A list stays a list: the jobs a reload added are a JSON array.
    let added = format!(
        "[[warm]]\nname = \"later\"\nschedule = \"0 0 0 1 1 *\"\nquery = \"SELECT 1 AS id\"\nkey = \"{p}later:{{id}}\"\nttl = \"1h\"\n"
    );
    let source = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{source}\n{added}")).unwrap();
    daemon.signal("HUP");
    let reload = eventually(Duration::from_secs(10), || async {
        let log = daemon.log();
        let line = log.lines().find(|line| line.contains("configuration reloaded"))?;
        Some(serde_json::from_str::<serde_json::Value>(line).unwrap())
    })
    .await
    .unwrap_or_else(|| panic!("no reload in:\n{}", daemon.log()));
    assert_eq!(reload["added"], serde_json::json!(["later"]), "{reload}");
    assert_eq!(reload["removed"], serde_json::json!([]), "{reload}");
    assert_eq!(daemon.stop().await, Some(0));
}

/// Refused messages are kept as dead letters with their reason; `dead-letters` lists them, and `--replay` sends the
/// channel messages again through the same checks (after the allow-list was widened, the one it refused applies).
#[tokio::test]
async fn refused_messages_are_kept_as_dead_letters_and_can_be_sent_again() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let body = |allow: &str| {
        format!(
            "[daemon]\ndead_letter = \"{p}dead\"\n\n{}",
            config(&env, &format!("name = \"{channel}\"\nallow = [{allow}]"))
        )
    };
    let mut daemon = start(&env, &body(&format!("\"{p}product:*\"")), &channel).await;
    let path = env.dir.path().join("jobs.toml");
    let dead_letters = |args: &[&str]| env.run_cli(&[&["dead-letters"], args].concat(), &path);
    set(&env, &format!("{p}user:1"), "stale").await;
    publish(&env, &channel, &format!("{p}user:1")).await;
    publish(&env, &channel, r#"{"delete": ["#).await;
    let listed = eventually(Duration::from_secs(10), || async {
        let (code, out) = dead_letters(&[]);
        (code == Some(0) && out.matches(" channel ").count() == 2).then_some(out)
    })
    .await;
    let Some(listed) = listed else {
        panic!(
            "the refused messages were not kept: {:?}\n{}",
            dead_letters(&[]),
            daemon.log()
        );
    };
    assert!(
        listed.contains("channel key_not_allowed") && listed.contains(&format!("message: {p}user:1")),
        "{listed}"
    );
    assert!(
        listed.contains("channel malformed") && listed.contains(r#"message: {"delete": ["#),
        "{listed}"
    );
    assert_eq!(
        metric(
            &env,
            r#"cachewarden_dead_letters_total{source="channel",reason="key_not_allowed"}"#
        )
        .await,
        1.0
    );
    assert!(dead_letters(&["--since", "1h"]).1.contains("key_not_allowed"));
    assert_eq!(
        dead_letters(&["--since", "2099-01-01T00:00:00Z"]).1.trim(),
        "no dead letters"
    );

    // The allow-list widened (SIGHUP), the refused key goes through again; the malformed one is still refused.
    std::fs::write(
        &path,
        format!(
            "{}{}",
            env.connection_toml(),
            body(&format!("\"{p}product:*\", \"{p}user:*\""))
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("SIGHUP: configuration reloaded").then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "{}", daemon.log());
    let (code, out) = dead_letters(&["--replay"]);
    assert_eq!(code, Some(65), "one is still refused: {out}");
    assert!(out.contains("sent again") && out.contains("still refused"), "{out}");
    assert!(becomes(&env, &format!("{p}user:1"), None).await, "{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));

    // `dead_letter = ""` keeps none (they are only counted): the command says so instead of listing another stream.
    let off = env.config_file(&format!(
        "[daemon]\ndead_letter = \"\"\n\n{}",
        config(&env, &format!("name = \"{channel}\""))
    ));
    let (code, out) = env.run_cli(&["dead-letters"], &off);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("dead_letter is \"\"") && out.contains("no dead letters are kept"),
        "{out}"
    );
}
