//! What `cachewarden status` prints from the daemon's admin endpoint: the jobs' table, readiness and the HA role, or
//! one JSON document.

use std::time::Duration;

use super::table;

/// The table `cachewarden status` prints from the daemon's `/jobs` document.
fn format_status(jobs_json: &str) -> Result<String, serde_json::Error> {
    let jobs: Vec<serde_json::Value> = serde_json::from_str(jobs_json)?;
    let mut rows = vec![[
        "JOB".to_string(),
        "RUNNING".into(),
        "LAST RUN".into(),
        "FINISHED (UTC)".into(),
        "DURATION".into(),
        "KEYS".into(),
        "OK/FAILED/SKIPPED".into(),
        "NEXT RUN (UTC)".into(),
    ]];
    let field = |value: &serde_json::Value| match value {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    for job in &jobs {
        let last = &job["last_run"];
        rows.push([
            field(&job["name"]),
            if job["running"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
            field(&last["outcome"]),
            field(&last["finished_at"]),
            last["duration_seconds"]
                .as_f64()
                .map_or("-".into(), crate::pure::words::seconds),
            field(&last["keys_written"]),
            format!(
                "{}/{}/{}",
                field(&job["runs"]["succeeded"]),
                field(&job["runs"]["failed"]),
                field(&job["runs"]["skipped"])
            ),
            field(&job["next_run"]),
        ]);
    }
    let mut out = table(&rows);
    for job in &jobs {
        if let Some(error) = job["last_run"]["error"].as_str() {
            out.push_str(&format!("{}: {error}\n", field(&job["name"])));
        }
    }
    Ok(out)
}

/// The `ha:` line of `cachewarden status` from the daemon's `/ha` document: `leader (lease age 12s)`,
/// `standby (leader: host-a:4242, lease age 2m5s)`.
fn format_ha(ha_json: &str) -> String {
    let Ok(ha) = serde_json::from_str::<serde_json::Value>(ha_json) else {
        return ha_json.trim().to_string();
    };
    let age = ha["lease_age_seconds"]
        .as_f64()
        .map(|age| crate::pure::words::duration(Duration::from_secs(age.max(0.0) as u64)));
    let role = ha["role"].as_str().unwrap_or("unknown");
    let instance = ha["instance"].as_str().unwrap_or("?");
    match (role, ha["leader"].as_str(), age) {
        ("leader", _, Some(age)) => format!("leader: this instance ({instance}), lease age {age}"),
        (role, Some(leader), Some(age)) => {
            format!("{role}: this instance is {instance}; the leader is {leader}, lease age {age}")
        }
        (role, _, _) => format!("{role}: this instance is {instance}; no leader at the moment"),
    }
}

/// What `cachewarden status` read from the daemon's admin endpoint.
pub(crate) struct Status<'a> {
    /// The `/jobs` document.
    pub jobs: &'a str,
    /// Whether `/readyz` answered 200.
    pub ready: bool,
    /// `/readyz`'s text.
    pub readiness: &'a str,
    /// The `/ha` document, with `[ha]`.
    pub ha: Option<&'a str>,
}

impl Status<'_> {
    /// The table, the readiness line and the HA line.
    pub(crate) fn text(&self) -> Result<String, serde_json::Error> {
        let mut out = format_status(self.jobs)?;
        out.push_str(&format!("readiness: {}\n", self.readiness));
        if let Some(ha) = self.ha {
            out.push_str(&format!("ha: {}\n", format_ha(ha)));
        }
        Ok(out)
    }

    /// One document: `ready`, `readiness`, `jobs` (as `/jobs` gives them), `ha` (or null), `failing` (the jobs whose
    /// last run failed).
    pub(crate) fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        let jobs: serde_json::Value = serde_json::from_str(self.jobs)?;
        let ha = self.ha.map(serde_json::from_str::<serde_json::Value>).transpose()?;
        Ok(serde_json::json!({
            "ready": self.ready,
            "readiness": self.readiness,
            "failing": self.failing(),
            "jobs": jobs,
            "ha": ha,
        }))
    }

    /// The jobs whose last run failed.
    fn failing(&self) -> Vec<String> {
        let jobs: Vec<serde_json::Value> = serde_json::from_str(self.jobs).unwrap_or_default();
        jobs.iter()
            .filter(|job| job["last_run"]["outcome"].as_str() == Some("failure"))
            .filter_map(|job| job["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Ready, and no job's last run failed: what `status` exits 0 for.
    pub(crate) fn healthy(&self) -> bool {
        self.ready && self.failing().is_empty()
    }
}
