//! Two daemons with `[ha]` against one Redis and one MariaDB: exactly one leads (schedule, binlog), a stop hands
//! over at once, a kill -9 during a binlog burst loses no invalidation, and a leader paused past its lease writes
//! nothing once it resumes (on one node and on a Redis Cluster). Plus Redis refusing the writes of a token the lease
//! no longer holds, on one node and, by each slot's copy of the epoch, on a cluster.

#[path = "../common/mod.rs"]
mod common;
mod fencing;
mod gtid;
mod pieces;
mod sharing;
mod takeover;
mod versions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cachewarden::exec::cache::{Cache, CacheError, Fence};
use cachewarden::ops::admin;
use cachewarden::pure::model::KeyOp;
use common::{Daemon, TestEnv, cachewarden, cli, eventually, free_port, metric_at, text};
use hyper::Method;

/// Waits here are generous: the test MariaDB's binlog is shared with every other test, so a new leader may first have
/// to read through other tests' bursts (behaviour is asserted, not speed; `scripts/bench` measures takeover times).
///
/// One instance's config: the shared servers, its own admin port and name, the lease, `body`.
fn instance(env: &TestEnv, name: &str, lease_ttl: &str, body: &str) -> (PathBuf, SocketAddr) {
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let p = &env.prefix;
    let cluster = if env.cluster { "cluster = true\n" } else { "" };
    let text = format!(
        "[mysql]\nurl = \"{}\"\n\n[redis]\nurl = \"{}\"\n{cluster}\n[admin]\nlisten = \"{admin}\"\n\n\
         [ha]\nenabled = true\nlease_ttl = \"{lease_ttl}\"\nkey = \"{p}leader\"\ninstance = \"{name}\"\n\n{body}",
        env.mysql_url, env.redis_url
    );
    (env.write_file(&format!("{name}.toml"), &text), admin)
}

/// Instances `a`, `b`, `c`, … (one per name) with `body`, each started: their configs and admin addresses, and the
/// daemons.
fn fleet(env: &TestEnv, names: &[&str], body: &str) -> (Vec<(PathBuf, SocketAddr)>, Vec<Daemon>) {
    let instances: Vec<(PathBuf, SocketAddr)> = names.iter().map(|name| instance(env, name, "1s", body)).collect();
    let daemons = instances
        .iter()
        .map(|(config, _)| Daemon::start(env, config, &[], &[]))
        .collect();
    (instances, daemons)
}

/// Every daemon's log, one after another.
fn logs(daemons: &[Daemon]) -> String {
    daemons.iter().map(Daemon::log).collect::<Vec<_>>().join("\n----\n")
}

/// Starts an instance with a replica id of its own, as an operator gives each host one
/// (`CACHEWARDEN_BINLOG__SERVER_ID`): with a shared id, a new leader's replication connection can wait for the server
/// to drop a paused old leader's (up to its net_write_timeout).
fn start(env: &TestEnv, config: &std::path::Path) -> Daemon {
    let server_id = (10_000 + fastrand::u32(..1_000_000)).to_string();
    Daemon::start(env, config, &[], &[("CACHEWARDEN_BINLOG__SERVER_ID", &server_id)])
}

/// `[binlog]` with a delete rule on `t`, and a job `j` on `t`.
fn binlog_and_job(env: &TestEnv, schedule: &str, extra: &str) -> String {
    let p = &env.prefix;
    format!(
        "[channel]\nenabled = false\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}checkpoint\"\nheartbeat = \"1s\"\n\
         on_gap = \"warm\"\n\n[[warm]]\nname = \"j\"\nschedule = \"{schedule}\"\nquery = \"SELECT id, v FROM t\"\n\
         key = \"{p}j:{{id}}\"\nttl = \"1h\"\n{extra}\n\n[[on_change]]\ntable = \"t\"\ndelete = [\"{p}k:{{id}}\"]\n",
        10_000 + fastrand::u32(..1_000_000)
    )
}

async fn ha(addr: SocketAddr) -> Option<serde_json::Value> {
    let response = admin::request(addr, Method::GET, "/ha").await.ok()?;
    serde_json::from_str(&response.body).ok()
}

async fn role(addr: SocketAddr) -> String {
    ha(addr)
        .await
        .and_then(|status| status["role"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits until one of `addrs` leads and every other is standby; the leader's index.
async fn one_leader(addrs: &[SocketAddr], limit: Duration) -> Option<usize> {
    eventually(limit, || async {
        let mut roles = Vec::new();
        for addr in addrs {
            roles.push(role(*addr).await);
        }
        let leaders: Vec<usize> = (0..roles.len()).filter(|&i| roles[i] == "leader").collect();
        (leaders.len() == 1 && roles.iter().filter(|r| *r == "standby").count() == roles.len() - 1).then(|| leaders[0])
    })
    .await
}

const RUNS: &str = "cachewarden_warm_runs_total{warm_job=\"j\",outcome=\"success\"}";
