//! The executors: what owns a connection and does the I/O — Redis, MySQL, warm runs, invalidations and refreshes,
//! dead letters. Producers reach them through triggers and actions; they never read configuration files.

pub(crate) mod backend;
pub mod cache;
pub mod database;
pub(crate) mod dead_letter;
pub(crate) mod invalidate;
pub(crate) mod refresh;
pub(crate) mod reverse;
pub mod warm;
