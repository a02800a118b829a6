//! Operating the daemon: its wiring and supervisor, the HA lease, the admin endpoint and status page, the readiness
//! checks, logs, systemd, signals, the consistency audit and the Redis ACL check.

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod checks;
pub mod ha;
pub mod logging;
pub mod signal;
pub mod status;
pub mod systemd;
