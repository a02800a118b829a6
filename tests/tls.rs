//! TLS for real: warm jobs over `rediss://` (password and ACL user) and MySQL with `verify-identity`, against a
//! TLS-only redis-server and a MariaDB with SSL, and the admin endpoint over HTTPS, using the CA and the server
//! certificate `scripts/services` generates.

mod common;

use std::time::Duration;

use common::{Daemon, TestEnv, cli_output, eventually, job, services};

/// A Redis client that trusts the test CA and logs in as `user`.
async fn tls_redis(user: &str, password: &str) -> redis::aio::MultiplexedConnection {
    let s = services();
    let url = s
        .redis_tls
        .replace("rediss://", &format!("rediss://{user}:{password}@"));
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(&s.tls_ca).unwrap()),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    redis::Client::build_with_tls(url.as_str(), certificates)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("TLS Redis is reachable")
}

async fn unlink_prefix(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("UNLINK").arg(keys).query_async(conn).await.unwrap();
    }
}

fn config(env: &TestEnv, redis: &str, mysql: &str, query: &str) -> std::path::PathBuf {
    let p = &env.prefix;
    env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\n{mysql}\n\n[redis]\n{redis}\nconnect_timeout = \"3s\"\n\n[admin]\nenabled = false\n\n\
             [[warm]]\nname = \"tls\"\nschedule = \"every 1h\"\nquery = \"{query}\"\nkey = \"{p}tls:{{id}}\"\n\
             ttl = \"1h\"\n"
        ),
    )
}

#[tokio::test]
async fn warm_job_writes_over_rediss_with_password_and_with_an_acl_user() {
    let env = TestEnv::new().await;
    let s = services();
    let ca = &s.tls_ca;
    for (user, password) in [("", "cwtest-secret"), ("cwacl", "cwacl-secret")] {
        let url = s
            .redis_tls
            .replace("rediss://", &format!("rediss://{user}:{password}@"));
        let path = config(
            &env,
            &format!("url = \"{url}\"\nca_file = \"{ca}\""),
            &format!("url = \"{}\"", env.mysql_url),
            "SELECT 7 AS id, 'secure' AS via",
        );
        let (code, stdout, stderr) = cli_output(&["run", "--once"], &path);
        assert_eq!(code, Some(0), "user {user:?}: {stdout}{stderr}");
        let mut conn = tls_redis(user, password).await;
        let key = format!("{}tls:7", env.prefix);
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        assert_eq!(value.as_deref(), Some(r#"{"id":7,"via":"secure"}"#));
        unlink_prefix(&mut conn, &env.prefix).await;
    }
}

#[tokio::test]
async fn rediss_refuses_a_server_the_ca_does_not_vouch_for() {
    let env = TestEnv::new().await;
    let s = services();
    let url = s.redis_tls.replace("rediss://", "rediss://:cwtest-secret@");
    // No ca_file: the system trust store does not know the test CA.
    let path = config(
        &env,
        &format!("url = \"{url}\""),
        &format!("url = \"{}\"", env.mysql_url),
        "SELECT 1 AS id",
    );
    let (code, stdout, stderr) = cli_output(&["run", "--once"], &path);
    assert_eq!(
        code,
        Some(69),
        "no connection without a trusted certificate: {stdout}{stderr}"
    );
    assert!(stderr.contains("Redis at rediss://:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("cwtest-secret"), "{stderr}");
}

#[tokio::test]
async fn mysql_verify_identity_uses_tls_with_the_configured_ca() {
    let env = TestEnv::new().await;
    let ca = &services().tls_ca;
    let cipher_query = "SELECT 1 AS id, VARIABLE_VALUE AS cipher FROM information_schema.SESSION_STATUS \
                        WHERE VARIABLE_NAME = 'Ssl_cipher'";
    let path = config(
        &env,
        &format!("url = \"{}\"", env.redis_url),
        &format!(
            "url = \"{}\"\nssl_mode = \"verify-identity\"\nssl_ca = \"{ca}\"",
            env.mysql_url
        ),
        cipher_query,
    );
    let (code, stdout, stderr) = cli_output(&["run", "--once"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let value = env.get_json(&format!("{}tls:1", env.prefix)).await.unwrap();
    let cipher = value["cipher"].as_str().unwrap();
    assert!(!cipher.is_empty(), "the warm query's session is not encrypted: {value}");

    // Without the CA, verification against the system roots fails: no silent fallback to plain text.
    let path = config(
        &env,
        &format!("url = \"{}\"", env.redis_url),
        &format!("url = \"{}\"\nssl_mode = \"verify-ca\"", env.mysql_url),
        cipher_query,
    );
    let (code, stdout, stderr) = cli_output(&["run", "--once"], &path);
    assert_eq!(
        code,
        Some(69),
        "no connection without a trusted certificate: {stdout}{stderr}"
    );
    assert!(stderr.contains("MySQL at"), "{stderr}");
}

/// `[admin]` lines for HTTPS with the services' server certificate and key (or `key` instead).
fn https(cert: &str, key: &str) -> String {
    format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\n")
}

#[tokio::test]
async fn the_admin_endpoint_serves_https_only_and_the_command_line_speaks_it() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let dir = std::path::Path::new(&services().tls_ca).parent().unwrap().to_path_buf();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let body = https(&cert.display().to_string(), &key.display().to_string())
        + &job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", "");
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    // `status` reaches the endpoint over HTTPS, trusting the certificate the configuration names.
    let ready = eventually(Duration::from_secs(30), || async {
        let (code, stdout, _) = cli_output(&["status", "-o", "json"], &config);
        (code == Some(0)).then_some(stdout)
    })
    .await;
    assert!(ready.is_some(), "{}", daemon.log());
    // Any client that trusts the CA verifies it by the address it names.
    let url = format!("https://{}/healthz", env.admin_addr());
    let ca = services().tls_ca.clone();
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert", &ca, &url])
        .output()
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    // Plain HTTP gets no answer.
    let plain = cachewarden::ops::admin::request(env.admin_addr(), hyper::Method::GET, "/healthz").await;
    assert!(plain.is_err(), "{plain:?}");
    // trigger posts over HTTPS too.
    let (code, _, stderr) = cli_output(&["trigger", "j"], &config);
    assert_eq!(code, Some(0), "{stderr}");
    let written = eventually(Duration::from_secs(20), || async {
        env.get(&format!("{}j:1", env.prefix)).await
    })
    .await;
    assert!(written.is_some(), "{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));

    // check: half a pair, and a key that is not the certificate's, named by field.
    for (body, field, says) in [
        (
            "tls_cert = \"/nonexistent.pem\"\n\n".to_string(),
            "tls_key",
            "tls_cert is set without tls_key",
        ),
        (
            https("/nonexistent.pem", &key.display().to_string()),
            "tls_cert",
            "cannot read /nonexistent.pem",
        ),
        (
            https(&cert.display().to_string(), &dir.join("ca.key").display().to_string()),
            "tls_key",
            "do not make a certificate and its key",
        ),
    ] {
        let config = env.config_file(&(body + &job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", "")));
        let (code, stdout, stderr) = cli_output(&["check"], &config);
        assert_eq!(code, Some(78), "{stdout}{stderr}");
        assert!(
            stderr.contains(&format!("[admin] {field}")) || stderr.contains(&format!("admin.{field}")),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
}
