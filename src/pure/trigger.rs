//! The one way anything asks for a warm run: a [`Trigger`] on the queue the warm runner reads. The scheduler, the
//! invalidation executor (for the channel and the binlog), the admin endpoint and SIGUSR1 (`app`) all send through
//! [`send`], so a full queue is handled and logged the same way everywhere.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use crate::pure::model::{Trigger, TriggerReason};

/// Sends without waiting: when the executor is backed up, the request is dropped (the next one comes soon) rather
/// than queued without bound. Returns whether it was queued.
pub(crate) fn send(triggers: &mpsc::Sender<Trigger>, job: Arc<str>, reason: TriggerReason) -> bool {
    match triggers.try_send(Trigger::Warm {
        job: job.clone(),
        reason,
    }) {
        Ok(()) => true,
        Err(error) => {
            warn!(job = %job, %reason, %error, "Could not queue a warm trigger; this request was dropped.");
            false
        }
    }
}
