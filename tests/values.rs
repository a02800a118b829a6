//! Values as applications read them: compressed over a size (gzip, zstd) and encrypted columns, read back with the
//! documented Python snippets (Debian's python3 with python3-zstandard and python3-cryptography), by the audit, and
//! written the same way by refreshes and projections from the binlog.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, TestEnv, cli_output, eventually, run_once_ok, wait_for_admin};

/// The docs' Python reader: a stored value in, the JSON an application uses out.
const PY_DECODE: &str = r#"
import gzip, sys, zstandard
v = sys.stdin.buffer.read()
if v[:2] == b"\x1f\x8b": v = gzip.decompress(v)
elif v[:4] == b"\x28\xb5\x2f\xfd": v = zstandard.ZstdDecompressor().decompress(v)
sys.stdout.buffer.write(v)
"#;

/// The docs' Python reader for encrypted columns: argv = key file, JSON value on stdin; prints the opened row.
const PY_OPEN: &str = r##"
import base64, json, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
keys = dict((kid.strip(), base64.b64decode(key)) for kid, key in
            (line.split(":", 1) for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")))
def open_column(column, env):
    plain = AESGCM(keys[env["kid"]]).decrypt(base64.b64decode(env["n"]), base64.b64decode(env["c"]), column.encode())
    return json.loads(plain)
row = json.load(sys.stdin)
for column, value in row.items():
    if isinstance(value, dict) and value.get("enc") == "v1":
        row[column] = open_column(column, value)
print(json.dumps(row, separators=(",", ":")))
"##;

/// The docs' Node reader, gzip branch (zlib is built in; zstd needs the `fzstd` package, not installed here).
const NODE_GUNZIP: &str = r#"
const zlib = require("zlib");
const v = require("fs").readFileSync(0);
process.stdout.write(v[0] === 0x1f && v[1] === 0x8b ? zlib.gunzipSync(v) : v);
"#;

/// Runs `program` with `args`, `input` on its stdin; its stdout.
fn pipe_through(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} ({e}): scripts/services installs it"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn node(script: &str, input: &[u8]) -> Vec<u8> {
    pipe_through("node", &["-e", script], input)
}

/// Debian's python3 (its python3-zstandard and python3-cryptography), running `script` with `args`.
fn python(script: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut argv = vec!["-c", script];
    argv.extend_from_slice(args);
    pipe_through("/usr/bin/python3", &argv, input)
}

async fn raw(env: &TestEnv, key: &str) -> Vec<u8> {
    env.get_bytes(key).await.unwrap_or_else(|| panic!("no key {key}"))
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[tokio::test]
async fn a_300_kb_value_is_stored_compressed_under_the_limit_and_read_back_by_python_and_the_audit() {
    let env = TestEnv::new().await;
    // Row 1 renders about 300 KB of JSON (a catalog page); row 2 a few bytes.
    env.sql(
        "CREATE TABLE pages (id INT PRIMARY KEY, body LONGTEXT);
         INSERT INTO pages VALUES
           (1, (SELECT GROUP_CONCAT(CONCAT('{\"id\":', seq, ',\"name\":\"product ', seq, '\",\"price\":\"19.90\"}'))
                FROM seq_1_to_7000)),
           (2, 'short')",
    )
    .await;
    let p = &env.prefix;
    let job = |name: &str, extra: &str| {
        format!(
            "[[warm]]\nname = \"{name}\"\nschedule = \"every 1h\"\nquery = \"SELECT id, body FROM pages\"\n\
             refresh_query = \"SELECT id, body FROM pages WHERE id = :id\"\nkey = \"{p}{name}:{{id}}\"\nttl = \"1h\"\n{extra}\n"
        )
    };
    let config = env.config_file(
        &[
            job("gz", "compress = \"gzip\""),
            job("zs", "compress = \"zstd\""),
            job("plain", "max_value_bytes = \"1MiB\""),
        ]
        .concat(),
    );
    let (code, stdout, stderr) = cli_output(&["run", "--once"], &config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("gz ") && l.contains("(of ")),
        "{stdout}"
    );

    let plain = raw(&env, &format!("{p}plain:1")).await;
    assert!(plain.len() > 300_000, "{} bytes", plain.len());
    for (job, magic) in [("gz", GZIP), ("zs", ZSTD)] {
        let stored = raw(&env, &format!("{p}{job}:1")).await;
        assert!(stored.starts_with(magic), "{job}: {:?}", &stored[..4]);
        assert!(stored.len() < 100 * 1024, "{job}: {} bytes stored", stored.len());
        assert_eq!(python(PY_DECODE, &[], &stored), plain, "{job}");
        if job == "gz" {
            assert_eq!(node(NODE_GUNZIP, &stored), plain, "the Node reader");
        }
        // Under compress_over (1 KiB by default): plain JSON.
        assert_eq!(
            raw(&env, &format!("{p}{job}:2")).await,
            raw(&env, &format!("{p}plain:2")).await
        );
    }

    // The audit compares what an application reads, so compressed keys are consistent...
    let audit = || cli_output(&["audit", "--job", "gz", "--job", "zs"], &config);
    let (code, stdout, stderr) = audit();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("gz: 2 keys checked, 0 stale") && stdout.contains("zs: 2 keys checked, 0 stale"),
        "{stdout}"
    );
    // ...and a changed row makes them stale.
    env.sql("UPDATE pages SET body = CONCAT(body, ' ') WHERE id = 1").await;
    let (code, stdout, stderr) = audit();
    assert_eq!(code, Some(1), "{stdout}{stderr}");

    // A dry run prints each key's stored and rendered size.
    let (_, stdout, _) = cli_output(&["run", "--once", "--dry-run", "--job", "zs"], &config);
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("{p}zs:1\t")))
        .expect("dry-run line");
    let fields: Vec<u64> = line.split('\t').skip(3).map(|f| f.parse().unwrap()).collect();
    assert!(fields[0] < 100 * 1024 && fields[1] > 300_000, "{line}");
}

#[tokio::test]
async fn refreshes_and_projections_from_the_binlog_write_the_warm_jobs_encoding() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), notes TEXT);
         INSERT INTO products VALUES (1, 'kettle', REPEAT('steel and glass ', 200))",
    )
    .await;
    let p = &env.prefix;
    let body = format!(
        r#"[defaults]
compress = "zstd"
compress_over = "256B"

{binlog}
[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name, notes FROM products"
refresh_query = "SELECT id, name, notes FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"

[[on_change]]
table = "products"
refresh = ["{p}product:{{id}}"]

[[on_change]]
table = "products"
project = {{ key = "{p}notes:{{id}}", columns = ["id", "notes"], ttl = "1h" }}
"#,
        binlog = env.binlog_toml("on_gap = \"none\"")
    );
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let key = format!("{p}product:1");
    eventually(Duration::from_secs(20), || async { env.get_bytes(&key).await })
        .await
        .expect("the warm run wrote the key");
    let warmed = raw(&env, &key).await;
    assert!(warmed.starts_with(ZSTD));

    env.sql("UPDATE products SET notes = REPEAT('cast iron ', 300) WHERE id = 1")
        .await;
    let refreshed = eventually(Duration::from_secs(20), || async {
        let value = env.get_bytes(&key).await?;
        let json = python(PY_DECODE, &[], &value);
        String::from_utf8_lossy(&json).contains("cast iron").then_some(value)
    })
    .await
    .unwrap_or_else(|| panic!("the refresh did not land: {}", daemon.log()));
    assert!(refreshed.starts_with(ZSTD), "a refresh stores what the warm job stores");
    let projected = raw(&env, &format!("{p}notes:1")).await;
    assert!(projected.starts_with(ZSTD), "a projection stores what [defaults] says");
    let projected: serde_json::Value = serde_json::from_slice(&python(PY_DECODE, &[], &projected)).unwrap();
    assert_eq!(projected["id"], 1);
    assert!(projected["notes"].as_str().unwrap().starts_with("cast iron"));
    daemon.stop().await;
}

#[tokio::test]
async fn encrypted_columns_round_trip_through_python_and_a_rotated_key_still_reads_old_values() {
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE sessions (id INT PRIMARY KEY, email VARCHAR(80), token VARCHAR(40), seen INT);
         INSERT INTO sessions VALUES (1, 'alice@example.com', 't0k3n-1', 5), (2, NULL, 't0k3n-2', 6)",
    )
    .await;
    let p = &env.prefix;
    let k1 = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let k2 = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let keys = env.write_file(
        "cache-key",
        &format!("# the key new values are written with comes first\n{k1}\n"),
    );
    let job = format!(
        "[[warm]]\nname = \"sessions\"\nschedule = \"every 1h\"\nquery = \"SELECT id, email, token, seen FROM sessions\"\n\
         refresh_query = \"SELECT id, email, token, seen FROM sessions WHERE id = :id\"\nkey = \"{p}session:{{id}}\"\n\
         ttl = \"1h\"\nencrypt_columns = [\"email\", \"token\"]\n"
    );
    let config = env.config_file(&format!("[crypto]\nkey_file = \"{}\"\n\n{job}", keys.display()));
    run_once_ok(&config);

    let stored = raw(&env, &format!("{p}session:1")).await;
    let value: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains("alice"),
        "plaintext in {value}"
    );
    assert_eq!(
        (value["email"]["enc"].as_str(), value["email"]["kid"].as_str()),
        (Some("v1"), Some("k1"))
    );
    assert_eq!(value["seen"], 5, "other columns stay plain");
    let opened = python(PY_OPEN, &[keys.to_str().unwrap()], &stored);
    assert_eq!(
        String::from_utf8_lossy(&opened).trim(),
        r#"{"id":1,"email":"alice@example.com","token":"t0k3n-1","seen":5}"#
    );
    let opened = python(
        PY_OPEN,
        &[keys.to_str().unwrap()],
        &raw(&env, &format!("{p}session:2")).await,
    );
    assert!(
        String::from_utf8_lossy(&opened).contains(r#""email":null"#),
        "NULL is sealed too"
    );

    // Rotation: k2 writes, k1 still reads. Old values audit consistent; new ones are sealed with k2.
    std::fs::write(&keys, format!("{k2}\n{k1}\n")).unwrap();
    let (code, stdout, stderr) = cli_output(&["audit"], &config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 keys checked, 0 stale"), "{stdout}");
    run_once_ok(&config);
    let stored = raw(&env, &format!("{p}session:1")).await;
    let value: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(value["token"]["kid"], "k2");
    let opened = python(PY_OPEN, &[keys.to_str().unwrap()], &stored);
    assert!(String::from_utf8_lossy(&opened).contains("t0k3n-1"));

    // The key as a systemd credential (cache-key) instead of [crypto] key_file.
    let credentials = env.dir.path().join("credentials-dir");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::copy(&keys, credentials.join("cache-key")).unwrap();
    let no_crypto = env.write_file("no-crypto.toml", &format!("{}{job}", env.connection_toml()));
    let (code, stdout, stderr) = cli_output(&["check", "--credentials", credentials.to_str().unwrap()], &no_crypto);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // No key, or an unreadable one: a configuration error (78) naming the field.
    let (code, _, stderr) = cli_output(&["check"], &no_crypto);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("\"sessions\".encrypt_columns: needs a key: set [crypto] key_file"),
        "{stderr}"
    );
    std::fs::remove_file(&keys).unwrap();
    let (code, _, stderr) = cli_output(&["check"], &config);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("crypto.key_file: cannot read the key file"), "{stderr}");
    // An unknown codec too.
    let bad = env.write_file(
        "bad-codec.toml",
        &format!("{}[defaults]\ncompress = \"lz4\"\n", env.connection_toml()),
    );
    let (code, _, stderr) = cli_output(&["check"], &bad);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("defaults.compress: \"lz4\" is not a codec"), "{stderr}");
}
