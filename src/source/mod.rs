//! The producers: what asks for cache work. `schedule` fires warm jobs on their cron schedules; `channel` reads
//! invalidation messages (pub/sub, streams); `binlog` follows row changes; `misses` hears the keys Redis reports
//! missing. Each turns what it reads into triggers or `plan` actions for the executors (`warm`, `invalidate`); none
//! writes cache keys itself.

pub(crate) mod binlog;
pub(crate) mod channel;
pub(crate) mod misses;
pub(crate) mod schedule;
