//! One value mapping: every MySQL/MariaDB column type comes out of the binlog exactly as a warm query renders it, in
//! values (a projection of every column against the warm job's value) and in keys (a delete rule built from the
//! binlog image must name the keys the warm job wrote).

mod common;

use std::time::Duration;

use sqlx::Connection as _;

use common::{Daemon, TestEnv, eventually, metric, wait_for_admin};

/// Every type, and the edge values that used to differ: midnight and fractional DATETIME, TIMESTAMP, negative and
/// > 24 h TIME, YEAR, ENUM, SET, BIT, CHAR with trailing spaces, latin1, zero-padded BINARY, non-UTF-8 bytes.
const SCHEMA: &str = "
CREATE TABLE kinds (
  id INT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED, ii INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED, dc DECIMAL(12,3), f FLOAT, d DOUBLE, dt DATE, dtm DATETIME, dtm6 DATETIME(6),
  ts TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, tm TIME, tm6 TIME(6), yr YEAR, en ENUM('a','b','c'), st SET('x','y','z'),
  bt BIT(10), ch CHAR(5), vc VARCHAR(20), tx TEXT, l1 VARCHAR(10) CHARACTER SET latin1, bn BINARY(6),
  vb VARBINARY(10), bl BLOB, js JSON, note VARCHAR(10)
)";

const ROWS: &str = "
SET time_zone = '+00:00';
INSERT INTO kinds VALUES
 (1, -5, 65535, -8388608, 16777215, 4294967295, -9223372036854775808, 18446744073709551615, -1234.5, 0.1, 2.5,
  '2026-11-26', '2026-11-26 00:00:00', '2026-11-26 08:30:05.250000', '2026-11-26 10:00:00', '2026-11-26 10:00:00.125',
  '-838:59:59', '27:00:00.5', 2027, 'b', 'x,z', b'1010101010', 'ab  ', 'héllo \"q\"', 'line\\nbreak',
  'café €', 'ab', x'00ff10', x'deadbeef', '{\"b\": {\"zz\": null, \"y\": true}, \"aa\": [1, 2.5, \"s\"]}', 'n'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2000-01-01 23:59:59', NULL, NULL, NULL,
  NULL, '00:00:00', 0, 'a', '', b'0', '', '', '', '', NULL, '', '', NULL, 'n')
";

/// Placeholders for the key test: every type that can name a key.
const KEY_COLUMNS: &[&str] = &[
    "id", "ti", "si", "mi", "miu", "ii", "bi", "biu", "dc", "f", "d", "dt", "dtm", "dtm6", "ts", "ts3", "tm", "tm6",
    "yr", "en", "st", "bt", "ch", "vc", "l1", "bn", "vb",
];

fn config(env: &TestEnv) -> String {
    let p = &env.prefix;
    let columns: Vec<String> = [
        "id", "ti", "si", "mi", "miu", "ii", "bi", "biu", "dc", "f", "d", "dt", "dtm", "dtm6", "ts", "ts3", "tm",
        "tm6", "yr", "en", "st", "bt", "ch", "vc", "tx", "l1", "bn", "vb", "bl", "js", "note",
    ]
    .iter()
    .map(|c| format!("\"{c}\""))
    .collect();
    let key: String = KEY_COLUMNS.iter().map(|c| format!(":{{{c}}}")).collect();
    format!(
        r#"{binlog}
[[warm]]
name = "values"
schedule = "0 0 0 1 1 *"
query = "SELECT * FROM kinds"
key = "{p}w:{{id}}"
ttl = "1h"

[[warm]]
name = "keys"
schedule = "0 0 0 1 1 *"
query = "SELECT * FROM kinds WHERE id = 1"
key = "{p}k{key}"
ttl = "1h"

[[on_change]]
table = "{db}.kinds"
project = {{ key = "{p}b:{{id}}", columns = [{columns}], ttl = "1h" }}

[[on_change]]
table = "{db}.kinds"
delete = ["{p}k{key}"]
"#,
        binlog = env.binlog_toml("on_gap = \"none\""),
        db = env.database,
        columns = columns.join(", "),
    )
}

#[tokio::test]
async fn binlog_values_and_keys_are_byte_identical_to_warm_ones() {
    let _binlog = common::binlog_shared();
    byte_identical(TestEnv::new().await).await;
}

/// The same on Oracle MySQL, whose binlog differs (JSON in its binary form, among others).
#[tokio::test]
async fn on_mysql_binlog_values_and_keys_are_byte_identical_to_warm_ones() {
    let server = common::OwnMySql::start(31);
    byte_identical(TestEnv::new().await.on_mysql(&server).await).await;
}

/// With MySQL's transaction compression on, every transaction arrives as one zstd payload: the same values, and the
/// checkpoint ends where the payloads do.
#[tokio::test]
async fn on_mysql_compressed_transactions_apply_byte_identical_and_checkpoint_where_they_end() {
    let server = common::OwnMySql::start(32);
    let env = TestEnv::new().await.on_mysql(&server).await;
    env.sql("SET GLOBAL binlog_transaction_compression = ON").await;
    let env = byte_identical(env).await;
    assert_checkpoint_at_server_position(&env).await;
}

/// The same with MariaDB's compressed row and statement events (`log_bin_compress`, every event over 10 bytes).
#[tokio::test]
async fn on_mariadb_compressed_events_apply_byte_identical_and_checkpoint_where_they_end() {
    let server = common::OwnMariaDb::start_with(33, &["--log-bin-compress", "--log-bin-compress-min-len=10"]);
    let env = TestEnv::new().await.on_mariadb(&server).await;
    let env = byte_identical(env).await;
    assert_checkpoint_at_server_position(&env).await;
    // The events really were compressed.
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let events: Vec<(String, u64, String, u32, u64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe("SHOW BINLOG EVENTS".to_string()))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let kinds: Vec<&str> = events.iter().map(|event| event.2.as_str()).collect();
    for compressed in ["Query_compressed", "Write_rows_compressed", "Update_rows_compressed"] {
        assert!(
            kinds.iter().any(|kind| kind.starts_with(compressed)),
            "no {compressed} event in {kinds:?}"
        );
    }
}

/// After the last change was applied and the daemon stopped, its checkpoint is the server's current position.
async fn assert_checkpoint_at_server_position(env: &TestEnv) {
    use sqlx::Row as _;
    let mut conn = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let status = match sqlx::query("SHOW BINARY LOG STATUS").fetch_one(&mut conn).await {
        Ok(row) => row,
        Err(_) => sqlx::query("SHOW MASTER STATUS").fetch_one(&mut conn).await.unwrap(),
    };
    let (file, pos): (String, u64) = (status.get(0), status.get(1));
    let checkpoint = env
        .get(&format!("{}checkpoint", env.prefix))
        .await
        .expect("a checkpoint");
    assert!(
        checkpoint.starts_with(&format!("{file}:{pos} ")),
        "checkpoint {checkpoint:?}, server at {file}:{pos}"
    );
}

async fn byte_identical(env: TestEnv) -> TestEnv {
    env.sql(SCHEMA).await;
    let path = env.config_file(&config(&env));
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let following = eventually(Duration::from_secs(20), || async {
        (metric(&env, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "not following the binlog:\n{}", daemon.log());

    // The rows arrive through the binlog: projections of every column.
    env.sql(ROWS).await;
    let p = &env.prefix;
    for id in [1, 2] {
        let key = format!("{p}b:{id}");
        let written = eventually(Duration::from_secs(15), || env.get(&key)).await;
        assert!(written.is_some(), "projection b:{id} never written:\n{}", daemon.log());
    }
    // The same rows through a warm query.
    let (code, stdout, stderr) = common::cli_output(&["run", "--once", "--job", "values", "--job", "keys"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for id in [1, 2] {
        let warm = env.get(&format!("{p}w:{id}")).await.expect("warm value");
        let binlog = env.get(&format!("{p}b:{id}")).await.expect("binlog value");
        if warm != binlog {
            let (warm_text, binlog_text) = (warm.clone(), binlog.clone());
            let warm: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&warm).unwrap();
            let binlog: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&binlog).unwrap();
            let differ: Vec<String> = warm
                .iter()
                .filter(|(column, value)| binlog.get(*column) != Some(value))
                .map(|(column, value)| format!("{column}: warm {value} binlog {:?}", binlog.get(column)))
                .collect();
            panic!("row {id} differs in {differ:#?}:\nwarm   {warm_text}\nbinlog {binlog_text}");
        }
    }

    // Keys: the warm job wrote one key from every key-able column of row 1; a change to that row must delete it
    // through the delete rule, which renders the same template from the binlog image.
    let keys: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{p}k:")))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    env.sql("UPDATE kinds SET note = 'changed' WHERE id = 1").await;
    let deleted = eventually(Duration::from_secs(15), || async {
        env.get(&keys[0]).await.is_none().then_some(())
    })
    .await;
    assert!(
        deleted.is_some(),
        "the binlog rendered another key than the warm job's {}:\n{}",
        keys[0],
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));
    env
}
