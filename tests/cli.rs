//! The real binary: `check`, `jobs`, `run --once` exit codes and output, and the daemon's schedule, signals and
//! patience with a Redis that is not there yet.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestEnv, cachewarden, cli_output, eventually, get, job, sample, text, wait_exit};

const PRODUCTS: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO products VALUES (1, 'Kettle', 19.90), (2, 'Lamp', 5.00)
";

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

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
    let output = cachewarden().arg("check").arg("--config").arg(&path).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
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
    let output = cachewarden()
        .args(["check", "--connect", "--config"])
        .arg(&fine)
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("OK (1 warm job)"), "{:?}", text(&output));
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
    let output = cachewarden()
        .args(["run", "--once", "--job", "off", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(env.get(&format!("{p}off:1")).await.is_some());

    let (code, _, stderr) = cli_output(&["run", "--once", "--job", "nope"], &path);
    assert_eq!(code, Some(64), "an unknown job is a command-line mistake: {stderr}");
    assert!(
        stderr.contains("no warm job named \"nope\"") && stderr.contains("jobs: good, broken, off"),
        "{stderr}"
    );
    let output = cachewarden()
        .args(["audit", "--job", "nope", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{:?}", text(&output));

    let output = cachewarden()
        .args(["run", "--job", "good", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "--job without --once is a usage error");
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
    let output = cachewarden()
        .args(["jobs", "-o", "json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let jobs: serde_json::Value = serde_json::from_slice(&output.stdout).expect("jobs -o json is JSON");
    assert_eq!(jobs[0]["name"], "hourly", "{jobs}");
    assert_eq!(jobs[0]["ttl_seconds"], 3600.0, "{jobs}");
    assert_eq!(jobs[0]["key"], format!("{}hourly:{{id}}", env.prefix), "{jobs}");
    assert_eq!(jobs[0]["next_runs"].as_array().map(Vec::len), Some(3), "{jobs}");
}

#[tokio::test]
async fn daemon_warms_on_start_and_schedule_runs_on_sigusr1_and_stops_on_sigterm() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let body = [
        job(
            &env,
            "startup",
            "SELECT id, price FROM products",
            "0 0 0 1 1 *",
            "run_on_start = true",
        ),
        job(&env, "ticking", "SELECT id, name FROM products", "every 1s", ""),
        job(&env, "manual", "SELECT id FROM products", "0 0 0 1 1 *", ""),
    ]
    .concat();
    let path = env.config_file(&body);
    let mut daemon = cachewarden()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let started = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}startup:1")).await
    })
    .await;
    assert_eq!(started.as_deref(), Some(r#"{"id":1,"price":"19.90"}"#));
    let ticked = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}ticking:2")).await
    })
    .await;
    assert_eq!(ticked.as_deref(), Some(r#"{"id":2,"name":"Lamp"}"#));

    // The schedule keeps firing: a changed row shows up without any restart.
    env.sql("UPDATE products SET name = 'Desk lamp' WHERE id = 2").await;
    let updated = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}ticking:2"))
            .await
            .filter(|v| v.contains("Desk lamp"))
    })
    .await;
    assert!(updated.is_some(), "the every-1s job did not fire again");

    // SIGHUP must not kill the daemon; SIGUSR1 runs the jobs now, including ones not due for a year.
    signal(&daemon, "HUP");
    assert_eq!(env.get(&format!("{p}manual:1")).await, None);
    signal(&daemon, "USR1");
    let manual = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}manual:1")).await
    })
    .await;
    assert_eq!(manual.as_deref(), Some(r#"{"id":1}"#));
    assert!(daemon.try_wait().unwrap().is_none(), "daemon exited early");

    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon, Duration::from_secs(15))
        .await
        .expect("daemon stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn daemon_waits_for_an_unreachable_redis_and_warms_once_it_appears() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let body = job(
        &env,
        "late",
        "SELECT id FROM products",
        "0 0 0 1 1 *",
        "run_on_start = true",
    );
    let source = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nconnect_timeout = \"1s\"\n[admin]\nlisten = \"{}\"\n\n{body}",
        env.mysql_url,
        env.admin_addr()
    );
    let path = env.write_file("jobs.toml", &source);
    let mut daemon = cachewarden()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // From the first second: alive, not ready and saying why, metrics served, jobs not yet.
    let waiting = eventually(Duration::from_secs(10), || async {
        let ready = get(&env, "/readyz").await?;
        (ready.status == 503 && ready.body.contains("redis: waiting for the first connection")).then_some(ready.body)
    })
    .await;
    assert!(waiting.is_some(), "/readyz does not say what it waits for");
    assert_eq!(get(&env, "/healthz").await.unwrap().status, 200);
    let metrics = get(&env, "/metrics").await.unwrap().body;
    assert_eq!(sample(&metrics, "cachewarden_redis_up"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "cachewarden_mysql_up"), Some(1.0), "{metrics}");
    let jobs = get(&env, "/jobs").await.unwrap();
    assert_eq!(jobs.status, 503);
    assert!(jobs.body.starts_with("starting: redis:"), "{}", jobs.body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "daemon gave up while Redis was down"
    );

    let mut redis = common::spawn_redis(port);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let key = format!("{}late:1", env.prefix);
    let value = eventually(Duration::from_secs(45), || {
        let client = client.clone();
        let key = key.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()?
        }
    })
    .await;
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon, Duration::from_secs(15)).await;
    assert!(ready.is_some(), "never ready after Redis appeared");
    let _ = redis.kill();
    let _ = redis.wait();
    assert_eq!(
        value.as_deref(),
        Some(r#"{"id":1}"#),
        "the daemon never warmed after Redis appeared"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// The journal's entries as the native protocol sends them: per datagram, its fields (`NAME=value` lines, or a name
/// line, a 64-bit little-endian length and the value).
fn journal_entry(datagram: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("a field ends its name line");
        let line = &rest[..line_end];
        match line.iter().position(|&b| b == b'=') {
            Some(eq) => {
                fields.insert(
                    String::from_utf8_lossy(&line[..eq]).into_owned(),
                    String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
                );
                rest = &rest[line_end + 1..];
            }
            None => {
                let after = &rest[line_end + 1..];
                let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
                fields.insert(
                    String::from_utf8_lossy(line).into_owned(),
                    String::from_utf8_lossy(&after[8..8 + len]).into_owned(),
                );
                rest = &after[8 + len + 1..];
            }
        }
    }
    fields
}

/// Products, and a configuration of two jobs run at start: `good` succeeds, `bad` fails (its table does not exist).
async fn good_and_bad_jobs(env: &TestEnv) -> std::path::PathBuf {
    env.sql(PRODUCTS).await;
    let never = "0 0 0 1 1 *";
    env.config_file(
        &[
            job(
                env,
                "good",
                "SELECT id, name FROM products",
                never,
                "run_on_start = true",
            ),
            job(env, "bad", "SELECT id FROM no_such_table", never, "run_on_start = true"),
        ]
        .concat(),
    )
}

#[tokio::test]
async fn under_systemd_events_reach_the_journal_natively_with_their_fields() {
    use std::os::unix::fs::MetadataExt as _;
    let env = TestEnv::new().await;
    let path = good_and_bad_jobs(&env).await;
    // A journal of the test's own: a datagram socket, read on a thread.
    let socket_path = env.dir.path().join("journal.socket");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let entries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (entries, stop) = (entries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    entries.lock().unwrap().push(journal_entry(&buffer[..n]));
                }
            }
        })
    };
    let stderr_path = env.dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut daemon = cachewarden()
        .args(["run", "--config"])
        .arg(&path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("CACHEWARDEN_JOURNAL_SOCKET", &socket_path)
        .env("RUST_LOG", "cachewarden=info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let find = |message: &str, job: &str| {
        entries
            .lock()
            .unwrap()
            .iter()
            .find(|entry| {
                entry.get("MESSAGE").is_some_and(|m| m.contains(message))
                    && entry.get("JOB").map(String::as_str) == Some(job)
            })
            .cloned()
    };
    let both = eventually(Duration::from_secs(20), || async {
        Some((find("Warm job finished", "good")?, find("Warm job failed", "bad")?))
    })
    .await;
    signal(&daemon, "TERM");
    wait_exit(&mut daemon, Duration::from_secs(20)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let (finished, failed) = both.unwrap_or_else(|| panic!("{:#?}", entries.lock().unwrap()));
    // `journalctl -u cachewarden JOB=good -p info` finds it: its own fields, its priority, who wrote it.
    assert_eq!(finished["PRIORITY"], "6", "{finished:?}");
    assert_eq!(finished["SYSLOG_IDENTIFIER"], "cachewarden", "{finished:?}");
    assert!(
        finished.contains_key("ROWS") && finished.contains_key("DURATION_MS"),
        "{finished:?}"
    );
    assert_eq!(failed["PRIORITY"], "3", "{failed:?}");
    assert!(
        failed.values().any(|value| value.contains("no_such_table")),
        "{failed:?}"
    );
    // Nothing went to stderr as lines of its own.
    let lines = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!lines.contains("Warm job finished"), "{lines}");
}

#[tokio::test]
async fn under_journald_each_line_carries_its_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt as _;
    let env = TestEnv::new().await;
    let path = good_and_bad_jobs(&env).await;
    let log = env.dir.path().join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut daemon = cachewarden()
        .args(["run", "--config"])
        .arg(&path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "cachewarden=info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let journal = eventually(Duration::from_secs(20), || async {
        let journal = std::fs::read_to_string(&log).unwrap();
        (journal.contains("Warm job failed") && journal.contains("Warm job finished")).then_some(journal)
    })
    .await;
    signal(&daemon, "TERM");
    wait_exit(&mut daemon, Duration::from_secs(20)).await;
    let journal = journal.unwrap_or_else(|| std::fs::read_to_string(&log).unwrap());
    let lines: Vec<&str> = journal.lines().collect();
    assert!(lines.len() > 3, "{journal}");
    for line in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].iter().any(|p| line.starts_with(p)),
            "no priority: {line}"
        );
        assert!(
            !line[3..].trim_start().starts_with("20"),
            "a timestamp of our own: {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<3>") && line.contains("Warm job failed")),
        "the failed job is not at priority 3 (err):\n{journal}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<6>") && line.contains("Warm job finished")),
        "{journal}"
    );

    // Without JOURNAL_STREAM naming stderr: timestamps, no priorities; a bad RUST_LOG is said, not ignored.
    let output = cachewarden()
        .args(["check", "--config"])
        .arg(&path)
        .env("JOURNAL_STREAM", "1:1")
        .env("RUST_LOG", "cachewarden=loud")
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(stderr.lines().all(|line| !line.starts_with('<')), "{stderr}");
    assert!(stderr.contains("RUST_LOG is not a valid filter"), "{stderr}");
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
    let output = cachewarden()
        .args(["check", "--config"])
        .arg(&bare)
        .arg("--credentials")
        .arg(&credentials)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{:?}", text(&output));
    let output = cachewarden()
        .args(["check", "--config"])
        .arg(&bare)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{:?}", text(&output));

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
        let output = cachewarden().args(args).arg("--config").arg(&down).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(69), "{args:?}: {stdout}{stderr}");
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
            let output = cachewarden().args(args).arg("--config").arg(&path).output().unwrap();
            let (stdout, stderr) = text(&output);
            assert_eq!(output.status.code(), Some(78), "{url} {args:?}: {stdout}{stderr}");
            assert!(stderr.contains(expected), "{url} {args:?}: {stderr}");
        }
    }
    for server in [&mut cluster, &mut single] {
        let _ = server.kill();
        let _ = server.wait();
    }
}
