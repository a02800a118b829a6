//! Trigger producers that read from outside: the invalidation channel (pub/sub and streams). Each source parses
//! what it reads with `plan` and hands the actions to the `invalidate` executor; none writes cache keys itself.

pub mod binlog;
pub mod channel;
