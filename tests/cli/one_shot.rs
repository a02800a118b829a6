//! The one-shot commands: run --once exit codes and summary, --dry-run, jobs, credentials, and exit 69 for a server
//! that is not there.

use super::*;

#[tokio::test]
async fn run_once_exit_codes_and_summary() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let good = job(&env, "good", "SELECT id, name FROM products", "every 1h", "");
    let broken = job(&env, "broken", "SELECT id FROM nowhere", "every 1h", "");
    let off = job(&env, "off", "SELECT id FROM products", "every 1h", "enabled = false");
    let path = env.config_file(&[good.clone(), broken, off].concat());
    let p = &env.prefix;

    let (code, stdout, stderr) = cli_output(&["run", "--once", "--job", "good"], &path);
    assert_eq!(code, Some(0), "{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("good ")).expect("summary row");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..5], ["good", "ok", "2", "2", "0"], "{stdout}");
    // Bytes with their unit, then the duration as configuration files write one.
    assert_eq!(fields[6], "B", "{stdout}");
    assert!(fields[7].ends_with("ms") || fields[7].ends_with('s'), "{stdout}");
    assert_eq!(env.keys().await, [format!("{p}good:1"), format!("{p}good:2")]);

    // All enabled jobs: one fails, so the exit code is 1; the good one still wrote, the disabled one did not run.
    let (code, stdout, _) = cli_output(&["run", "--once"], &path);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("broken: MySQL refused the query"), "{stdout}");
    assert!(!stdout.contains("off "), "{stdout}");

    // A disabled job runs when named.
    let (code, stdout, stderr) = cli_output(&["run", "--once", "--job", "off"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(env.get(&format!("{p}off:1")).await.is_some());

    let (code, _, stderr) = cli_output(&["run", "--once", "--job", "nope"], &path);
    assert_eq!(code, Some(64), "an unknown job is a command-line mistake: {stderr}");
    assert!(
        stderr.contains("no warm job named \"nope\"") && stderr.contains("jobs: good, broken, off"),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli_output(&["audit", "--job", "nope"], &path);
    assert_eq!(code, Some(64), "{stdout}{stderr}");

    let (code, ..) = cli_output(&["run", "--job", "good"], &path);
    assert_eq!(code, Some(64), "--job without --once is a usage error");
}

#[tokio::test]
async fn run_once_fails_fast_without_redis_and_hides_the_password() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let body = job(&env, "good", "SELECT id FROM products", "every 1h", "");
    let source = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:1/0\"\nconnect_timeout = \"2s\"\n\n{body}",
        env.mysql_url
    );
    let path = env.write_file("jobs.toml", &source);
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = cli_output(&["run", "--once"], &path);
    assert_eq!(code, Some(69), "an unreachable server exits 69: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("Redis at redis://:***@127.0.0.1:1/0"), "{stderr}");
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"), "{stderr}");
    // Said once, not once per layer of the error.
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}

#[tokio::test]
async fn dry_run_prints_keys_ttls_and_sizes_and_writes_nothing() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let path = env.config_file(&job(
        &env,
        "p",
        "SELECT id, name FROM products ORDER BY id",
        "every 1h",
        "",
    ));
    let (code, stdout, stderr) = cli_output(&["run", "--once", "--dry-run"], &path);
    assert_eq!(code, Some(0), "{stderr}");
    let p = &env.prefix;
    let lines: Vec<&str> = stdout.lines().collect();
    // job, key, TTL, stored bytes, rendered bytes (the same without compression).
    assert_eq!(
        lines,
        [format!("p\t{p}p:1\t1h\t24\t24"), format!("p\t{p}p:2\t1h\t22\t22")]
    );
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("p "))
        .expect("summary row on stderr");
    assert_eq!(
        summary.split_whitespace().take(4).collect::<Vec<_>>(),
        ["p", "ok", "2", "2"],
        "{stderr}"
    );
    assert!(env.keys().await.is_empty());
}

#[tokio::test]
async fn jobs_lists_schedule_ttl_key_and_next_fire_times() {
    let env = TestEnv::new().await;
    let path = env.config_file(&job(&env, "hourly", "SELECT 1 AS id", "0 0 * * * *", ""));
    let (code, stdout, _) = cli_output(&["jobs"], &path);
    assert_eq!(code, Some(0));
    let row = stdout.lines().find(|l| l.starts_with("hourly")).expect("row");
    assert!(row.contains("0 0 * * * *") && row.contains("1h") && row.contains(&format!("{}hourly:{{id}}", env.prefix)));
    let times: Vec<&str> = row.split(", ").collect();
    assert_eq!(times.len(), 3, "{row}");
    // RFC 3339 in UTC, like every time the commands and the admin endpoint print.
    for time in times {
        let time = time.rsplit("  ").next().unwrap().trim();
        assert!(time.ends_with(":00:00Z"), "{row}");
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time} in {row}");
    }
    // The same as JSON.
    let (code, stdout, stderr) = cli_output(&["jobs", "-o", "json"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let jobs: serde_json::Value = serde_json::from_str(&stdout).expect("jobs -o json is JSON");
    assert_eq!(jobs[0]["name"], "hourly", "{jobs}");
    assert_eq!(jobs[0]["ttl_seconds"], 3600.0, "{jobs}");
    assert_eq!(jobs[0]["key"], format!("{}hourly:{{id}}", env.prefix), "{jobs}");
    assert_eq!(jobs[0]["next_runs"].as_array().map(Vec::len), Some(3), "{jobs}");
}

#[tokio::test]
async fn operator_commands_read_the_credentials_and_say_where_a_missing_url_may_come_from() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = &env.prefix;
    let jobs = job(&env, "good", "SELECT id, name FROM products", "every 1h", "");

    // No URL anywhere: the error lists every place one may come from.
    let bare = env.write_file("bare.toml", &jobs);
    let (code, _, stderr) = cli_output(&["check"], &bare);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("mysql.url: is required")
            && stderr.contains("CACHEWARDEN_MYSQL__URL")
            && stderr.contains("credential mysql-url")
            && stderr.contains("--credentials /etc/cachewarden/credentials"),
        "{stderr}"
    );

    // --credentials DIR and $CREDENTIALS_DIRECTORY supply them.
    let credentials = env.dir.path().join("creds");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("mysql-url"), format!("{}\n", env.mysql_url)).unwrap();
    std::fs::write(credentials.join("redis-url"), &env.redis_url).unwrap();
    let (code, stdout, stderr) = cli_output(&["check", "--credentials", credentials.to_str().unwrap()], &bare);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mut check = cachewarden();
    check.args(["check", "--config"]).arg(&bare);
    let (code, stdout, stderr) = common::finished(check.env("CREDENTIALS_DIRECTORY", &credentials));
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // /etc/cachewarden's layout: credentials/ beside the file win over URLs left in it (here a dead Redis), so a
    // command run from a shell writes where the service writes.
    let etc = env.dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::rename(&credentials, etc.join("credentials")).unwrap();
    let stale = etc.join("jobs.toml");
    std::fs::write(
        &stale,
        format!("[mysql]\nurl = \"mysql://root@127.0.0.1:1/demo\"\n[redis]\nurl = \"redis://127.0.0.1:1/0\"\n\n{jobs}"),
    )
    .unwrap();
    let (code, stdout, stderr) = cli_output(&["run", "--once"], &stale);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "note: server URLs from the credentials in {}",
            etc.join("credentials").display()
        )),
        "{stderr}"
    );
    assert!(env.get(&format!("{p}good:1")).await.is_some());

    // A user who cannot read those credentials is stopped (77) rather than sent to the file's URLs; commands that
    // connect to nothing still work.
    use std::os::unix::fs::PermissionsExt as _;
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(shared.path().join("credentials")).unwrap();
    std::fs::set_permissions(
        shared.path().join("credentials"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let shared_jobs = shared.path().join("jobs.toml");
    std::fs::copy(&stale, &shared_jobs).unwrap();
    std::fs::set_permissions(&shared_jobs, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_cachewarden"),
            ])
            .args(args)
            .arg("--config")
            .arg(&shared_jobs)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    };
    let output = as_nobody(&["run", "--once"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(77), "{stderr}");
    assert!(
        stderr.contains("holds the daemon's server URLs but cannot be read"),
        "{stderr}"
    );
    assert_eq!(as_nobody(&["jobs"]).status.code(), Some(0));
}

#[tokio::test]
async fn an_unreachable_server_exits_69_with_the_connection_error_and_an_unwritable_checkpoint_78() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let jobs = job(&env, "good", "SELECT id, name FROM products", "every 1h", "");
    let down = env.write_file(
        "down.toml",
        &format!(
            "[mysql]\nurl = \"mysql://root@127.0.0.1:1/demo\"\nconnect_timeout = \"1s\"\n[redis]\nurl = \"{}\"\n\n{jobs}",
            env.redis_url
        ),
    );
    for args in [&["check", "--connect"][..], &["run", "--once"], &["audit"]] {
        let (code, stdout, stderr) = cli_output(args, &down);
        assert_eq!(code, Some(69), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("Connection refused") && !stderr.contains("pool timed out"),
            "{args:?}: the connection's own error, not the pool's: {stderr}"
        );
    }

    // `check` notices a checkpoint file it could not write (outside systemd's StateDirectory=), before a run does.
    let config = env.config_file(&format!(
        "{jobs}\n[binlog]\nserver_id = 4242\ncheckpoint = \"file\"\ncheckpoint_file = \"/nonexistent/cachewarden/binlog.checkpoint\"\n\n\
         [[on_change]]\ntable = \"products\"\ndelete = [\"{}good:{{id}}\"]\n",
        env.prefix
    ));
    let (code, _, stderr) = cli_output(&["check"], &config);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(
            "binlog.checkpoint_file: the checkpoint file /nonexistent/cachewarden/binlog.checkpoint cannot be written"
        ),
        "{stderr}"
    );
}
