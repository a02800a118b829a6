//! The admin HTTP endpoint (127.0.0.1:9187 by default): the status page, Prometheus metrics, liveness and readiness,
//! job status, the HA role and manual triggers; and the small client (`client`) `status`, `trigger` and `binlog` use.
//!
//! It listens on loopback unless told otherwise. With `[admin] token_file`, POST routes need `Authorization: Bearer
//! <token>`, and so does every route but the probes (`/healthz`, `/readyz`) when it listens beyond loopback (see
//! [`unauthorized`]). With `tls_cert` and `tls_key` it speaks HTTPS only. Triggers go through the same queue and
//! overlap guard as the scheduler's.
//!
//! | route                    | answer                                                        |
//! |--------------------------|---------------------------------------------------------------|
//! | `GET /`                  | the status page, for a person (see `status`)                  |
//! | `GET /metrics`           | Prometheus text format                                        |
//! | `GET /healthz`           | 200 while the process runs (from the first second)            |
//! | `GET /readyz`            | 200 when Redis and MySQL answer, else 503 with the reason (also while starting) |
//! | `GET /jobs`              | JSON: each job's schedule, next run, last run and counts      |
//! | `GET /ha`                | JSON: with `[ha]`, this instance's role, the leader and its lease age; else 404 |
//! | `POST /jobs/{name}/run`  | 202 queued (a form: 303 to `/`); 403 from another site; 404; 409 running/standby; 503 |

mod client;
mod gate;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use client::{ClientResponse, request, request_to};

use crate::exec::warm::Warmer;
use crate::ops::status::{self, History};
use crate::pure::model::{Trigger, TriggerReason, Ttl, WarmJob};
use crate::telemetry::health::Health;

/// What the endpoint reads and where its triggers go.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub metrics: Option<crate::telemetry::metrics::Exporter>,
    pub health: Health,
    /// Set once both servers answered at start-up; until then `/jobs` and triggers answer 503.
    pub warmer: Arc<std::sync::OnceLock<Arc<Warmer>>>,
    pub jobs: watch::Receiver<Arc<[WarmJob]>>,
    pub triggers: mpsc::Sender<Trigger>,
    /// The last hour, for the status page.
    pub history: Arc<History>,
    /// With `[ha]`: this instance's role.
    pub ha: Option<watch::Receiver<crate::ops::ha::Status>>,
    /// `[admin]` token: required for POST routes, and for every route but the probes when `listen` is not loopback.
    pub token: Option<crate::config::AdminToken>,
    /// Whether the endpoint listens on loopback only.
    pub loopback: bool,
    /// `[admin] tls_cert` and `tls_key`: HTTPS only, with this server configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The servers the status page names: what, and its URL without the password.
    pub servers: Arc<[(String, String)]>,
    /// The binlog sources followed (their names).
    pub binlogs: Arc<[Arc<str>]>,
    /// Under work sharing (`[ha]`, several sources): the sources this instance holds.
    pub held: Option<watch::Receiver<std::collections::BTreeSet<Arc<str>>>>,
}

/// The bound endpoint.
pub(crate) struct AdminServer {
    listener: TcpListener,
    state: AdminState,
}

/// Admin connections open at once; at the cap a waiting one is shed for each new one (see `gate`).
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// No admin connection lives longer than this, whatever it does.
const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// After a failed accept (no file descriptors left), wait this long before accepting again.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl AdminServer {
    /// Binds `addr` now, so that a taken port fails start-up rather than going unnoticed.
    pub(crate) async fn bind(addr: SocketAddr, state: AdminState) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, state })
    }

    /// Serves until `shutdown` is cancelled.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "Admin endpoint listening.");
        }
        if self.state.token.is_none() && !self.state.loopback {
            tracing::warn!(
                "The admin endpoint listens beyond loopback with no token: anyone who reaches it can read the metrics \
                 and trigger runs. Set [admin] token_file."
            );
        }
        let mut connections = JoinSet::new();
        let mut gate = gate::Gate::new(MAX_CONNECTIONS);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Ok(id) = ended {
                        gate.closed(id);
                    }
                }
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, most likely: wait for connections to close rather than spin.
                            debug!(%error, "Cannot accept an admin connection; pausing.");
                            tokio::time::sleep(ACCEPT_PAUSE).await;
                            continue;
                        }
                    };
                    // At the cap a waiting connection makes room: a flood must neither take the descriptors
                    // invalidation and warming need nor keep a health check out.
                    let Some(admitted) = gate.admit(peer.ip()) else {
                        gate.refused(peer.ip());
                        continue;
                    };
                    let state = self.state.clone();
                    connections.spawn(serve(stream, peer, state, admitted));
                }
            }
        }
        connections.abort_all();
    }
}

/// Serves one admitted connection until it ends, outlives its time or the gate closes it; returns its id. Over HTTPS
/// the handshake is part of the connection's time and must end within [`HEADER_TIMEOUT`].
async fn serve(stream: TcpStream, peer: SocketAddr, state: AdminState, admitted: gate::Admitted) -> u64 {
    let served = async {
        match state.tls.clone() {
            None => serve_http(stream, state, admitted.busy.clone()).await,
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_http(stream, state, admitted.busy.clone()).await,
                    Ok(Err(error)) => Err(format!("TLS handshake failed: {error}")),
                    Err(_) => Err("no TLS handshake in time".to_string()),
                }
            }
        }
    };
    tokio::select! {
        ended = tokio::time::timeout(CONNECTION_TIMEOUT, served) => match ended {
            Ok(Err(error)) => debug!(%peer, %error, "Admin connection ended with an error."),
            Err(_) => debug!(%peer, "Admin connection outlived its time; closed."),
            Ok(Ok(())) => {}
        },
        _ = admitted.close.cancelled() => debug!(%peer, "Admin connection shed to make room."),
    }
    admitted.id
}

/// HTTP/1.1 on `stream`, request after request, each routed.
async fn serve_http<S>(stream: S, state: AdminState, busy: Arc<std::sync::atomic::AtomicUsize>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        let busy = busy.clone();
        async move {
            busy.fetch_add(1, Ordering::Relaxed);
            let response = route(&state, request).await;
            busy.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|error| error.to_string())
}

/// The routing table: one arm per route of the module's table.
async fn route(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().trim_end_matches('/');
    let method = request.method().clone();
    if let Some(refused) = unauthorized(state, &method, path, request.headers()) {
        return refused;
    }
    match (method, path) {
        (Method::GET, "") => status_page(state),
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (Method::GET, "/readyz") => {
            let health = state.health.state();
            if health.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("not ready: {}\n", health.reason()),
                )
            }
        }
        (Method::GET, "/metrics") => match &state.metrics {
            Some(metrics) => typed(&metrics.render(), "text/plain; version=0.0.4"),
            None => text(StatusCode::NOT_FOUND, "metrics are not enabled in this process\n"),
        },
        (Method::GET, "/jobs") => {
            let jobs = state.jobs.borrow().clone();
            let Some(warmer) = state.warmer.get() else {
                return starting(state);
            };
            let body = jobs_json(&jobs, warmer, chrono::Utc::now());
            typed(&format!("{body:#}\n"), "application/json")
        }
        (Method::GET, "/ha") => match &state.ha {
            Some(ha) => ha_json(state, ha.borrow().to_json()),
            None => text(
                StatusCode::NOT_FOUND,
                "[ha] is not enabled: this instance always leads\n",
            ),
        },
        (Method::POST, path) if path.starts_with("/jobs/") && path.ends_with("/run") => {
            let name = &path["/jobs/".len()..path.len() - "/run".len()];
            run_requested(state, name, request.headers())
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/jobs" | "/ha") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /`: the status page.
fn status_page(state: &AdminState) -> Response<Full<Bytes>> {
    let jobs = match state.warmer.get() {
        Some(warmer) => jobs_json(&state.jobs.borrow().clone(), warmer, chrono::Utc::now()),
        None => serde_json::Value::Array(vec![]),
    };
    let none = crate::telemetry::metrics::Readings::default();
    let checkpoints = crate::telemetry::metrics::binlog_checkpoints();
    let page = status::render(&status::Page {
        health: &state.health.state(),
        jobs: &jobs,
        readings: state.metrics.as_ref().map_or(&none, |metrics| metrics.readings()),
        history: &state.history,
        ha: state.ha.as_ref().map(|ha| ha.borrow().clone()),
        servers: &state.servers,
        binlogs: &state.binlogs,
        binlog_checkpoints: &checkpoints,
        run_now: state.token.is_none(),
    });
    typed(&page, "text/html; charset=utf-8")
}

/// `GET /ha`: the role and, for each binlog source, the checkpoint saved last and, where the server's retention is
/// known, how long this instance may be down (`binlog_sources`; with one source, also at the top level as before).
fn ha_json(state: &AdminState, mut body: serde_json::Value) -> Response<Full<Bytes>> {
    let checkpoints = crate::telemetry::metrics::binlog_checkpoints();
    let none = crate::telemetry::metrics::Readings::default();
    let readings = state.metrics.as_ref().map_or(&none, |metrics| metrics.readings());
    let sources: Vec<serde_json::Value> = (state.binlogs.iter())
        .map(|source| {
            let labels = [("source", &**source)];
            let mut row = serde_json::json!({
                "name": source,
                "checkpoint": checkpoints.get(&**source),
                "connected": readings.get("cachewarden_binlog_connected", &labels).map(|up| up == 1.0),
                "lag_seconds": readings.get("cachewarden_binlog_lag_seconds", &labels),
            });
            if let Some(held) = &state.held {
                row["held_here"] = serde_json::json!(held.borrow().contains(source));
            }
            // (Only an instance that has followed the binlog knows its server's retention.)
            if readings.get("cachewarden_binlog_retention_seconds", &labels).is_some() {
                let down_for = status::can_be_down_for(readings, source);
                row["can_be_down_for_seconds"] = serde_json::json!(down_for.filter(|s| s.is_finite()));
                row["can_be_down_for"] = serde_json::json!(status::down_for_words(down_for));
            }
            row
        })
        .collect();
    if let [only] = sources.as_slice() {
        body["binlog_checkpoint"] = only["checkpoint"].clone();
        if let Some(seconds) = only.get("can_be_down_for_seconds") {
            body["binlog_can_be_down_for_seconds"] = seconds.clone();
            body["binlog_can_be_down_for"] = only["can_be_down_for"].clone();
        }
    }
    body["binlog_sources"] = serde_json::Value::Array(sources);
    typed(&format!("{body:#}\n"), "application/json")
}

/// `POST /jobs/{name}/run`, unless it is a browser's from another site. The status page's "run now" button posts a
/// form: its browser goes back to the page, which shows the run.
fn run_requested(state: &AdminState, name: &str, headers: &hyper::HeaderMap) -> Response<Full<Bytes>> {
    if let Some(refused) = cross_site(headers) {
        return refused;
    }
    let response = trigger(state, name);
    let form = headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"application/x-www-form-urlencoded"));
    match (form, response.status()) {
        (true, StatusCode::ACCEPTED) => see_other("/"),
        _ => response,
    }
}

/// The answer to a request the token does not allow, if it is one: with a token, a POST needs it, and so does every
/// route but `/healthz` and `/readyz` (probes that cannot send headers, and say nothing but ready or why not) when
/// the endpoint listens beyond loopback.
fn unauthorized(
    state: &AdminState,
    method: &Method,
    path: &str,
    headers: &hyper::HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    let token = state.token.as_ref()?;
    let probe = matches!(path, "/healthz" | "/readyz");
    if (probe && *method != Method::POST) || (*method == Method::GET && state.loopback) {
        return None;
    }
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same_secret(given.trim().as_bytes(), token.expose().as_bytes()) {
        return None;
    }
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "this route needs the admin token: send Authorization: Bearer <the token in [admin] token_file>\n",
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer realm=\"cachewarden\""),
    );
    Some(response)
}

/// The answer to a browser's POST sent from another site (a forged request, CSRF), if it is one. Browsers say where
/// a request comes from (`Sec-Fetch-Site`, `Origin`); a request without either (curl, `cachewarden trigger`) is no
/// browser's and passes, and so does the status page's own form.
fn cross_site(headers: &hyper::HeaderMap) -> Option<Response<Full<Bytes>>> {
    let header = |name: hyper::header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let site = header(hyper::header::HeaderName::from_static("sec-fetch-site"));
    let origin = header(hyper::header::ORIGIN);
    let same_site = site.is_none_or(|site| matches!(site, "same-origin" | "none"));
    let same_origin = origin
        .is_none_or(|origin| origin.split_once("://").map(|(_, authority)| authority) == header(hyper::header::HOST));
    if same_site && same_origin {
        return None;
    }
    warn!(
        origin = origin.unwrap_or("-"),
        site = site.unwrap_or("-"),
        "A POST to the admin endpoint came from another site; refused."
    );
    Some(text(
        StatusCode::FORBIDDEN,
        "refused: a POST from another site (its Origin is not this endpoint); use the status page itself, curl or \
         cachewarden trigger\n",
    ))
}

/// 303 to `location`: where a browser goes after a form's POST.
fn see_other(location: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::SEE_OTHER, "");
    response.headers_mut().insert(
        hyper::header::LOCATION,
        hyper::header::HeaderValue::from_static(location),
    );
    response
}

/// Whether `a` equals `b`, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn trigger(state: &AdminState, name: &str) -> Response<Full<Bytes>> {
    let job = state
        .jobs
        .borrow()
        .iter()
        .find(|job| &*job.name == name)
        .map(|job| job.name.clone());
    let Some(job) = job else {
        return text(StatusCode::NOT_FOUND, &format!("no warm job named \"{name}\"\n"));
    };
    let Some(warmer) = state.warmer.get() else {
        return starting(state);
    };
    if let Some(ha) = &state.ha {
        let status = ha.borrow().clone();
        if status.role != crate::ops::ha::Role::Leader {
            return text(
                StatusCode::CONFLICT,
                &format!(
                    "this instance ({}) is the {}: only the leader runs jobs; trigger it there\n",
                    status.instance,
                    status.describe()
                ),
            );
        }
    }
    if warmer.is_running(&job) {
        return text(
            StatusCode::CONFLICT,
            &format!("\"{job}\" is already running; not started again\n"),
        );
    }
    info!(job = %job, "Manual run requested through the admin endpoint.");
    if crate::pure::trigger::send(&state.triggers, job.clone(), TriggerReason::Manual) {
        text(StatusCode::ACCEPTED, &format!("\"{job}\" queued\n"))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the trigger queue is full; try again shortly\n",
        )
    }
}

/// 503 while the daemon waits for its first connections, saying for what.
fn starting(state: &AdminState) -> Response<Full<Bytes>> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("starting: {}\n", state.health.state().reason()),
    )
}

/// 200 with `body` of `content_type`.
fn typed(body: &str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

/// The `/jobs` document.
pub(crate) fn jobs_json(jobs: &[WarmJob], warmer: &Warmer, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let list: Vec<serde_json::Value> = jobs
        .iter()
        .map(|job| {
            let stats = warmer.stats(&job.name);
            let last = stats.last.as_ref().map(|last| {
                let finished = last.finished_at.duration_since(UNIX_EPOCH).unwrap_or_default();
                let finished = chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + finished);
                match (&last.summary, &last.error) {
                    (Some(summary), _) => json!({
                        "outcome": "success",
                        "finished_at": crate::pure::words::time(finished),
                        "duration_seconds": summary.duration.as_secs_f64(),
                        "rows": summary.rows,
                        "keys_written": summary.keys_written,
                        "bytes_written": summary.bytes_written,
                        "skipped": summary.skipped(),
                    }),
                    (None, error) => json!({
                        "outcome": "failure",
                        "finished_at": crate::pure::words::time(finished),
                        "error": error,
                    }),
                }
            });
            json!({
                "name": &*job.name,
                "enabled": job.enabled,
                "schedule": job.schedule.written,
                "cron": job.schedule.cron,
                "key": job.key.as_str(),
                "type": job.encoding.structure.as_str(),
                "source": job.source.as_deref(),
                "members": job.members.as_ref().map(|members| members.describe()),
                "ttl_seconds": match job.ttl { Ttl::Expires(ttl) => Some(ttl.as_secs_f64()), Ttl::Never => None },
                "next_run": job.enabled.then(|| {
                    job.schedule.upcoming(now, 1).first().map(|t| crate::pure::words::time(*t))
                }).flatten(),
                "running": warmer.is_running(&job.name),
                "runs": { "succeeded": stats.succeeded, "failed": stats.failed, "skipped": stats.skipped_overlap },
                "last_run": last,
                "last_success_at": stats.last_success.map(|at| crate::pure::words::time(at.into())),
                "failure_streak": stats.failure_streak,
                "partitions": job.partitions.as_ref().map(|partitions| json!({
                    "count": partitions.count,
                    "by": partitions.column,
                    "latest_run": warmer.board(&job.name),
                })),
            })
        })
        .collect();
    serde_json::Value::Array(list)
}
