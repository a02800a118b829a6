//! What every part reports, and what operators read of it: the metrics (recorded with plain numbers, exported to
//! Prometheus and read in-process by the status page) and the daemon's health (readiness, stalls, liveness). Imports
//! nothing of the rest.

pub mod health;
pub mod metrics;
