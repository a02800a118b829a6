//! A failure of either backend — Redis (the cache) or MySQL (the database) — and whether it may pass.

use crate::exec::cache::CacheError;
use crate::exec::database::DatabaseError;

/// Why a step that talks to Redis and MySQL failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

impl BackendError {
    /// Whether trying again later may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            BackendError::Cache(error) => error.is_transient(),
            BackendError::Database(error) => error.is_transient(),
        }
    }
}
