//! The sections beside [[warm]]: the channel, refresh, [binlog] and [[on_change]] rules, the checkpoint store and
//! misses.

use super::*;

#[test]
fn channel_and_refresh_settings_are_checked() {
    let source = format!(
        r#"{CONNECTIONS}
[channel]
allow = ["product:?", "user:*"]
on_gap = "panic"
group = "g"

[[warm]]
name = "p"
schedule = "every 1h"
query = "SELECT id FROM products"
refresh_query = "SELECT id FROM products WHERE id = :id AND sku = :sku"
key = "product:{{id}}"
ttl = "1h"

[[warm]]
name = "stats"
schedule = "every 1m"
query = "SELECT COUNT(*) AS n FROM orders"
refresh_query = "SELECT COUNT(*) AS n FROM orders WHERE id = :id"
key = "stats"
ttl = "1m"
"#
    );
    let problems = problems(&source);
    assert!(
        find(&problems, "channel.allow")
            .message
            .contains("\"product:?\" is not an allow pattern")
    );
    assert!(
        find(&problems, "channel.on_gap")
            .message
            .contains("\"panic\" is not an on_gap action")
    );
    assert!(
        find(&problems, "channel.group")
            .message
            .contains("only apply with `stream`")
    );
    let refresh = find(&problems, "warm[0] \"p\".refresh_query");
    assert!(
        refresh.message.contains(":sku is not a placeholder"),
        "{}",
        refresh.message
    );
    assert_eq!(refresh.line, Some(16));
    assert!(
        find(&problems, "warm[1] \"stats\".refresh_query")
            .message
            .contains("has no placeholders")
    );
}

#[test]
fn the_channel_allow_list_defaults_to_the_job_templates() {
    let source = format!(
        "{CONNECTIONS}\n[[warm]]\nname = \"p\"\nschedule = \"every 1h\"\nquery = \"SELECT 1 AS id\"\n\
         key = \"product:{{id}}:{{lang}}\"\nttl = \"1h\"\nrefresh_query = \"SELECT 1 AS id WHERE :lang = :id\"\n"
    );
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap();
    assert_eq!(config.channel.allow, ["product:*:*"]);
    assert_eq!(config.channel.name, "cache_invalidation");
    assert!(config.channel.enabled && config.channel.stream.is_none());
    let job = config.job("p").unwrap();
    assert_eq!(job.refresh_query.as_deref(), Some("SELECT 1 AS id WHERE ? = ?"));
    assert_eq!(job.refresh_params, ["lang", "id"]);
}

#[test]
fn binlog_and_on_change_rules_are_checked() {
    let source = format!(
        r#"{CONNECTIONS}
[binlog]
start = "somewhere"
checkpoint = "etcd"

[[warm]]
name = "p"
schedule = "every 1h"
query = "SELECT id FROM products"
key = "product:{{id}}"
ttl = "1h"

[[on_change]]
table = "shop.products"
refresh = ["product:{{id}}"]
warm = ["nope"]
debounce = "soon"
events = ["delete", "upsert"]

[[on_change]]
table = "orders"

[[on_change]]
table = "shop_*.products"
refresh = ["product:{{id}}"]
"#
    );
    let problems = problems(&source);
    // No server_id is no problem: the instance takes one of its own.
    assert!(
        problems.iter().all(|problem| problem.location != "binlog.server_id"),
        "{problems:?}"
    );
    assert!(
        find(&problems, "binlog.start")
            .message
            .contains("\"somewhere\" is not a start position")
    );
    assert!(
        find(&problems, "binlog.checkpoint")
            .message
            .contains("\"etcd\" is not a checkpoint store")
    );
    let refresh = find(&problems, "on_change[0] \"shop.products\".refresh");
    assert!(
        refresh
            .message
            .contains("needs a [[warm]] job with that key template and a refresh_query")
    );
    assert_eq!(refresh.line, Some(20));
    assert!(
        find(&problems, "on_change[0] \"shop.products\".warm")
            .message
            .contains("no [[warm]] job named \"nope\"")
    );
    assert!(
        find(&problems, "on_change[0] \"shop.products\".debounce")
            .message
            .contains("not a duration")
    );
    assert!(
        find(&problems, "on_change[0] \"shop.products\".events")
            .message
            .contains("\"upsert\" is no row event")
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.location == "on_change[2] \"shop_*.products\".refresh"
                && problem
                    .message
                    .contains("is a table pattern: its rows come from several tables")),
        "{problems:?}"
    );
    assert!(
        find(&problems, "on_change[1] \"orders\"")
            .message
            .contains("does nothing")
    );
}

#[test]
fn on_change_tables_default_to_the_mysql_database() {
    let source = format!(
        "{CONNECTIONS}\n[binlog]\nserver_id = 42\n\n[[on_change]]\ntable = \"sessions\"\ndelete = [\"session:{{token}}\"]\n"
    );
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap();
    let binlog = config.binlogs.first().unwrap();
    assert_eq!(binlog.server_id, 42);
    assert_eq!(
        binlog.url, config.mysql.url,
        "replication uses [mysql] url unless told otherwise"
    );
    assert_eq!(
        (config.rules[0].database.as_str(), config.rules[0].table.as_str()),
        ("shop", "sessions")
    );
}

#[test]
fn a_rule_naming_an_invalid_job_points_at_that_job_not_at_a_missing_one() {
    let source = format!(
        r#"{CONNECTIONS}
[binlog]
server_id = 7

[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT id FROM products"
refresh_query = "SELECT id FROM products WHERE id = :id"
key = "product:{{id}}"
shape = "list"
ttl = "1h"

[[on_change]]
table = "shop.products"
refresh = ["product:{{id}}"]
"#
    );
    let problems = problems(&source);
    assert!(
        find(&problems, "warm[0] \"products\".shape")
            .message
            .contains("is not a shape")
    );
    let refresh = find(&problems, "on_change[0] \"shop.products\".refresh");
    assert!(
        refresh
            .message
            .contains("is the key of [[warm]] job \"products\", which is invalid"),
        "{}",
        refresh.message
    );
}

#[test]
fn one_allow_pattern_may_be_written_alone() {
    for (written, expected) in [
        ("\"*\"", vec!["*"]),
        ("[\"user:*\", \"product:*\"]", vec!["user:*", "product:*"]),
    ] {
        let source = format!("{CONNECTIONS}\n[channel]\nallow = {written}\n");
        let config =
            config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.channel.allow, expected, "{written}");
    }
    let problems = problems(&format!("{CONNECTIONS}\n[channel]\nallow = 5\n"));
    assert!(
        find(&problems, "channel.allow").message.contains("allow"),
        "{problems:?}"
    );
}

#[test]
fn a_checkpoint_file_alone_means_the_file_store_and_beside_redis_is_refused() {
    let job = "[[warm]]\nname = \"p\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM t\"\nkey = \"p:{id}\"\nttl = \"1h\"\n";
    let alone = format!("{CONNECTIONS}\n[binlog]\nserver_id = 7\ncheckpoint_file = \"/tmp/cw.ckpt\"\n\n{job}");
    let config = config::load_str(Path::new("jobs.toml"), &alone, HashMap::new()).unwrap();
    assert_eq!(
        config.binlogs.into_iter().next().unwrap().checkpoint,
        config::CheckpointStore::File("/tmp/cw.ckpt".into())
    );
    let both = format!(
        "{CONNECTIONS}\n[binlog]\nserver_id = 7\ncheckpoint = \"redis\"\ncheckpoint_file = \"/tmp/cw.ckpt\"\n\n{job}"
    );
    assert!(
        find(&problems(&both), "binlog.checkpoint_file")
            .message
            .contains("remove one of the two")
    );
}

#[test]
fn misses_settings_and_fill_on_miss_are_checked() {
    let job = |name: &str, refresh: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM products\"\n{refresh}\
             key = \"{name}:{{id}}\"\nttl = \"1h\"\nfill_on_miss = true\n\n"
        )
    };
    let refresh = "refresh_query = \"SELECT id FROM products WHERE id = :id\"\n";
    // fill_on_miss without [misses], and without a refresh_query.
    let source = format!("{CONNECTIONS}\n{}{}", job("a", refresh), job("b", ""));
    let found = problems(&source);
    assert!(
        find(&found, "warm[0] \"a\".fill_on_miss")
            .message
            .contains("needs [misses] enabled = true")
    );
    assert!(
        find(&found, "warm[1] \"b\".fill_on_miss")
            .message
            .contains("needs a refresh_query")
    );
    let source = format!(
        "{CONNECTIONS}\n[misses]\nenabled = true\nmax_fills_per_second = 0\nnegative_ttl = \"soon\"\n\n{}",
        job("a", refresh)
    );
    let found = problems(&source);
    assert!(
        find(&found, "misses.max_fills_per_second")
            .message
            .contains("must be at least 1")
    );
    find(&found, "misses.negative_ttl");
    assert_eq!(found.len(), 2, "{found:?}");
    // Valid: the defaults.
    let source = format!("{CONNECTIONS}\n[misses]\nenabled = true\n\n{}", job("a", refresh));
    let config = config::load_str(Path::new("jobs.toml"), &source, HashMap::new()).expect("valid");
    let misses = config.misses.expect("[misses] enabled");
    assert_eq!(misses.max_fills_per_second, 1000);
    assert_eq!(misses.negative_ttl, std::time::Duration::from_secs(10));
    assert!(config.jobs[0].fill_on_miss);
}

/// Without `[binlog] server_id` each instance takes a replica id of its own, from its name (`[ha] instance`, else the
/// host name and the configuration file), above the small ids servers are given by habit; 0 is refused (servers refuse it; 0 stands for "not set" inside).
#[test]
fn without_a_server_id_each_instance_takes_its_own() {
    let base =
        format!("{CONNECTIONS}\n[binlog]\n\n[[on_change]]\ntable = \"sessions\"\ndelete = [\"session:{{token}}\"]\n");
    let load = |source: &str| config::load_str(Path::new("jobs.toml"), source, HashMap::new()).unwrap();
    let alone = load(&base);
    let binlog = alone.binlogs.first().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(binlog.server_id_from, Some(format!("{}:jobs.toml", host.trim())));
    assert!(binlog.server_id >= 0x8000_0000, "{}", binlog.server_id);
    let instance = |name: &str| {
        let config = load(&format!("{base}\n[ha]\nenabled = true\ninstance = \"{name}\"\n"));
        let binlog = config.binlogs.into_iter().next().unwrap();
        assert_eq!(binlog.server_id_from.as_deref(), Some(name));
        binlog.server_id
    };
    assert_ne!(instance("web-1"), instance("web-2"));
    assert_eq!(instance("web-1"), instance("web-1"));
    let zero = problems(&base.replace("[binlog]\n", "[binlog]\nserver_id = 0\n"));
    assert!(
        find(&zero, "binlog.server_id").message.contains("must be at least 1"),
        "{zero:?}"
    );
}
