//! What docs/aws.md tells RDS, Aurora and EC2 users, run where it can be here: the server settings judged with where
//! to set them (the RDS retention table stood in by a table of the same name on a MariaDB of the test's own), how
//! long the daemon can be down, and the credentials recipe fed by a stand-in for Secrets Manager.

mod common;

use std::time::Duration;

use common::{Daemon, TestEnv, eventually, get};
use sqlx::Connection as _;

/// `check --connect`'s exit code and everything it printed.
fn check(env: &TestEnv, config: &std::path::Path) -> (Option<i32>, String) {
    env.run_cli(&["check", "--connect"], config)
}

#[tokio::test]
async fn server_settings_are_judged_with_where_to_set_them_and_how_long_the_daemon_can_be_down() {
    let server =
        common::OwnMariaDb::start_with(51, &["--binlog-row-image=MINIMAL", "--binlog-expire-logs-seconds=600"]);
    let env = TestEnv::new().await.on_mariadb(&server).await;
    let root = format!("{}/mysql", server.url());
    let admin = async |sql: &str| {
        let mut conn = sqlx::MySqlConnection::connect(&root).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let p = &env.prefix;
    let config = env.config_file(&format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}checkpoint\"\nheartbeat = \"1s\"\n\
         \n[ha]\nenabled = true\nkey = \"{p}leader\"\n\n[[on_change]]\ntable = \"t\"\ndelete = [\"{p}t:{{id}}\"]\n",
        10_000 + fastrand::u32(..1_000_000)
    ));

    // A server of one's own: what to set, in which section of its configuration file.
    let (code, out) = check(&env, &config);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("binlog_row_image must be FULL, it is \"MINIMAL\"")
            && out.contains("set binlog_row_image = FULL under [mariadb] in the server's configuration file"),
        "{out}"
    );
    admin("SET GLOBAL binlog_row_image = FULL").await;
    let (code, out) = check(&env, &config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("binlogs are kept 10m: a daemon down longer than that")
            && out.contains("set binlog_expire_logs_seconds = 86400"),
        "a short retention is a warning with its fix:\n{out}"
    );

    // RDS: the retention is RDS's own setting (NULL purges at once), and settings live in the DB parameter group.
    admin(
        "CREATE TABLE mysql.rds_configuration (name VARCHAR(100) PRIMARY KEY, value VARCHAR(100));\
         INSERT INTO mysql.rds_configuration VALUES ('binlog retention hours', NULL);\
         SET GLOBAL binlog_row_image = MINIMAL",
    )
    .await;
    let (code, out) = check(&env, &config);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("set binlog_row_image = FULL in the instance's DB parameter group and reboot it"),
        "{out}"
    );
    admin("SET GLOBAL binlog_row_image = FULL").await;
    let (code, out) = check(&env, &config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("binlogs are kept 0s")
            && out.contains("CALL mysql.rds_set_configuration('binlog retention hours', 24)"),
        "{out}"
    );

    // Retention raised as the guide says: the daemon shows how long it can be down, on /ha and the status page.
    admin("UPDATE mysql.rds_configuration SET value = '24' WHERE name = 'binlog retention hours'").await;
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    let down_for = eventually(Duration::from_secs(20), || async {
        let ha: serde_json::Value = serde_json::from_str(&get(&env, "/ha").await?.body).ok()?;
        ha["binlog_can_be_down_for_seconds"].as_f64().map(|s| (s, ha))
    })
    .await;
    let Some((seconds, ha)) = down_for else {
        panic!("/ha never said how long the daemon can be down:\n{}", daemon.log());
    };
    assert!((86_000.0..=86_400.0).contains(&seconds), "24 h less the lag: {ha:#}");
    let page = get(&env, "/").await.unwrap().body;
    let row = page.split("can be down for</td><td>").nth(1).unwrap_or_default();
    assert!(row.starts_with("23h") || row.starts_with("24h"), "{page}");
    assert!(
        daemon
            .log()
            .contains("binlogs are kept 24h: the daemon can be down that long"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));
}

/// A stand-in for the AWS CLI: the secret or parameter named is the file of that name (slashes as `_`) under
/// `$STANDIN`; every call's arguments are appended to `$STANDIN/calls`.
const STANDIN_AWS: &str = r#"#!/bin/sh
echo "$*" >> "$STANDIN/calls"
case "$1 $2 $3" in
"secretsmanager get-secret-value --secret-id" | "ssm get-parameter --name") ;;
*) echo "stand-in aws: unexpected $*" >&2; exit 2 ;;
esac
cat "$STANDIN/$(printf %s "$4" | tr / _)"
"#;

#[tokio::test]
async fn credentials_fetched_from_secrets_manager_and_ssm_feed_the_service() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = TestEnv::new().await;
    let standin = env.dir.path().join("standin");
    std::fs::create_dir(&standin).unwrap();
    let aws = standin.join("aws");
    std::fs::write(&aws, STANDIN_AWS).unwrap();
    std::fs::set_permissions(&aws, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(standin.join("prod_cw_mysql-url"), format!("{}\n", env.mysql_url)).unwrap();
    std::fs::write(standin.join("_prod_cw_redis-url"), format!("{}\n", env.redis_url)).unwrap();
    let sources = env.write_file(
        "credential-sources",
        "# name kind id\nmysql-url secretsmanager prod/cw/mysql-url\nredis-url ssm /prod/cw/redis-url\n",
    );
    let credentials = env.dir.path().join("credentials");
    let fetch = |sources: &std::path::Path| {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/aws/fetch-credentials"))
            .arg(sources)
            .arg(&credentials)
            .env("AWS_CLI", &aws)
            .env("STANDIN", &standin)
            .output()
            .unwrap()
    };
    let output = fetch(&sources);
    assert!(output.status.success(), "{:?}", common::text(&output));
    let calls = std::fs::read_to_string(standin.join("calls")).unwrap();
    assert_eq!(
        calls,
        "secretsmanager get-secret-value --secret-id prod/cw/mysql-url --query SecretString --output text\n\
         ssm get-parameter --name /prod/cw/redis-url --with-decryption --query Parameter.Value --output text\n"
    );
    for name in ["mysql-url", "redis-url"] {
        let file = credentials.join(name);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
    }

    // The service reads them in place of the file's URLs, which lead nowhere.
    let p = &env.prefix;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let config = env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\nurl = \"mysql://nobody@127.0.0.1:1/none\"\n\n[redis]\nurl = \"redis://127.0.0.1:1/0\"\n\n\
             [admin]\nlisten = \"{}\"\n\n[channel]\nenabled = false\n\n[[warm]]\nname = \"j\"\n\
             schedule = \"0 0 0 1 1 *\"\nrun_on_start = true\nquery = \"SELECT id FROM t\"\nkey = \"{p}j:{{id}}\"\n\
             ttl = \"1h\"\n",
            env.admin_addr()
        ),
    );
    let mut daemon = Daemon::start(
        &env,
        &config,
        &[],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    let key = format!("{p}j:1");
    let warmed = eventually(Duration::from_secs(20), || env.get(&key)).await;
    assert!(warmed.is_some(), "{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));

    // A secret that cannot be read fails the unit and leaves the last good value; a bad line is named.
    std::fs::remove_file(standin.join("_prod_cw_redis-url")).unwrap();
    let output = fetch(&sources);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        common::text(&output)
            .1
            .contains("redis-url: ssm /prod/cw/redis-url could not be read; the last value stays")
    );
    assert_eq!(
        std::fs::read_to_string(credentials.join("redis-url")).unwrap().trim(),
        env.redis_url
    );
    let bad = env.write_file("bad-sources", "redis-url vault secret/x\n");
    let output = fetch(&bad);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        common::text(&output).1.contains("unknown kind \"vault\""),
        "{:?}",
        common::text(&output)
    );
}
