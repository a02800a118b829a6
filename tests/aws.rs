//! What docs/aws.md tells RDS, Aurora and EC2 users, run where it can be here: the server settings judged with where
//! to set them (the RDS retention table stood in by a table of the same name on a MariaDB of the test's own), how
//! long the daemon can be down, and the credentials recipe fed by a stand-in for Secrets Manager.

mod common;

use std::time::Duration;

use common::{Daemon, TestEnv, eventually, get};
use sqlx::Connection as _;

/// `check --connect`'s exit code and everything it printed.
fn check(env: &TestEnv, config: &std::path::Path) -> (Option<i32>, String) {
    let output = env
        .cli()
        .args(["check", "--connect", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&output);
    (output.status.code(), format!("{stdout}{stderr}"))
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
