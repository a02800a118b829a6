//! Unix signals as daemon events: SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 warms now.
//!
//! Registered first thing in `cli::dispatch::run`: until a handler exists, SIGHUP's default action would kill the
//! process.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalEvent {
    /// SIGTERM or SIGINT: stop taking work, drain, exit 0.
    Stop,
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGUSR1: run every enabled warm job now.
    WarmNow,
}

/// The daemon's signal handlers.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime.
    pub(crate) fn register() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    /// The next signal received.
    pub(crate) async fn recv(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Stop,
            _ = self.int.recv() => SignalEvent::Stop,
            _ = self.hup.recv() => SignalEvent::Reload,
            _ = self.usr1.recv() => SignalEvent::WarmNow,
        }
    }
}
