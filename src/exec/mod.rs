//! The executors: what owns a connection and does the I/O — Redis, MySQL, warm runs, invalidations and refreshes,
//! dead letters. Producers reach them through triggers and actions; they never read configuration files.

pub mod backend;
pub mod cache;
pub mod database;
pub mod dead_letter;
pub mod invalidate;
pub mod refresh;
pub mod reverse;
pub mod warm;
