//! Redis data shapes (`type` per warm job): hashes, sets and sorted sets, JSON documents, each warmed, kept by the
//! binlog and audited on one Redis and on the test cluster; and the types and combinations that are refused, with
//! the job and field named.

#[path = "../common/mod.rs"]
mod common;
mod documents;
mod hashes;
mod sets;

/// One node's MONITOR, to see what a run writes; none on a cluster (its writes spread over the masters).
type Monitor = std::pin::Pin<Box<dyn futures_util::Stream<Item = String> + Send>>;

async fn monitor(env: &common::TestEnv) -> Option<Monitor> {
    if env.cluster {
        return None;
    }
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    Some(Box::pin(
        client.get_async_monitor().await.unwrap().into_on_message::<String>(),
    ))
}

/// The writes `monitor` saw until a pause of half a second (what a finished run sent is in the stream already): the
/// commands among `verbs` whose first key starts with `key`, with the test's `prefix` taken out.
async fn writes(monitor: &mut Monitor, verbs: &[&str], key: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    use futures_util::StreamExt as _;
    let mut writes = std::collections::BTreeSet::new();
    while let Ok(Some(line)) = tokio::time::timeout(std::time::Duration::from_millis(500), monitor.next()).await {
        let Some((_, command)) = line.split_once("] ") else {
            continue;
        };
        let mut words = command.split(' ');
        let (verb, first) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if verbs.iter().any(|v| verb == format!("\"{v}\"")) && first.starts_with(&format!("\"{key}")) {
            writes.insert(command.replace(prefix, ""));
        }
    }
    writes
}

fn set_of(commands: &[&str]) -> std::collections::BTreeSet<String> {
    commands.iter().map(|command| command.to_string()).collect()
}

/// Puts a string at `key`: a key of another type than a hash, set or document job writes.
async fn plant_string(env: &common::TestEnv, key: &str) {
    let mut conn = env.any_redis().await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[test]
fn check_refuses_what_a_hash_or_a_set_cannot_hold_and_the_types_not_built_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.toml");
    let job = |name: &str, key: &str, extra: &str| {
        format!(
            "\n[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT id, name FROM products\"\n\
             key = \"{key}\"\nttl = \"1h\"\n{extra}"
        )
    };
    let config = [
        "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n".to_string(),
        job("packed", "p:{id}", "type = \"hash\"\ncompress = \"zstd\"\n"),
        job("whole", "all_products", "type = \"hash\"\n"),
        job("board", "b:{id}", "type = \"zset\"\nmember = \"{id}\"\n"),
        job("flat", "s:{id}", "type = \"set\"\nmember = \"all\"\n"),
        job(
            "packedset",
            "ps:{id}",
            "type = \"set\"\nmember = \"{id}\"\ncompress = \"zstd\"\n",
        ),
        job("doc", "d:{id}", "type = \"json\"\ncompress = \"gzip\"\n"),
        job("setfine", "sf:{name}", "type = \"set\"\nmember = \"{id}\"\n"),
        "\n[[warm]]\nname = \"ranked\"\nschedule = \"every 1h\"\nttl = \"1h\"\nkey = \"top\"\ntype = \"zset\"\n\
         member = \"{id}\"\nscore = \"name\"\nquery = \"SELECT id, name FROM products ORDER BY id DESC LIMIT 3\"\n"
            .to_string(),
        "\n[[warm]]\nname = \"percat\"\nschedule = \"every 1h\"\nttl = \"1h\"\nkey = \"top:{name}\"\ntype = \"zset\"\n\
         member = \"{id}\"\nscore = \"id\"\nquery = \"SELECT id, name FROM products ORDER BY id DESC LIMIT 3\"\n"
            .to_string(),
        job("typo", "t:{id}", "type = \"hashes\"\n"),
        job("fine", "f:{id}", "type = \"hash\"\n"),
        job("hashed", "h:{id}", "type = \"hash\"\n"),
        // Strings into keys of the hashes' shape: each job would write the other's keys over.
        job("shadow", "h:{name}", ""),
        job("documents", "j:{id}", "type = \"json\"\n"),
        // A projection would write a JSON string over those documents (into the hashes it updates their fields).
        "\n[binlog]\nserver_id = 7\n\n[[on_change]]\ntable = \"products\"\n\
         project = { key = \"j:{id}\", columns = [\"name\"], ttl = \"1h\" }\n\n\
         [[on_change]]\ntable = \"products\"\nproject = { key = \"h:{id}\", columns = [\"name\"], ttl = \"1h\" }\n"
            .to_string(),
    ]
    .concat();
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = common::cli_output(&["check"], &path);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, Some(78), "{all}");
    for (job, field, says) in [
        ("packed", "compress", "compression applies to type = \"string\" only"),
        ("whole", "type", "has no placeholder"),
        ("board", "score", "type = \"zset\" needs `score`"),
        (
            "flat",
            "member",
            "has no placeholder, so every row would add the same member",
        ),
        ("packedset", "compress", "compression applies to type = \"string\" only"),
        ("doc", "compress", "a JSON document is stored parsed by the server"),
        ("ranked", "query", "a top N sorted set needs ORDER BY name DESC"),
        ("percat", "key", "a top N (LIMIT) ranks the whole query, not each key"),
        ("typo", "type", "\"hashes\" is not a type"),
        (
            "documents",
            "project",
            "which are JSON documents (type = \"json\"): refresh them instead",
        ),
        (
            "shadow",
            "type",
            "writes strings into keys of the shape of [[warm]] job \"hashed\"'s \"h:{id}\", which are hashes",
        ),
    ] {
        assert!(
            all.lines()
                .any(|line| line.contains(job) && line.contains(field) && line.contains(says)),
            "{job}.{field}: {all}"
        );
    }
    assert!(!all.contains("on_change[1]"), "{all}");
    for fine in ["\"fine\"", "\"setfine\""] {
        assert!(!all.lines().any(|line| line.contains(fine)), "{all}");
    }
}
