//! The daemon as a service: admin endpoint (metrics, health, jobs, triggers), readiness through a Redis outage,
//! SIGHUP reload, systemd notifications and watchdog, graceful SIGTERM, JSON logs without secrets, and the unit's
//! hardening score, an admin port flooded by slow clients, and the keys and memory per job sampled from Redis.

#[path = "../common/mod.rs"]
mod common;
mod endpoint;
mod footprint;
mod lifecycle;
mod rotation;
mod shipped;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachewarden::ops::admin;
use common::{Daemon, TestEnv, cli_output, eventually, free_port, get, job, sample, wait_for_admin};
use hyper::Method;

/// `cachewarden status -o json` on `config`: its exit code and its document.
fn status_json(config: &Path) -> (Option<i32>, serde_json::Value) {
    let (code, stdout, stderr) = cli_output(&["status", "-o", "json"], config);
    let status = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status -o json: {e}: {stdout}{stderr}"));
    (code, status)
}
