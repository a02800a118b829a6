//! Admission to the admin endpoint: a cap on open connections that sheds waiting clients, the busiest client first,
//! so that a flood of slow or idle connections can never keep a health check out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Shedding is logged at WARN at most this often, with the count since the last line.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open admin connections.
pub(super) struct Gate {
    cap: usize,
    next: u64,
    open: HashMap<u64, Open>,
    shed_since_warn: u64,
    last_warn: Option<Instant>,
}

/// One open connection as the gate sees it.
struct Open {
    peer: IpAddr,
    opened: Instant,
    /// Requests being answered on it now; 0 while it waits for (the rest of) a request.
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

/// A connection let in: its id (to report its end), its busy count and the token that closes it.
pub(super) struct Admitted {
    pub id: u64,
    pub busy: Arc<AtomicUsize>,
    pub close: CancellationToken,
}

impl Gate {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            next: 0,
            open: HashMap::new(),
            shed_since_warn: 0,
            last_warn: None,
        }
    }

    /// Lets a new connection from `peer` in. At the cap, closes one waiting connection to make room: one of the client
    /// that holds the most waiting connections, its oldest (a new connection, such as a health check, sends its
    /// request at once and is the newest, so it is never the one chosen). Refuses the new one (`None`) only when every
    /// open connection is answering a request.
    pub(super) fn admit(&mut self, peer: IpAddr) -> Option<Admitted> {
        if self.open.len() >= self.cap {
            let victim = self.victim()?;
            let shed = self.open.remove(&victim).expect("the victim is open");
            shed.close.cancel();
            self.shed(shed.peer);
        }
        let id = self.next;
        self.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        self.open.insert(
            id,
            Open {
                peer,
                opened: Instant::now(),
                busy: busy.clone(),
                close: close.clone(),
            },
        );
        Some(Admitted { id, busy, close })
    }

    /// Forgets a connection that ended.
    pub(super) fn closed(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Counts a connection refused because every open one was busy.
    pub(super) fn refused(&mut self, peer: IpAddr) {
        self.shed(peer);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open.len()
    }

    /// The waiting connection to close: the busiest client's oldest (among clients holding as many, the oldest).
    fn victim(&self) -> Option<u64> {
        let waiting = || {
            self.open
                .iter()
                .filter(|(_, open)| open.busy.load(Ordering::Relaxed) == 0)
        };
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for (_, open) in waiting() {
            *held.entry(open.peer).or_default() += 1;
        }
        waiting()
            .max_by_key(|(id, open)| (held[&open.peer], std::cmp::Reverse((open.opened, **id))))
            .map(|(id, _)| *id)
    }

    fn shed(&mut self, peer: IpAddr) {
        crate::telemetry::metrics::record_admin_shed();
        self.shed_since_warn += 1;
        let now = Instant::now();
        if self.last_warn.is_none_or(|last| now.duration_since(last) >= WARN_EVERY) {
            warn!(
                connections = self.cap,
                shed = self.shed_since_warn,
                last_client = %peer,
                "The admin endpoint is at its connection cap: closed waiting connections, the busiest client's first \
                 (health checks still get in). Is something holding connections open?"
            );
            self.shed_since_warn = 0;
            self.last_warn = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn at_the_cap_the_busiest_clients_oldest_waiting_connection_goes() {
        let mut gate = Gate::new(4);
        let first = gate.admit(ip(1)).unwrap();
        let second = gate.admit(ip(1)).unwrap();
        let other = gate.admit(ip(2)).unwrap();
        let third = gate.admit(ip(1)).unwrap();
        // Client 1's oldest is answering a request: its next oldest goes.
        first.busy.fetch_add(1, Ordering::Relaxed);
        let newcomer = gate.admit(ip(3)).unwrap();
        assert!(!first.close.is_cancelled());
        assert!(second.close.is_cancelled());
        assert!(!other.close.is_cancelled() && !third.close.is_cancelled());
        assert_eq!(gate.len(), 4);
        // Now clients 1, 2 and 3 hold one waiting connection each: the oldest of them goes.
        gate.admit(ip(3)).unwrap();
        assert!(other.close.is_cancelled() && !third.close.is_cancelled() && !newcomer.close.is_cancelled());
    }

    #[test]
    fn a_new_connection_is_refused_only_when_every_open_one_is_busy() {
        let mut gate = Gate::new(2);
        let a = gate.admit(ip(1)).unwrap();
        let b = gate.admit(ip(2)).unwrap();
        a.busy.fetch_add(1, Ordering::Relaxed);
        b.busy.fetch_add(1, Ordering::Relaxed);
        assert!(gate.admit(ip(3)).is_none());
        b.busy.fetch_sub(1, Ordering::Relaxed);
        assert!(gate.admit(ip(3)).is_some());
        assert!(b.close.is_cancelled());
        gate.closed(a.id);
        assert_eq!(gate.len(), 1);
    }
}
