//! One harness for every integration test: real Redis and a real (binlog-enabled) MariaDB, a database and a Redis
//! key prefix of its own per test, both removed when the test's [`TestEnv`] is dropped.
//!
//! The services come from `scripts/services` (run once per test binary), which starts them if they are down.

#![allow(dead_code)]

mod cli;
mod daemon;
mod env;
pub mod proxy;
mod servers;
mod services;
mod warm;

// Each test binary uses a part of the harness.
#[allow(unused_imports)]
pub use {cli::*, daemon::*, env::*, servers::*, services::*, warm::*};

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachewarden::config::{self, Config};
use cachewarden::ops::admin;
use hyper::Method;
use sqlx::{Connection as _, Executor as _};

/// `GET key` on `conn`; `None` when the key is absent or Redis does not answer.
pub async fn get_on(mut conn: redis::aio::MultiplexedConnection, key: String) -> Option<String> {
    let value = redis::cmd("GET")
        .arg(&key)
        .query_async::<Option<String>>(&mut conn)
        .await;
    value.ok().flatten()
}

/// Waits up to `limit` for `child` to exit.
pub async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    eventually(limit, || {
        let status = child.try_wait().expect("try_wait");
        async move { status }
    })
    .await
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Output of a finished command, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `check` every 50 ms until it returns `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The project's `scripts/<name>`, to run.
fn script(name: &str) -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name))
}

/// Runs `scripts/<name> args…`, which must succeed (its stderr is the failure message); its stdout.
fn run_script(name: &str, args: &[String]) -> String {
    let output = script(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("scripts/{name} runs: {e}"));
    assert!(
        output.status.success(),
        "scripts/{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
