//! What ships beside the binary, checked by its own tools: the unit's hardening, alert rules, the dashboard, JSON logs
//! and the status page in a browser.

use super::*;

#[tokio::test]
async fn json_logs_never_show_passwords() {
    let env = TestEnv::new().await;
    let redis_port = free_port();
    let mysql_base = common::services()
        .mysql
        .replace("mysql://root@", "mysql://nobody:hunter2@");
    let source = format!(
        "[mysql]\nurl = \"{mysql_base}/x\"\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:{redis_port}/0\"\n\
         connect_timeout = \"1s\"\n[admin]\nenabled = false\n\n{}",
        job(&env, "j", "SELECT 1 AS id", "every 1h", "")
    );
    let config = env.write_file("jobs.toml", &source);
    let mut daemon = Daemon::start(&env, &config, &["--log-format", "json"], &[]);
    // Redis is unreachable (retried), MySQL refuses the password (definite): the daemon exits 78 (a refusal restarting cannot fix).
    let code = daemon.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, Some(78), "the daemon exits on a refused MySQL password");
    let log = daemon.log();
    assert!(!log.contains("hunter2"), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l.to_string().contains("redis://:***@127.0.0.1")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l.to_string().contains("mysql://nobody:***@")),
        "{log}"
    );
}

#[test]
fn the_shipped_unit_rates_ok_in_systemd_analyze_security() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cachewarden.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed by scripts/services");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    let exposure: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(exposure <= 1.5, "{line}");
    assert!(line.contains("OK"), "{line}");
    // A reload validates before it signals, and a bad configuration is not restarted in a loop.
    let text = std::fs::read_to_string(&unit).unwrap();
    let reloads: Vec<&str> = text.lines().filter(|l| l.starts_with("ExecReload=")).collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert!(reloads[0].contains("cachewarden check --config") && reloads[1].contains("kill -HUP"));
    assert!(text.lines().any(|l| l == "RestartPreventExitStatus=78"));
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed (scripts/services installs Debian's prometheus package)");
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every `cachewarden_*` series a shipped artefact names, without histogram suffixes.
fn series_named(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cachewarden_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = name.strip_suffix("_bucket").unwrap_or(name);
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_parse_and_name_only_exported_series() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("contrib/grafana/cachewarden.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 14, "{exprs:?}");
    // Grafana's variables as Prometheus would see them, each query as a recording rule for promtool to parse.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:panel{i}\n        expr: {}\n",
            serde_json::json!(expr)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules", "dashboard.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool is installed");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every series the dashboard and the alerts name is one the daemon describes (a renamed metric breaks this).
    let exported = [
        include_str!("../../src/telemetry/metrics/mod.rs"),
        include_str!("../../src/telemetry/metrics/describe.rs"),
    ]
    .concat();
    let alerts = std::fs::read_to_string(root.join("contrib/prometheus/alerts.yml")).unwrap();
    for name in series_named(&exprs.join("\n")).into_iter().chain(series_named(&alerts)) {
        assert!(
            exported.contains(&format!("\"{name}\"")),
            "{name} is not a series cachewarden exports"
        );
    }
}

#[tokio::test]
async fn the_status_page_renders_the_running_jobs_in_a_real_browser() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1), (2)")
        .await;
    let never = "0 0 0 1 1 *";
    let body = [
        job(&env, "catalog", "SELECT id FROM t", never, "run_on_start = true"),
        job(&env, "later", "SELECT id FROM t", never, ""),
        job(
            &env,
            "broken",
            "SELECT id FROM no_such_table",
            never,
            "run_on_start = true",
        ),
    ]
    .concat();
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let ran = eventually(Duration::from_secs(20), || async {
        let jobs = get(&env, "/jobs").await?.body;
        (jobs.contains("\"outcome\": \"success\"") && jobs.contains("\"outcome\": \"failure\"")).then_some(())
    })
    .await;
    assert!(ran.is_some(), "{}", daemon.log());

    let url = format!("http://{}/", env.admin_addr());
    let browser = |extra: &[&str]| {
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium is installed (scripts/services installs Debian's chromium)")
    };
    let dom = browser(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("<h1>cachewarden "), "{dom}");
    assert!(
        dom.contains("<td>catalog</td>") && dom.contains("<td>later</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("class=\"ok\">success</span>") && dom.contains("never run"),
        "{dom}"
    );
    assert!(dom.contains(">ready</span>"), "{dom}");
    assert!(dom.contains("<svg"), "the charts are missing: {dom}");
    assert!(dom.contains("action=\"/jobs/later/run\""), "{dom}");
    // The servers, without the test's passwords.
    let mysql = env.mysql_url.split('@').next_back().unwrap_or_default();
    assert!(dom.contains(mysql), "{dom}");

    // What a person sees: the page as chromium lays it out, printed and read back as text.
    let pdf = env.dir.path().join("status.pdf");
    browser(&[&format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer"]);
    let shown = Command::new("pdftotext")
        .args(["-layout", &pdf.display().to_string(), "-"])
        .output()
        .expect("pdftotext is installed (scripts/services installs Debian's poppler-utils)");
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    for seen in [
        "role: the only instance (no [ha]): runs the schedule and follows every feed",
        "broken: ",
        "doesn't exist; failed 1 time in a row; no success since the start",
        "not audited: the job has not succeeded since the start",
        "run now",
        "Servers",
        "Redis hit ratio (server-wide, since Redis started)",
        "Warm run durations, per job",
        "−60 min",
    ] {
        assert!(words.contains(seen), "the page does not show {seen:?}:\n{shown}");
    }
    let shot = env.dir.path().join("status.png");
    browser(&[&format!("--screenshot={}", shot.display()), "--window-size=1000,900"]);
    let png = std::fs::read(&shot).expect("chromium wrote a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    assert_eq!(daemon.stop().await, Some(0));
}
