//! Logging under systemd: the journal's native protocol with fields, priorities and no timestamps.

use super::*;

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
    let mut check = cachewarden();
    check.args(["check", "--config"]).arg(&path);
    let (_, _, stderr) = common::finished(check.env("JOURNAL_STREAM", "1:1").env("RUST_LOG", "cachewarden=loud"));
    assert!(stderr.lines().all(|line| !line.starts_with('<')), "{stderr}");
    assert!(stderr.contains("RUST_LOG is not a valid filter"), "{stderr}");
}
