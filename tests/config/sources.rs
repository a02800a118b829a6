//! `[binlog]` and `[[binlog]]`: one source or several, each named, and the source each rule and job names.

use super::*;
use cachewarden::config::{CheckpointStore, Config};

/// Two sources: `shop` on [mysql]'s server and `orders` on its own, with a rule on each and a job deriving its rules
/// from `shop`.
const TWO: &str = r#"
[[binlog]]
name = "shop"
derive_rules = true

[[binlog]]
name = "orders"
url = "mysql://repl:pw@orders-db:3306/orders"

[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT id, name FROM products"
key = "product:{id}"
ttl = "10m"
source = "shop"

[[on_change]]
table = "sessions"
source = "shop"
delete = ["session:{token}"]

[[on_change]]
table = "orders.orders"
source = "orders"
delete = ["order:{id}"]
"#;

fn load(source: &str) -> Config {
    config::load_str(Path::new("jobs.toml"), source, HashMap::new()).unwrap_or_else(|error| panic!("{error}"))
}

/// Each source of `[[binlog]]` is named, and its name goes into its checkpoint key, its replica id, its label and
/// its rules (the derived ones too: the job's source).
#[test]
fn several_sources_each_have_their_own_checkpoint_replica_id_and_rules() {
    let config = load(&format!("{CONNECTIONS}{TWO}"));
    let names: Vec<&str> = config.binlogs.iter().map(|source| &*source.name).collect();
    assert_eq!(names, ["shop", "orders"]);
    let (shop, orders) = (&config.binlogs[0], &config.binlogs[1]);
    assert_eq!(&*shop.label, "binlog shop");
    assert_eq!(
        shop.checkpoint,
        CheckpointStore::Redis("cachewarden:binlog:checkpoint:shop".into())
    );
    assert_eq!(
        orders.checkpoint,
        CheckpointStore::Redis("cachewarden:binlog:checkpoint:orders".into())
    );
    assert_ne!(
        shop.server_id, orders.server_id,
        "one instance, two sources: two replica ids"
    );
    assert!(
        shop.server_id_from
            .as_deref()
            .is_some_and(|from| from.ends_with("/shop"))
    );
    // `shop` follows [mysql]'s server; `orders` its own.
    assert_eq!(shop.url.expose(), config.mysql.url.expose());
    let source_of = |table: &str| {
        let rule = config.rules.iter().find(|rule| rule.table == table).unwrap();
        rule.source.as_deref().map(str::to_string)
    };
    assert_eq!(source_of("sessions").as_deref(), Some("shop"));
    assert_eq!(source_of("orders").as_deref(), Some("orders"));
    // The job derives its rules (from its source's `derive_rules`), and they follow its source.
    assert!(config.jobs[0].derive_rules);
    let derived: Vec<_> = config.rules.iter().filter(|rule| rule.derived_from.is_some()).collect();
    assert!(!derived.is_empty());
    assert!(
        derived.iter().all(|rule| rule.source.as_deref() == Some("shop")),
        "{derived:?}"
    );
}

/// A `[binlog]` table is the one source `main`, as before: the same checkpoint key and replica id, rules need not
/// name it (and may: `main`).
#[test]
fn one_binlog_table_is_the_source_main_as_before() {
    let body = "\n[binlog]\n\n[[on_change]]\ntable = \"sessions\"\ndelete = [\"session:{token}\"]\n";
    let config = load(&format!("{CONNECTIONS}{body}"));
    let main = &config.binlogs[0];
    assert_eq!((&*main.name, &*main.label), ("main", "binlog"));
    assert_eq!(
        main.checkpoint,
        CheckpointStore::Redis("cachewarden:binlog:checkpoint".into())
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(main.server_id_from, Some(format!("{}:jobs.toml", host.trim())));
    assert_eq!(config.rules[0].source, None);
    let named = load(&format!(
        "{CONNECTIONS}{}",
        body.replace("table =", "source = \"main\"\ntable =")
    ));
    assert_eq!(named.rules[0].source.as_deref(), Some("main"));
    let wrong = problems(&format!(
        "{CONNECTIONS}{}",
        body.replace("table =", "source = \"mian\"\ntable =")
    ));
    let message = &find(&wrong, "on_change[0] \"sessions\".source").message;
    assert!(
        message.contains("no binlog source is named \"mian\" (did you mean `main`?)"),
        "{message}"
    );
}

/// What is refused, each at its entry and field: a source without a name or with another's, a name that cannot go
/// into a key, two sources on one checkpoint or one server, a rule or a deriving job that does not say which source
/// it follows (a job without a source takes `derive_rules` from none), a disabled source named, an environment
/// variable for a field of several entries, a checkpoint file under `[ha]`.
#[test]
fn sources_and_the_rules_and_jobs_naming_them_are_checked() {
    let base = format!("{CONNECTIONS}{TWO}");
    let with = |from: &str, to: &str| {
        assert!(base.contains(from), "{from}");
        base.replacen(from, to, 1)
    };
    let found = problems(&with("name = \"orders\"\n", ""));
    assert!(
        find(&found, "binlog[1].name")
            .message
            .contains("is required in each [[binlog]] source")
    );
    assert_eq!(find(&found, "binlog[1].name").line, Some(11), "the entry's header");

    let found = problems(&with("name = \"orders\"", "name = \"shop\""));
    assert!(
        find(&found, "binlog[1] \"shop\".name")
            .message
            .contains("already named \"shop\"")
    );

    let found = problems(&with("name = \"orders\"", "name = \"or ders\""));
    assert!(
        find(&found, "binlog[1] \"or ders\".name")
            .message
            .contains("is not a source name")
    );

    let found = problems(&with(
        "url = \"mysql://repl:pw@orders-db:3306/orders\"\n",
        "checkpoint_key = \"cachewarden:binlog:checkpoint:shop\"\n",
    ));
    let shared = &find(&found, "binlog[1] \"orders\".checkpoint_key").message;
    assert!(
        shared.contains("is the checkpoint of the source \"shop\" too"),
        "{shared}"
    );
    assert!(
        find(&found, "binlog[1] \"orders\".url")
            .message
            .contains("db:3306 is the server of the source \"shop\" too"),
        "no url: [mysql]'s server, which `shop` follows: {found:?}"
    );

    let found = problems(&with(
        "source = \"orders\"\ndelete = [\"order:{id}\"]",
        "delete = [\"order:{id}\"]",
    ));
    let message = &find(&found, "on_change[1] \"orders.orders\".source").message;
    assert!(
        message.contains("is required with several [[binlog]] sources"),
        "{message}"
    );
    assert!(message.contains("(\"shop\" or \"orders\")"), "{message}");

    let found = problems(&with(
        "ttl = \"10m\"\nsource = \"shop\"",
        "ttl = \"10m\"\nderive_rules = true",
    ));
    let message = &find(&found, "warm[0] \"products\".source").message;
    assert!(message.contains("the job's derived rules"), "{message}");

    let found = problems(&with("url = \"mysql://repl", "enabled = false\nurl = \"mysql://repl"));
    let message = &find(&found, "on_change[1] \"orders.orders\".source").message;
    assert!(
        message.contains("the binlog source \"orders\" is disabled"),
        "{message}"
    );

    let env = HashMap::from([("CACHEWARDEN_BINLOG__URL".to_string(), "mysql://x@y/z".to_string())]);
    let found = problems_with_env(&base, env);
    let message = &find(&found, "CACHEWARDEN_BINLOG__URL").message;
    assert!(message.contains("[[binlog]] is a list of entries"), "{message}");

    let found = problems(&format!(
        "{}\n[ha]\nenabled = true\n",
        with("name = \"orders\"", "name = \"orders\"\ncheckpoint = \"file\"")
    ));
    assert!(
        find(&found, "binlog[1] \"orders\".checkpoint")
            .message
            .contains("must be \"redis\" with [ha]")
    );
}

/// `read_url`: the jobs naming a source read its server. Their unqualified tables are in the database its URL names
/// (what their derived rules follow), the other jobs still read `[mysql]`; with one source it is refused at its field
/// (`[mysql] url` is where jobs read then).
#[test]
fn a_source_with_read_url_is_where_its_jobs_read() {
    let body = format!(
        "{CONNECTIONS}{}",
        TWO.replace(
            "url = \"mysql://repl:pw@orders-db:3306/orders\"\n",
            "url = \"mysql://repl:pw@orders-db:3306/orders\"\nread_url = \"mysql://app:pw@orders-reader:3306/sales\"\n\
             derive_rules = true\n",
        )
    ) + "\n[[warm]]\nname = \"order_cards\"\nschedule = \"every 1h\"\nsource = \"orders\"\n\
         query = \"SELECT id, total FROM orders\"\nkey = \"card:{id}\"\nttl = \"10m\"\n";
    let config = load(&body);
    let (products, cards) = (&config.jobs[0], &config.jobs[1]);
    assert_eq!(config.read_settings(products).url.expose(), config.mysql.url.expose());
    let reads = config.read_settings(cards);
    assert_eq!(reads.url.expose(), "mysql://app:pw@orders-reader:3306/sales");
    assert_eq!(reads.pool_size, config.mysql.pool_size, "[mysql]'s other settings");
    let readers: Vec<String> = config.readers().into_iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(readers, ["orders"]);
    // The job's `orders` is the reader's `sales.orders`, and its derived rule follows that table on its source.
    let derived = (config.rules.iter())
        .find(|rule| rule.derived_from.as_deref() == Some("order_cards"))
        .expect("a rule derived for order_cards");
    assert_eq!((derived.database.as_str(), derived.table.as_str()), ("sales", "orders"));
    assert_eq!(derived.source.as_deref(), Some("orders"));
    assert_eq!(config.databases_read(Some("orders")), ["sales"]);
    assert!(
        !config.databases_read(None).contains(&"sales".to_string()),
        "{:?}",
        config.databases_read(None)
    );

    let one = problems(&format!(
        "{CONNECTIONS}\n[binlog]\nread_url = \"mysql://app:pw@reader:3306/shop\"\n"
    ));
    let message = &find(&one, "binlog.read_url").message;
    assert!(message.contains("with one source, jobs read [mysql] url"), "{message}");
    let one_entry = problems(&format!(
        "{CONNECTIONS}\n[[binlog]]\nname = \"shop\"\nread_url = \"mysql://app:pw@reader:3306/shop\"\n"
    ));
    let message = &find(&one_entry, "binlog[0] \"shop\".read_url").message;
    assert!(message.contains("with one source, jobs read [mysql] url"), "{message}");
    let bad = problems(&body.replace("mysql://app:pw@orders-reader", "postgres://app:pw@orders-reader"));
    assert!(find(&bad, "binlog[1] \"orders\".read_url").message.contains("mysql://"));
}
