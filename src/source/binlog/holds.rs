//! The warm runs the binlog checkpoint waits for: a change that asks for a run (at once, or at the end of its
//! debounce window) holds the checkpoint before it until a run of that job asked for after it has finished, so a
//! stop or a crash in between replays the change and the next start asks again.
//!
//! Pure: the listener says when runs are asked for and when a job's last run finished; this says how far the
//! checkpoint may go.

use std::time::SystemTime;

use super::checkpoint::Position;

/// A run asked for this long ago that has not ended stops holding the checkpoint: longer than a warm run's default
/// timeout (5 minutes) with its retries, short enough that a dropped request cannot hold it for ever.
pub(super) const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// One run a change is waiting for.
#[derive(Debug, Clone)]
struct Hold {
    job: String,
    /// The position before the change: the checkpoint may not pass it.
    before: Position,
    /// When the run was asked for; `None` while it waits for its debounce window to end.
    asked_at: Option<SystemTime>,
}

/// Every run the checkpoint waits for.
#[derive(Debug, Default)]
pub(super) struct Holds {
    holds: Vec<Hold>,
}

impl Holds {
    /// A change after `before` asked for a run of `job`, now.
    pub(super) fn asked(&mut self, job: &str, before: &Position, now: SystemTime) {
        self.holds.push(Hold {
            job: job.to_string(),
            before: before.clone(),
            asked_at: Some(now),
        });
    }

    /// A change after `before` will ask for a run of `job` when its debounce window ends. The earliest such change
    /// is what holds: one waiting hold per job.
    pub(super) fn deferred(&mut self, job: &str, before: &Position) {
        if !self.holds.iter().any(|hold| hold.job == job && hold.asked_at.is_none()) {
            self.holds.push(Hold {
                job: job.to_string(),
                before: before.clone(),
                asked_at: None,
            });
        }
    }

    /// The waiting runs of `jobs` were asked for now.
    pub(super) fn fired(&mut self, jobs: &[String], now: SystemTime) {
        for hold in &mut self.holds {
            if hold.asked_at.is_none() && jobs.contains(&hold.job) {
                hold.asked_at = Some(now);
            }
        }
    }

    /// Drops the holds whose run has finished (`finished(job)`: when the job's last run ended), and those asked for
    /// more than [`MAX_HOLD`] before `now` (the run was dropped, the job disabled, or it hangs): returned, to be
    /// reported. Whether any hold was dropped.
    pub(super) fn release(
        &mut self,
        finished: impl Fn(&str) -> Option<SystemTime>,
        now: SystemTime,
        expired: &mut Vec<String>,
    ) -> bool {
        let before = self.holds.len();
        self.holds.retain(|hold| {
            let Some(asked) = hold.asked_at else { return true };
            if finished(&hold.job).is_some_and(|ended| ended >= asked) {
                return false;
            }
            if now.duration_since(asked).is_ok_and(|waited| waited > MAX_HOLD) {
                expired.push(hold.job.clone());
                return false;
            }
            true
        });
        self.holds.len() != before
    }

    /// How far the checkpoint may go instead of `next`: the earliest held position, or `next` when nothing holds.
    pub(super) fn bound(&self, next: Position) -> Position {
        self.holds
            .iter()
            .fold(next, |bound, hold| match hold.before.earlier(&bound) {
                Some(earlier) => earlier.clone(),
                // Positions on different servers (a failover in between): the hold's, to be safe.
                None => hold.before.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(pos: u64) -> Position {
        Position::parse(&format!("binlog.000001:{pos} server=1")).unwrap()
    }

    #[test]
    fn the_checkpoint_waits_before_each_change_until_its_run_has_finished() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut holds = Holds::default();
        assert_eq!(holds.bound(at(900)).pos, 900);
        holds.asked("total", &at(100), t0);
        holds.deferred("stats", &at(200));
        holds.deferred("stats", &at(300));
        assert_eq!(holds.bound(at(900)).pos, 100);
        let mut expired = Vec::new();
        // A run that ended before it was asked for is not the one.
        assert!(!holds.release(|_| Some(t0 - Duration::from_secs(1)), t0, &mut expired));
        assert!(holds.release(
            |job| (job == "total").then_some(t0 + Duration::from_secs(1)),
            t0,
            &mut expired
        ));
        assert_eq!(
            holds.bound(at(900)).pos,
            200,
            "the waiting run still holds from its earliest change"
        );
        // Not asked for yet: nothing releases it.
        assert!(!holds.release(|_| Some(t0 + Duration::from_secs(5)), t0, &mut expired));
        holds.fired(&["stats".to_string()], t0 + Duration::from_secs(10));
        assert!(holds.release(|_| Some(t0 + Duration::from_secs(11)), t0, &mut expired));
        assert_eq!(holds.bound(at(900)).pos, 900);
        assert!(expired.is_empty());
        // A run that never ends stops holding after MAX_HOLD, and is reported.
        holds.asked("lost", &at(500), t0);
        assert!(!holds.release(|_| None, t0 + MAX_HOLD, &mut expired));
        assert!(holds.release(|_| None, t0 + MAX_HOLD + Duration::from_secs(1), &mut expired));
        assert_eq!(expired, ["lost"]);
    }
}
