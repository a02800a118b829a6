//! check: exit 78 naming file, line, job and field; --connect against the database; cluster mode that disagrees with
//! the server.

use super::*;

#[tokio::test]
async fn check_exits_78_and_names_file_line_job_and_field() {
    let env = TestEnv::new().await;
    let path = env.config_file(&job(
        &env,
        "bad",
        "SELECT 1 AS id",
        "0 61 * * * *",
        "jitter = \"5%\"\ncolour = 1",
    ));
    let (code, _, stderr) = cli_output(&["check"], &path);
    assert_eq!(code, Some(78), "{stderr}");
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:12: warm[0] \"bad\".schedule: \"0 61 * * * *\" is not a valid cron"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:17: warm[0] \"bad\".colour: unknown field `colour`")),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_connect_catches_sql_errors_and_missing_columns() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let body = [
        job(&env, "good", "SELECT id, name FROM products", "every 1h", ""),
        job(&env, "typo", "SELEC id FROM products", "every 1h", ""),
        format!(
            "[[warm]]\nname = \"wrong_key\"\nschedule = \"every 1h\"\nquery = \"SELECT id FROM products\"\n\
             key = \"{p}x:{{sku}}\"\nttl = \"1h\"\n"
        ),
    ]
    .concat();
    let path = env.config_file(&body);
    let (code, _, stderr) = cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{stderr}");
    let file = path.display();
    let source = std::fs::read_to_string(&path).unwrap();
    let typo_line = source.lines().position(|l| l.contains("SELEC id")).unwrap() + 1;
    assert!(
        stderr.contains(&format!(
            "{file}:{typo_line}: warm[1] \"typo\".query: MySQL refused the query"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("warm[2] \"wrong_key\": key template"), "{stderr}");
    assert!(stderr.contains("{sku}"), "{stderr}");
    assert!(!stderr.contains("\"good\""), "{stderr}");

    let fine = env.config_file(&job(&env, "good", "SELECT id, name FROM products", "every 1h", ""));
    let (code, stdout, stderr) = cli_output(&["check", "--connect"], &fine);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("OK (1 warm job)"), "{stdout}{stderr}");
}

#[tokio::test]
async fn check_connect_holds_each_change_rule_against_its_table() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let db = &env.database;
    let body = format!(
        "{}[binlog]\nserver_id = 4242\ncheckpoint_key = \"{p}checkpoint\"\n\n\
         [[on_change]]\ntable = \"{db}.prodcts\"\ndelete = [\"{p}product:{{id}}\"]\n\n\
         [[on_change]]\ntable = \"{db}.products\"\nwhen_changed = [\"nmae\"]\n\
         delete = [\"{p}catalog:{{idd}}:*\"]\n\n\
         [[on_change]]\ntable = \"{db}.products\"\n\
         project = {{ key = \"{p}card:{{id}}\", columns = [\"id\", \"prize\"], ttl = \"1h\" }}\n\n\
         [[on_change]]\ntable = \"{db}.products\"\ndelete = [\"{p}product:{{id}}\"]\nwhen_changed = [\"name\"]\n",
        job(&env, "good", "SELECT id, name FROM products", "every 1h", ""),
    );
    let path = env.config_file(&body);
    let (code, _, stderr) = cli_output(&["check", "--connect"], &path);
    assert_eq!(code, Some(78), "{stderr}");
    let file = path.display();
    let source = std::fs::read_to_string(&path).unwrap();
    let line_of = |needle: &str| source.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (needle, expected) in [
        (
            "prodcts",
            format!("on_change[0] \"{db}.prodcts\".table: there is no table {db}.prodcts"),
        ),
        (
            "nmae",
            format!("on_change[1] \"{db}.products\".when_changed: when_changed names `nmae`"),
        ),
        (
            "{idd}",
            format!("on_change[1] \"{db}.products\".delete: \"{p}catalog:{{idd}}:*\" names `idd`"),
        ),
        (
            "prize",
            format!("on_change[2] \"{db}.products\".project: columns names `prize`"),
        ),
    ] {
        let wanted = format!("{file}:{}: {expected}", line_of(needle));
        assert!(stderr.contains(&wanted), "missing {wanted:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("on_change[3]"),
        "the correct rule was reported:\n{stderr}"
    );
}

#[tokio::test]
async fn cluster_mode_and_the_configuration_must_agree_or_check_and_the_daemon_say_which_way() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    // A one-node Redis Cluster of the test's own (no slots assigned: enough to say it is a cluster), and a plain one.
    let port = common::free_port();
    let nodes = env.dir.path().join("nodes.conf");
    let nodes = nodes.display().to_string();
    let mut cluster = common::spawn_redis_with(port, &["--cluster-enabled", "yes", "--cluster-config-file", &nodes]);
    let single_port = common::free_port();
    let mut single = common::spawn_redis_with(single_port, &[]);
    for port in [port, single_port] {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0").as_str()).unwrap();
        eventually(Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.ok()
        })
        .await
        .expect("the test's Redis answers");
    }
    let body = job(&env, "good", "SELECT id, name FROM products", "every 1h", "");
    let cases = [
        (
            format!("redis://127.0.0.1:{port}/0"),
            "",
            "is a Redis Cluster (ElastiCache: cluster mode enabled): set `cluster = true` in [redis]",
        ),
        (
            format!("redis://127.0.0.1:{single_port}/0"),
            "cluster = true\n",
            "[redis] cluster = true, but the server is not a Redis Cluster",
        ),
        (
            format!("redis://127.0.0.1:{port}/3"),
            "cluster = true\n",
            "redis.url: selects database 3, but a Redis Cluster has only database 0",
        ),
    ];
    for (url, extra, expected) in cases {
        let config = env
            .connection_toml_with_redis(&url)
            .replace("\n\n[admin]", &format!("\n{extra}\n[admin]"));
        let path = env.write_file("jobs.toml", &format!("{config}{body}"));
        for args in [&["check", "--connect"][..], &["run"]] {
            let (code, stdout, stderr) = cli_output(args, &path);
            assert_eq!(code, Some(78), "{url} {args:?}: {stdout}{stderr}");
            assert!(stderr.contains(expected), "{url} {args:?}: {stderr}");
        }
    }
    for server in [&mut cluster, &mut single] {
        let _ = server.kill();
        let _ = server.wait();
    }
}

/// A `server_id` that a replica of the server already has is refused by `check --connect` (and at start), naming the
/// replica; left out, the instance takes one of its own, which the server's replicas do not have.
#[tokio::test]
async fn check_connect_refuses_the_server_id_of_a_replica_the_server_reports() {
    // The test MariaDB's replica (server id 2) registers with it: SHOW SLAVE HOSTS lists it.
    common::replica();
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let body = |server_id: &str| {
        format!(
            "{}[binlog]\n{server_id}checkpoint_key = \"{p}checkpoint\"\n\n\
             [[on_change]]\ntable = \"products\"\ndelete = [\"{p}product:{{id}}\"]\n",
            job(&env, "good", "SELECT id, name FROM products", "every 1h", ""),
        )
    };
    let taken = env.config_file(&body("server_id = 2\n"));
    let (code, _, stderr) = cli_output(&["check", "--connect"], &taken);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("server_id 2 is the id of the replica 127.0.0.1:3308"),
        "{stderr}"
    );
    let automatic = env.config_file(&body(""));
    let (code, stdout, stderr) = cli_output(&["check", "--connect"], &automatic);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

/// With several binlog sources, `check` says which source each job's derived rules follow, `rules` writes it into
/// the TOML it prints, and `binlog status` asks which source (exit 64) before it connects anywhere.
#[tokio::test]
async fn with_several_sources_check_rules_and_binlog_name_the_source() {
    let env = TestEnv::new().await;
    let p = &env.prefix;
    let body = format!(
        "[[binlog]]\nname = \"shop\"\ncheckpoint_key = \"{p}cp:shop\"\n\n\
         [[binlog]]\nname = \"orders\"\nurl = \"mysql://repl@orders-db:3306/orders\"\ncheckpoint_key = \"{p}cp:orders\"\n\n\
         [[warm]]\nname = \"products\"\nschedule = \"0 0 0 1 1 *\"\nquery = \"SELECT id, name FROM products\"\n\
         refresh_query = \"SELECT id, name FROM products WHERE id = :id\"\nkey = \"{p}product:{{id}}\"\nttl = \"1h\"\n\
         derive_rules = true\nsource = \"shop\"\n"
    );
    let path = env.config_file(&body);
    let (code, stdout, stderr) = cli_output(&["check"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("(binlog source shop)"), "{stdout}");
    let (code, stdout, stderr) = cli_output(&["rules"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("[[on_change]]\nsource = \"shop\"\ntable = "),
        "{stdout}"
    );
    let (code, _, stderr) = cli_output(&["binlog", "status"], &path);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("follows several binlog sources (shop, orders): name one with --source"),
        "{stderr}"
    );
    let (code, _, stderr) = cli_output(&["binlog", "--source", "shops", "status"], &path);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("has no binlog source named \"shops\" (its sources: shop, orders)"),
        "{stderr}"
    );
}
