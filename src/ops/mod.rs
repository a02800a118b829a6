//! Operating the daemon: its wiring and supervisor, the HA lease and the binlog sources shared out under it, the admin
//! endpoint and status page, the readiness checks, the jobs' footprint, logs, systemd, signals, the versions sharing
//! one Redis, the consistency audit and the Redis ACL check.

pub(crate) mod access;
pub mod admin;
pub mod app;
pub(crate) mod audit;
pub(crate) mod checks;
pub(crate) mod footprint;
pub(crate) mod ha;
pub(crate) mod logging;
pub(crate) mod share;
pub(crate) mod signal;
pub(crate) mod status;
pub(crate) mod systemd;
pub(crate) mod versions;
