//! What every part reports, and what operators read of it: the metrics (recorded with plain numbers, exported to
//! Prometheus and read in-process by the status page) and the daemon's health (readiness, stalls, liveness). Imports
//! nothing of the rest but `pure::plan::Refusal::REASONS` (the channel's refusal series, started at zero).

pub mod health;
pub mod metrics;
